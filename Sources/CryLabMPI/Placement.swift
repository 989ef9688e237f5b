import Foundation

extension Communicator {
    /// The engine threads a rank uses unless told otherwise: the host's cores shared out among the
    /// ranks on it, and never more than the cores the launcher lets this process run on (Open
    /// MPI's mpirun binds each of up to 2 ranks to one core unless given `--bind-to none`).
    public var defaultThreads: Int {
        max(1, min(coresAvailableToThisProcess(), ProcessInfo.processInfo.activeProcessorCount / localSize))
    }
}

/// How many cores this process may run on (its CPU affinity, which a launcher's binding narrows,
/// from Linux's `Cpus_allowed_list`, e.g. "0-3,8"); Foundation's processor counts ignore it.
public func coresAvailableToThisProcess() -> Int {
    let all = ProcessInfo.processInfo.activeProcessorCount
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return all }
    var cores = 0
    for range in line.dropFirst("Cpus_allowed_list:".count).split(separator: ",") {
        let ends = range.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard let first = ends.first else { return all }
        cores += (ends.last ?? first) - first + 1
    }
    return cores > 0 ? cores : all
}
