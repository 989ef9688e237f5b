import CBLAS
import Foundation
import Synchronization

/// The number of threads every kernel may use: OpenBLAS's pool and oneDNN's OpenMP team.
///
/// Results are bit-identical for the same seed and the same thread count; changing the count
/// can change the order of floating-point reductions and therefore the last bits.
public enum ComputeThreads {
    private static let storage = Mutex<Int>(ProcessInfo.processInfo.activeProcessorCount)

    public static var count: Int { storage.withLock { $0 } }

    /// Sets OpenBLAS's thread count now. The OpenMP count that oneDNN uses is a per-calling-thread
    /// setting in OpenMP, so CryLabOneDNN applies it on the calling thread before each oneDNN call
    /// where it differs.
    public static func set(_ threads: Int) {
        precondition(threads >= 1, "thread count must be at least 1, got \(threads)")
        _ = MemoryPolicy.applied
        storage.withLock { $0 = threads }
        openblas_set_num_threads(Int32(threads))
    }
}

extension ComputeThreads {
    /// Makes an executable run with `OMP_WAIT_POLICY=PASSIVE`, re-executing it once if needed.
    ///
    /// By default OpenMP's idle threads spin. When another process holds one of the cores, every
    /// oneDNN barrier then waits for a scheduler time slice: small-U-Net training measured 7x slower
    /// (31 vs 194-242 samples/s) on this 2-core machine while another build was running. libgomp reads
    /// the policy only at process start, so call this first thing in `main`: if `OMP_WAIT_POLICY` is
    /// unset it sets it and re-executes the program with the same arguments; otherwise it returns.
    public static func relaunchWithPassiveOpenMPWaitIfNeeded() {
        guard ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] == nil else { return }
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // execv only returns on failure; carry on with the default policy.
    }
}
