import CMPI
import Foundation

extension Communicator {
    /// Returns when every rank has called it.
    public func barrier(limit: WaitLimit = .standard) throws {
        var requests: [MPI_Request?] = [nil]
        try call("MPI_Ibarrier") { MPI_Ibarrier(handle, &requests[0]) }
        try waitAll(&requests, operation: "barrier", limit: limit)
    }

    /// Replaces `values` on every rank by their sum over the ranks (fp32, in place). The order of
    /// the additions is MPI's: it can differ from a sum in rank order in the last bits. Open MPI's
    /// algorithms give every rank the same bits (the MPI standard only advises it).
    public func allreduceSum(_ values: inout [Float], limit: WaitLimit = .standard) throws {
        try values.withUnsafeMutableBufferPointer { buffer in
            var requests = try startAllreduce(buffer)
            try waitAll(&requests, operation: "allreduce of \(buffer.count) floats", limit: limit)
        }
    }

    /// Replaces `values` on every rank by their sum over the ranks (fp64, in place), with the
    /// same caveat on the order of the additions.
    public func allreduceSum(_ values: inout [Double], limit: WaitLimit = .standard) throws {
        guard !values.isEmpty else { return }
        try checkCount(values.count, "allreduce")
        try values.withUnsafeMutableBufferPointer { buffer in
            var requests: [MPI_Request?] = [nil]
            try call("MPI_Iallreduce") {
                MPI_Iallreduce(crylab_mpi_in_place(), buffer.baseAddress!, Int32(buffer.count), crylab_mpi_double(),
                               crylab_mpi_sum(), handle, &requests[0])
            }
            try waitAll(&requests, operation: "allreduce of \(buffer.count) doubles", limit: limit)
        }
    }

    /// Starts summing `buffer` over the ranks in place and returns at once; the buffer must not be
    /// touched until the returned operation has finished. MPI makes progress while this rank tests
    /// the operation (`isFinished`) or waits for it.
    public func startAllreduceSum(_ buffer: FloatBuffer) throws -> PendingOperation {
        let requests = try startAllreduce(buffer.values)
        return PendingOperation(communicator: self, requests: requests,
                                operation: "allreduce of \(buffer.values.count) floats", keepAlive: buffer)
    }

    /// Chunks of at most Int32.max values, each its own MPI_Iallreduce.
    private func startAllreduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> [MPI_Request?] {
        var requests: [MPI_Request?] = []
        var start = 0
        while start < buffer.count {
            let count = min(buffer.count - start, Int(Int32.max))
            var request: MPI_Request?
            try call("MPI_Iallreduce") {
                MPI_Iallreduce(crylab_mpi_in_place(), buffer.baseAddress! + start, Int32(count), crylab_mpi_float(),
                               crylab_mpi_sum(), handle, &request)
            }
            requests.append(request)
            start += count
        }
        return requests
    }

    /// Lets MPI move the data of this rank's started operations, without completing any (one
    /// probe, which runs MPI's progress engine). Safe from another thread: every MPI call holds
    /// the communicator's lock.
    public func progress() throws {
        var flag: Int32 = 0
        try call("MPI_Iprobe") { MPI_Iprobe(crylab_mpi_any_source(), crylab_mpi_any_tag(), handle, &flag, crylab_mpi_status_ignore()) }
    }

    /// `bytes` from rank `root` on every rank (the others' arguments are ignored).
    public func broadcast(_ bytes: [UInt8], from root: Int = 0, limit: WaitLimit = .standard) throws -> [UInt8] {
        var length = [UInt64(bytes.count)]
        var requests: [MPI_Request?] = [nil]
        try call("MPI_Ibcast") { MPI_Ibcast(&length, 1, crylab_mpi_uint64(), Int32(root), handle, &requests[0]) }
        try waitAll(&requests, operation: "broadcast from rank \(root)", limit: limit)
        var payload = rank == root ? bytes : [UInt8](repeating: 0, count: Int(length[0]))
        guard !payload.isEmpty else { return [] }
        try checkCount(payload.count, "broadcast")
        requests = [nil]
        try payload.withUnsafeMutableBytes { buffer in
            try call("MPI_Ibcast") { MPI_Ibcast(buffer.baseAddress, Int32(buffer.count), crylab_mpi_byte(), Int32(root), handle, &requests[0]) }
            try waitAll(&requests, operation: "broadcast of \(buffer.count) bytes from rank \(root)", limit: limit)
        }
        return payload
    }

