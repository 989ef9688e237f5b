import Foundation
import Testing

/// Open MPI's launcher, if installed (Debian's openmpi-bin; Scripts/setup.sh installs it).
let mpirunPath: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    .map { "\($0)/mpirun" }.first { FileManager.default.isExecutableFile(atPath: $0) }

/// Root may run mpirun only when told so; two ranks on two cores is oversubscription for Open
/// MPI once it counts its own daemon's needs; no single-copy shared memory, which containers
/// often forbid.
let launcherOptions = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]

/// mpirun's arguments for `crylab arguments` on `ranks` ranks.
func mpirun(_ ranks: Int, _ arguments: [String]) -> [String] {
    launcherOptions + ["-np", "\(ranks)", crylabExecutable.path] + arguments
}

/// Runs mpirun with `arguments`, its output collected in the workspace.
func runMPI(_ arguments: [String], in workspace: Workspace) throws -> CommandRun {
    try StartedProcess(URL(fileURLWithPath: mpirunPath!), arguments, in: workspace.folder).finish()
}

/// `crylab` under `mpirun -np 2`: the collectives, and what a dead or stopped rank does.
@Suite("crylab under mpirun", .serialized,
       .enabled(if: mpirunPath != nil, "mpirun is not installed (Debian's openmpi-bin, which Scripts/setup.sh installs): MPI tests skipped"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: crylabExecutable.path), "the crylab executable is not built"))
struct MPICommandTests {
    @Test("mpi-check: allreduce sums (blocking and non-blocking), broadcast and gather are exact on 2 ranks")
    func collectives() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let run = try runMPI(mpirun(2, ["mpi-check", "--megabytes", "1"]), in: workspace)
        #expect(run.status == 0, "\(run.output)\n\(run.errors)")
        #expect(run.output.contains("rank 0: host") && run.output.contains("rank 1: host"), "\(run.output)")
        #expect(run.output.contains("allreduce sum of 100003 floats (blocking and non-blocking), broadcast, gather: exact on every rank"), "\(run.output)")
        #expect(run.output.contains("MPI works on 2 ranks"))
        let alone = try workspace.run(["mpi-check"])
        #expect(alone.status == 0 && alone.output.contains("not started by an MPI launcher"), "\(alone.output)")
    }

    @Test("a command that cannot use several ranks says so once and stops")
    func notDistributed() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let run = try runMPI(mpirun(2, ["inspect", try workspace.write(labeledStore())]), in: workspace)
        #expect(run.exited && run.status != 0)
        let message = "this command does not run on several MPI ranks (2 were started)"
        #expect(run.errors.components(separatedBy: message).count == 2, "once, from rank 0: \(run.errors)")
    }

    /// Starts `mpi-check --seconds 60`, waits until rank 1's pid is listed, sends it `signal`;
    /// returns the job's result and the seconds from the signal to mpirun's exit.
    func signalRankOne(_ signal: Int32, timeout: Int, in workspace: Workspace) throws -> (CommandRun, Double, pid_t) {
        let job = try StartedProcess(URL(fileURLWithPath: mpirunPath!),
                                     mpirun(2, ["mpi-check", "--megabytes", "0.1", "--seconds", "60", "--timeout", "\(timeout)"]),
                                     in: workspace.folder)
        var rankOne: pid_t?
        let waitUntil = Date().addingTimeInterval(30)
        while Date() < waitUntil && job.process.isRunning {
            let output = job.outputSoFar
            if output.contains("exchanging allreduces") {
                rankOne = output.split(separator: "\n").first { $0.hasPrefix("rank 1: host") }
                    .flatMap { $0.components(separatedBy: "pid ").last?.split(separator: ",").first }.flatMap { pid_t($0) }
                break
            }
            usleep(20_000)
        }
        guard let rankOne else {
            job.process.terminate()
            let run = try job.finish()
            Issue.record("the job never reached its exchange loop with rank 1's pid listed: \(run.output) \(run.errors)")
            return (run, 0, 0)
        }
        usleep(200_000)
        let signalled = Date()
        kill(rankOne, signal)
        let run = try job.finish()
        return (run, Date().timeIntervalSince(signalled), rankOne)
    }

    @Test("a rank killed with SIGKILL makes mpirun stop the job within seconds, naming the rank")
    func killedRank() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let (run, seconds, _) = try signalRankOne(SIGKILL, timeout: 60, in: workspace)
        print(String(format: "killed rank 1: mpirun exited %.2f s later with status %d", seconds, run.status))
        #expect(run.status != 0)
        #expect(seconds < 10, "took \(seconds) s")
        #expect((run.output + run.errors).contains("process rank 1"), "\(run.output)\n\(run.errors)")
    }

    @Test("a rank that stops answering (SIGSTOP) makes rank 0 time out and end the job, naming itself and the operation")
    func stoppedRank() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let (run, seconds, rankOne) = try signalRankOne(SIGSTOP, timeout: 2, in: workspace)
        defer { if rankOne > 0 { kill(rankOne, SIGKILL) } }
        print(String(format: "stopped rank 1: mpirun exited %.2f s later with status %d", seconds, run.status))
        #expect(run.status != 0)
        #expect(seconds < 12, "took \(seconds) s with a 2 s timeout")
        #expect(run.errors.contains("rank 0 of 2") && run.errors.contains("allreduce of 1025 floats: not finished after 2."), "\(run.errors)")
    }
}
