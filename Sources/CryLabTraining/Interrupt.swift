import Dispatch
import Foundation

/// Turns Ctrl-C (SIGINT) into a flag a training loop checks between steps, so it can save a
/// checkpoint and exit cleanly instead of dying mid-write. A second Ctrl-C exits at once.
public final class InterruptFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false
    private var source: DispatchSourceSignal?

    public init() {}

    public var isRaised: Bool { lock.withLock { raised } }

    /// Starts listening for SIGINT.
    public func install() {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [weak self] in
            guard let self else { return }
            let second = self.lock.withLock { () -> Bool in
                defer { self.raised = true }
                return self.raised
            }
            if second { exit(130) }
            FileHandle.standardError.write(Data("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit now)\n".utf8))
        }
        source.resume()
        self.source = source
    }

    /// Stops listening; SIGINT kills the process again.
    public func uninstall() {
        source?.cancel()
        source = nil
        signal(SIGINT, SIG_DFL)
    }
}
