import CMPI
import Foundation
import Synchronization

/// The processes of one MPI job (`mpirun -np N crylab ...`), as a value the command line creates
/// once and passes to whatever works across ranks.
///
/// Every operation is collective unless its documentation says otherwise: every rank must call
/// it, in the same order. Blocking operations are non-blocking MPI calls polled against a
/// deadline, so a rank that stops answering becomes an `MPIError` naming this rank instead of a
/// hang; a rank that dies is noticed by the launcher itself, which then ends every other rank.
/// After an error the job cannot go on: report it and call `abort`.
///
/// MPI runs at `MPI_THREAD_SERIALIZED`: any thread may call, and a lock here keeps two threads
/// from calling MPI at once.
public final class Communicator: Sendable {
    /// This process's rank, 0 ..< size, read from MPI.
    public let rank: Int
    public let size: Int
    /// How many ranks run on this host (MPI's shared-memory split), and this one's place among them.
    public let localSize: Int
    public let localRank: Int
    /// This host's name, as MPI reports it.
    public let host: String
    /// How long a blocking operation waits for the other ranks by default.
    public let timeout: Duration

    /// A private duplicate of MPI_COMM_WORLD, so that no other MPI user's messages can match ours.
    nonisolated(unsafe) let handle: MPI_Comm
    private let serial = Mutex<Void>(())

    /// The environment variables by which a launcher tells a process it is one of a job's ranks:
    /// Open MPI's mpirun (`OMPI_COMM_WORLD_SIZE`), PMIx launchers such as `srun --mpi=pmix`
    /// (`PMIX_RANK`) and PMI-1/2 launchers such as `srun --mpi=pmi2` or MPICH's hydra (`PMI_RANK`,
    /// `PMI_SIZE`, `PMI_FD`). Only their presence is read; rank and size come from MPI.
    public static let launcherVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD"]

    /// Whether `environment` says this process was started by an MPI launcher.
    public static func isLaunched(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        launcherVariables.contains { environment[$0] != nil }
    }

    /// Whether this process has initialised MPI (and not yet finalised it).
    public static var isActive: Bool {
        var initialized: Int32 = 0, finalized: Int32 = 0
        MPI_Initialized(&initialized)
        MPI_Finalized(&finalized)
        return initialized != 0 && finalized == 0
    }

