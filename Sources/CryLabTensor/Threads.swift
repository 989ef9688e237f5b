import Foundation

/// OpenMP's wait policy for the executables. The thread count itself is `ComputeContext.threads`.
public enum ComputeThreads {
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
