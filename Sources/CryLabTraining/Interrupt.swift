import Dispatch
import Foundation

/// Turns Ctrl-C (SIGINT), or other signals asking a job to stop, into a flag a training loop
/// checks between steps, so it can save a checkpoint and exit cleanly instead of dying
/// mid-write. A second signal exits at once.
public final class InterruptFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false
    private var sources: [DispatchSourceSignal] = []
    private var signals: [Int32] = []

    public init() {}

    public var isRaised: Bool { lock.withLock { raised } }

    /// Raises the flag (for a decision taken elsewhere, such as by every rank of a job).
    public func raise() { lock.withLock { raised = true } }

    /// Starts listening for `signals` (SIGINT by default); `announces` prints what happens next
    /// on the first one.
    public func install(signals: [Int32] = [SIGINT], announces: Bool = true) {
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in
                guard let self else { return }
                let second = self.lock.withLock { () -> Bool in
                    defer { self.raised = true }
                    return self.raised
                }
                if second { exit(128 + number) }
                if announces {
                    let name = number == SIGINT ? "Ctrl-C" : "the signal"
                    FileHandle.standardError.write(Data("\ninterrupted: saving a checkpoint after this step (\(name) again to quit now)\n".utf8))
                }
            }
            source.resume()
            sources.append(source)
        }
        self.signals = signals
    }

    /// Stops listening; the signals act as by default again.
    public func uninstall() {
        for source in sources { source.cancel() }
        sources = []
        for number in signals { signal(number, SIG_DFL) }
        signals = []
    }
}