    /// MPI's own version line, e.g. "Open MPI v4.1.4, ..." (needs no initialisation).
    public static var libraryVersion: String {
        var buffer = [CChar](repeating: 0, count: 8192)
        var length: Int32 = 0
        MPI_Get_library_version(&buffer, &length)
        // The length Open MPI reports counts the terminating NUL.
        return String(decoding: buffer.prefix(Int(length)).prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    }

    /// The job's communicator when a launcher started this process; nil, without touching MPI,
    /// when it did not. MPI is finalised when the process exits.
    ///
    /// - Parameter timeout: how long blocking operations wait for the other ranks by default.
    public static func initializeIfLaunched(environment: [String: String] = ProcessInfo.processInfo.environment,
                                            timeout: Duration = .seconds(1800)) throws -> Communicator? {
        guard isLaunched(environment: environment) else { return nil }
        return try Communicator(timeout: timeout)
    }

    private init(timeout: Duration) throws {
        self.timeout = timeout
        guard !Self.isActive else {
            throw MPIError(rank: -1, host: "", operation: "MPI_Init_thread", message: "MPI is already initialised in this process; create one Communicator and pass it on")
        }
        var provided: Int32 = 0
        // Before MPI_Init MPI's errors are fatal; a failure here ends the process with MPI's message.
        let status = MPI_Init_thread(nil, nil, crylab_mpi_thread_serialized(), &provided)
        guard status == crylab_mpi_success() else {
            throw MPIError(rank: -1, host: "", operation: "MPI_Init_thread", message: "failed with code \(status)")
        }
        atexit { Communicator.finalizeAtExit() }
        let world = crylab_mpi_comm_world()
        // From here on a failing call returns its code instead of ending every rank unexplained.
        MPI_Comm_set_errhandler(world, crylab_mpi_errors_return())
        var rank: Int32 = 0, size: Int32 = 0
        MPI_Comm_rank(world, &rank)
        MPI_Comm_size(world, &size)
        var name = [CChar](repeating: 0, count: Int(crylab_mpi_max_processor_name()) + 1)
        var nameLength: Int32 = 0
        MPI_Get_processor_name(&name, &nameLength)
        let host = String(decoding: name.prefix(Int(nameLength)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        (self.rank, self.size, self.host) = (Int(rank), Int(size), host)
        func check(_ code: Int32, _ operation: String) throws {
            if code != crylab_mpi_success() {
                throw MPIError(rank: Int(rank), host: host, operation: operation, message: Self.errorString(code))
            }
        }
        guard provided >= crylab_mpi_thread_serialized() else {
            throw MPIError(rank: Int(rank), host: host, operation: "MPI_Init_thread",
                           message: "this MPI library offers thread level \(provided), CryLab needs MPI_THREAD_SERIALIZED; use Open MPI 4 (Debian's libopenmpi-dev)")
        }
        var duplicate: MPI_Comm?
        try check(MPI_Comm_dup(world, &duplicate), "MPI_Comm_dup")
        handle = duplicate!
        var local: MPI_Comm?
        try check(MPI_Comm_split_type(handle, crylab_mpi_comm_type_shared(), rank, crylab_mpi_info_null(), &local), "MPI_Comm_split_type")
        var localRank: Int32 = 0, localSize: Int32 = 0
        MPI_Comm_rank(local, &localRank)
        MPI_Comm_size(local, &localSize)
        MPI_Comm_free(&local)
        (self.localRank, self.localSize) = (Int(localRank), Int(localSize))
    }

    /// Finalises MPI at exit if it is still active. Ranks that reach here wait for each other,
    /// which is why an error on one rank must `abort` instead of exiting.
    private static func finalizeAtExit() {
        if isActive { MPI_Finalize() }
    }

    /// Ends every rank of the job now (MPI_Abort); the launcher exits with `code`. Not collective.
    public func abort(code: Int32 = 1) -> Never {
        MPI_Abort(handle, code)
        exit(code)
    }

    /// A rank and host prefix for messages: "rank 1 of 2 (host)".
    public var name: String { "rank \(rank) of \(size) (\(host))" }

    // MARK: Calling MPI

    /// Runs one MPI call with the lock held; a failure becomes an `MPIError` naming this rank.
    func call(_ operation: String, _ body: () -> Int32) throws {
        let code = serial.withLock { _ in body() }
        if code != crylab_mpi_success() {
            throw MPIError(rank: rank, host: host, operation: operation, message: Self.errorString(code))
        }
    }

    static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(crylab_mpi_max_error_string()) + 1)
        var length: Int32 = 0
        guard MPI_Error_string(code, &buffer, &length) == crylab_mpi_success() else { return "MPI error code \(code)" }
        return String(decoding: buffer.prefix(Int(length)).prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Waits until every request in `requests` has completed, testing them without pause for
    /// `spinning`, then with short sleeps in between (MPI's blocking calls would spin a core
    /// however long the wait) and, unless the wait has no limit (the
    /// others are known to be busy), warning every minute while stalled.
    /// `pendingDescription` gets the indices of the requests still pending when the wait times
    /// out, and says what they were waiting for (e.g. which ranks).
    func waitAll(_ requests: inout [MPI_Request?], operation: String, limit: WaitLimit,
                 pendingDescription: ([Int]) -> String = { _ in "the other ranks did not take part" }) throws {
        let clock = ContinuousClock()
        let started = clock.now
        let deadline: ContinuousClock.Instant? = switch limit {
        case .standard: started + timeout
        case .after(let duration): started + duration
        case .never: nil
        }
        var nextWarning = started + .seconds(60)
        var pause: UInt32 = 5
        while true {
            let pending = try testAll(&requests, operation: operation)
            if pending.isEmpty { return }
            let now = clock.now
            if let deadline, now >= deadline {
                throw MPIError(rank: rank, host: host, operation: operation,
                               message: "not finished after \(Self.seconds(now - started)): \(pendingDescription(pending)) (a rank stopped, hangs or is far behind)")
            }
            if limit != .never && now >= nextWarning {
                FileHandle.standardError.write(Data("crylab \(name): still waiting in \(operation) after \(Self.seconds(now - started)): \(pendingDescription(pending))\n".utf8))
                nextWarning = now + .seconds(60)
            }
            // For the first `spinning` of a wait, test again at once, yielding the core to any
            // other runnable thread: data between ranks moves one fragment per test on each side,
            // so sleeping between tests throttles it (a 31 MB allreduce on this 2-core host: 1.4 s
            // with sleeps up to 2 ms, 62 ms without). A wait that lasts longer is for a rank busy
            // elsewhere: back off from 5 µs to at most 2 ms between tests.
            if now - started < Self.spinning {
                sched_yield()
            } else {
                usleep(pause)
                pause = min(max(pause * 2, 5), 2000)
            }
        }
    }

    /// How long a wait tests without sleeping.
    static let spinning = Duration.milliseconds(250)

    /// Tests each unfinished request once; returns the indices of those still pending.
    func testAll(_ requests: inout [MPI_Request?], operation: String) throws -> [Int] {
        var pending: [Int] = []
        for index in requests.indices where requests[index] != nil && requests[index] != crylab_mpi_request_null() {
            var done: Int32 = 0
            try call("MPI_Test (\(operation))") { MPI_Test(&requests[index], &done, crylab_mpi_status_ignore()) }
            if done == 0 { pending.append(index) }
        }
        return pending
    }

    static func seconds(_ duration: Duration) -> String {
        String(format: "%.1f s", Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18)
    }
}

/// How long a blocking operation waits for the other ranks.
public enum WaitLimit: Sendable, Equatable {
    /// The communicator's `timeout`.
    case standard
    case after(Duration)
    /// As long as it takes: for waits that are legitimately long (another rank still training).
    /// A rank that dies is still noticed, by the launcher.
    case never
}

/// An MPI failure or a timeout, as seen by one rank.
public struct MPIError: Error, CustomStringConvertible, Sendable {
    /// The rank that saw the error (-1 before MPI knew it).
    public var rank: Int
    public var host: String
    public var operation: String
    public var message: String

    public var description: String {
        rank < 0 ? "\(operation): \(message)" : "rank \(rank) (\(host)): \(operation): \(message)"
    }
}
