import ArgumentParser
import CryLabMPI
import Foundation

struct MPICheckCommand: DistributedCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpi-check",
        abstract: "Check that MPI works across the ranks of a job: `mpirun -np 2 crylab mpi-check`.",
        discussion: """
        Lists every rank with its host, process id and default thread count, checks the sum of an \
        allreduce (blocking and non-blocking), a broadcast and a gather, and times an allreduce of \
        --megabytes. Run it with the same mpirun options and hostfile as the real job. Without \
        mpirun it says so and exits.
        """)

    @Option(help: "Size of the timed allreduce, in megabytes of fp32.")
    var megabytes: Double = 4

    @Option(help: "Timed allreduces (the median is reported).")
    var repeats: Int = 5

    @Option(help: "Afterwards, keep exchanging small allreduces for this many seconds (to watch what a stopped or killed rank does).")
    var seconds: Double = 0

    @Option(help: "Seconds a rank waits for the others in one operation before it stops the job.")
    var timeout: Double = 60

    func validate() throws {
        if megabytes <= 0 || megabytes > 1024 { throw ValidationError("--megabytes must be in (0, 1024], got \(megabytes)") }
        if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
        if timeout <= 0 { throw ValidationError("--timeout must be positive") }
    }

    func run(communicator: Communicator?) throws {
        guard let communicator else {
            say("not started by an MPI launcher: one process, MPI not initialised (\(Communicator.libraryVersion)); try `mpirun -np 2 crylab mpi-check`")
            return
        }
        let limit = WaitLimit.after(.milliseconds(Int64(timeout * 1000)))
        let root = communicator.rank == 0
        let me = "\(communicator.rank)\t\(communicator.host)\t\(getpid())\t\(coresAvailableToThisProcess())\t\(communicator.defaultThreads)"
        if let lines = try communicator.gather(Array(me.utf8), limit: limit) {
            say("\(Communicator.libraryVersion); \(communicator.size) ranks")
            for line in lines {
                let field = String(decoding: line, as: UTF8.self).split(separator: "\t").map(String.init)
                say("rank \(field[0]): host \(field[1]), pid \(field[2]), may run on \(field[3]) of its host's cores, engine threads by default: \(field[4])")
            }
        }

        // Sums of small integers are exact in fp32: every element must come out exactly.
        let count = 100_003, size = communicator.size
        func pattern(_ i: Int) -> Float { Float(i % 13 + 1) }
        var values = (0..<count).map { Float(communicator.rank + 1) * pattern($0) }
        try communicator.allreduceSum(&values, limit: limit)
        let expected = Float(size * (size + 1) / 2)
        var wrong = values.indices.first { values[$0] != expected * pattern($0) }
        let buffer = FloatBuffer(count: count)
        for i in 0..<count { buffer.values[i] = Float(communicator.rank + 1) * pattern(i) }
        let pending = try communicator.startAllreduceSum(buffer)
        try pending.wait(limit: limit)
        wrong = wrong ?? (0..<count).first { buffer.values[$0] != expected * pattern($0) }
        let sent = Array("broadcast from rank 0 to \(size) ranks".utf8)
        let received = try communicator.broadcast(root ? sent : [], limit: limit)
        let verdict = (wrong.map { "allreduce element \($0) is \(values[$0]), expected \(expected * pattern($0))" } ?? "")
            + (received == sent ? "" : " broadcast received \(received.count) bytes, expected \(sent.count)")
        // Gathers of different lengths per rank, empty ones among them, one after the other.
        func piece(_ round: Int, _ rank: Int) -> [UInt8] {
            (rank + round) % 2 == 1 ? [] : [UInt8](repeating: UInt8(truncatingIfNeeded: rank + round), count: 1000 * rank + 7)
        }
        var gatherProblems: [String] = []
        for round in 0..<3 {
            if let pieces = try communicator.gather(piece(round, communicator.rank), limit: limit) {
                gatherProblems += pieces.indices.filter { pieces[$0] != piece(round, $0) }
                    .map { "gather \(round + 1) brought \(pieces[$0].count) bytes from rank \($0), expected \(piece(round, $0).count)" }
            }
        }
        // Each rank's own verdict, of its own length, gathered on rank 0.
        if let verdicts = try communicator.gather(Array(verdict.utf8), limit: limit) {
            let failures = verdicts.enumerated().filter { !$0.element.isEmpty }
                .map { "rank \($0.offset): " + String(decoding: $0.element, as: UTF8.self) } + gatherProblems
            guard failures.isEmpty else { throw ValidationError("MPI gave wrong results:\n" + failures.joined(separator: "\n")) }
            say("allreduce sum of \(count) floats (blocking and non-blocking), broadcast, gather: exact on every rank")
        }

        let floats = Int(megabytes * 1_048_576 / 4)
        var timed = [Float](repeating: 1, count: floats)
        var times: [Double] = []
        for _ in 0..<repeats {
            try communicator.barrier(limit: limit)
            let started = Date()
            try communicator.allreduceSum(&timed, limit: limit)
            times.append(Date().timeIntervalSince(started))
        }
        if root {
            let median = times.sorted()[times.count / 2]
            // A ring allreduce moves 2 (N - 1) / N of the buffer through every rank's link.
            let busBytes = 2 * Double(size - 1) / Double(size) * Double(floats * 4)
            say(String(format: "allreduce of %.1f MB: median %.2f ms over %d, bus bandwidth %.2f GB/s",
                       Double(floats * 4) / 1e6, median * 1000, repeats, busBytes / median / 1e9))
        }

        if seconds > 0 {
            // Rank 0's clock decides for everyone, through the last element of each sum.
            if root { say("exchanging allreduces for \(seconds) s") }
            let started = Date()
            var exchanges = 0
            while true {
                var message = [Float](repeating: 1, count: 1025)
                message[1024] = root && Date().timeIntervalSince(started) < seconds ? 1 : 0
                try communicator.allreduceSum(&message, limit: limit)
                exchanges += 1
                if message[1024] == 0 { break }
                usleep(10_000)
            }
            if root { say("\(exchanges) allreduces exchanged") }
        }
        try communicator.barrier(limit: limit)
        if root { say("MPI works on \(size) ranks") }
    }

    /// Writes a line to standard output at once: mpirun forwards it while the job runs.
    private func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