    /// Every rank's `bytes` (each its own length) on rank `root`, indexed by rank; nil on the
    /// other ranks. Point-to-point underneath, so that a timeout can name the ranks not heard from.
    public func gather(_ bytes: [UInt8], to root: Int = 0, limit: WaitLimit = .standard) throws -> [[UInt8]]? {
        try checkCount(bytes.count, "gather")
        let (lengthTag, payloadTag): (Int32, Int32) = (1, 2)
        guard rank == root else {
            var length = [UInt64(bytes.count)]
            var payload = bytes
            var requests: [MPI_Request?] = [nil, nil]
            try length.withUnsafeMutableBytes { lengthBuffer in
                try payload.withUnsafeMutableBytes { payloadBuffer in
                    try call("MPI_Isend") { MPI_Isend(lengthBuffer.baseAddress, 1, crylab_mpi_uint64(), Int32(root), lengthTag, handle, &requests[0]) }
                    // No message for no bytes: rank 0 posts no receive for it, and an unreceived
                    // empty message would be matched by the next gather's receive.
                    if payloadBuffer.count > 0 {
                        try call("MPI_Isend") {
                            MPI_Isend(payloadBuffer.baseAddress, Int32(payloadBuffer.count), crylab_mpi_byte(), Int32(root), payloadTag, handle, &requests[1])
                        }
                    }
                    try waitAll(&requests, operation: "gather to rank \(root)", limit: limit) { _ in "rank \(root) did not receive" }
                }
            }
            return nil
        }
        var lengths = [UInt64](repeating: 0, count: size)
        var requests = [MPI_Request?](repeating: nil, count: size)
        try lengths.withUnsafeMutableBufferPointer { buffer in
            for source in 0..<size where source != root {
                try call("MPI_Irecv") {
                    MPI_Irecv(buffer.baseAddress! + source, 1, crylab_mpi_uint64(), Int32(source), lengthTag, handle, &requests[source])
                }
            }
            try waitAll(&requests, operation: "gather to rank \(root)", limit: limit) { "no answer from rank " + $0.map(String.init).joined(separator: ", ") }
        }
        // One buffer for every rank's bytes, so that all receives run at once.
        var offsets = [Int](repeating: 0, count: size + 1)
        for source in 0..<size { offsets[source + 1] = offsets[source] + (source == root ? 0 : Int(lengths[source])) }
        var received = [UInt8](repeating: 0, count: offsets[size])
        requests = [MPI_Request?](repeating: nil, count: size)
        try received.withUnsafeMutableBytes { buffer in
            for source in 0..<size where source != root && lengths[source] > 0 {
                try call("MPI_Irecv") {
                    MPI_Irecv(buffer.baseAddress! + offsets[source], Int32(lengths[source]), crylab_mpi_byte(), Int32(source), payloadTag, handle, &requests[source])
                }
            }
            try waitAll(&requests, operation: "gather to rank \(root)", limit: limit) { "no data from rank " + $0.map(String.init).joined(separator: ", ") }
        }
        return (0..<size).map { source in
            source == root ? bytes : Array(received[offsets[source]..<(offsets[source] + Int(lengths[source]))])
        }
    }

    private func checkCount(_ count: Int, _ operation: String) throws {
        guard count <= Int(Int32.max) else {
            throw MPIError(rank: rank, host: host, operation: operation, message: "\(count) bytes is more than one MPI message holds (2 GiB); send it in parts")
        }
    }

    /// Runs `body` on every rank, then tells every rank whether all of them succeeded: each
    /// returns `body`'s value, or every rank throws the same `RankFailures`, naming each rank
    /// that failed and its error. For checks that must stop the whole job cleanly before work
    /// starts (a store one host cannot read).
    public func onEveryRank<T>(_ body: () throws -> T) throws -> T {
        var value: T?
        var report: [UInt8] = []
        do { value = try body() } catch {
            report = Array(try JSONEncoder().encode(RankFailures.Failure(rank: rank, host: host, message: "\(error)")))
        }
        let reports = try gather(report)
        var verdict: [UInt8] = []
        if let reports {
            let failures = try reports.filter { !$0.isEmpty }.map { try JSONDecoder().decode(RankFailures.Failure.self, from: Data($0)) }
            verdict = failures.isEmpty ? [] : Array(try JSONEncoder().encode(failures))
        }
        verdict = try broadcast(verdict)
        if !verdict.isEmpty {
            throw RankFailures(failures: try JSONDecoder().decode([RankFailures.Failure].self, from: Data(verdict)))
        }
        return value!
    }
}

/// Errors that some ranks hit in `onEveryRank`; every rank throws the same one.
public struct RankFailures: Error, CustomStringConvertible, Sendable {
    public struct Failure: Codable, Sendable {
        public var rank: Int
        public var host: String
        public var message: String
    }
    public var failures: [Failure]

    public var description: String {
        failures.map { "rank \($0.rank) (\($0.host)): \($0.message)" }.joined(separator: "\n")
    }
}

/// Floats at a fixed address, for operations that run while other work goes on.
public final class FloatBuffer: @unchecked Sendable {
    public let values: UnsafeMutableBufferPointer<Float>

    public init(count: Int) {
        values = .allocate(capacity: count)
        values.initialize(repeating: 0)
    }

    deinit { values.deallocate() }
}

/// A started non-blocking operation (`Communicator.startAllreduceSum`).
public final class PendingOperation {
    let communicator: Communicator
    var requests: [MPI_Request?]
    let operation: String
    /// What MPI reads or writes until the operation finishes.
    var keepAlive: AnyObject?

    init(communicator: Communicator, requests: [MPI_Request?], operation: String, keepAlive: AnyObject) {
        (self.communicator, self.requests, self.operation, self.keepAlive) = (communicator, requests, operation, keepAlive)
    }

    /// Whether it has finished (one test, no waiting); lets MPI make progress.
    public func isFinished() throws -> Bool {
        try communicator.testAll(&requests, operation: operation).isEmpty
    }

    /// Waits until the operation has finished.
    public func wait(limit: WaitLimit = .standard) throws {
        try communicator.waitAll(&requests, operation: operation, limit: limit)
        keepAlive = nil
    }

    deinit {
        // Dropped unfinished (after an error): MPI may still write into the buffer, so it is
        // never freed. The job is about to abort anyway.
        if requests.contains(where: { $0 != nil && $0 != crylab_mpi_request_null() }), let keepAlive {
            _ = Unmanaged.passRetained(keepAlive)
        }
    }
}

/// `body` in this process when there is no communicator; with one, `Communicator.onEveryRank`.
public func onEveryRank<T>(_ communicator: Communicator?, _ body: () throws -> T) throws -> T {
    guard let communicator else { return try body() }
    return try communicator.onEveryRank(body)
}
