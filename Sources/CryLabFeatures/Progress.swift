import Foundation

/// Reports progress of long work on standard error: a redrawn bar with count, rate and ETA on a
/// terminal, a plain line every few seconds otherwise (logs, CI).
public final class ProgressReporter: @unchecked Sendable {
    private let label: String
    private let total: Int
    private let interactive: Bool
    private let start = Date()
    private let lock = NSLock()
    private var done = 0
    private var lastPrint = Date.distantPast
    private let quiet: Bool

    public init(label: String, total: Int, quiet: Bool = false) {
        self.label = label
        self.total = total
        self.quiet = quiet
        self.interactive = isatty(STDERR_FILENO) != 0
    }

    /// Records `count` more finished items; `note` is shown after the figures (e.g. a loss).
    public func advance(by count: Int = 1, note: String = "") {
        lock.lock()
        defer { lock.unlock() }
        done += count
        let now = Date()
        let interval = interactive ? 0.1 : 5.0
        guard !quiet, now.timeIntervalSince(lastPrint) >= interval || done == total else { return }
        lastPrint = now
        emit(now: now, note: note)
    }

    /// Prints the final line (on a terminal, ends the redrawn bar).
    public func finish(note: String = "") {
        lock.lock()
        defer { lock.unlock() }
        guard !quiet else { return }
        emit(now: Date(), note: note)
        if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private func emit(now: Date, note: String) {
        let elapsed = max(now.timeIntervalSince(start), 1e-9)
        let rate = Double(done) / elapsed
        let remaining = rate > 0 ? Double(total - done) / rate : 0
        let figures = "\(done)/\(total) \(String(format: "%.1f", rate))/s ETA \(Self.clock(remaining))" + (note.isEmpty ? "" : " \(note)")
        if interactive {
            let width = 24
            let filled = total > 0 ? min(width, width * done / total) : width
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(figures)\u{1B}[K".utf8))
        } else {
            FileHandle.standardError.write(Data("\(label): \(figures)\n".utf8))
        }
    }

    static func clock(_ seconds: Double) -> String {
        let whole = Int(seconds.rounded())
        return whole >= 3600 ? String(format: "%d:%02d:%02d", whole / 3600, whole / 60 % 60, whole % 60)
                             : String(format: "%d:%02d", whole / 60, whole % 60)
    }
}

/// Runs `body(index)` for every index in `0..<count` on `threads` threads; each index runs once.
public func parallelFor(_ count: Int, threads: Int, _ body: @Sendable (Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for index in 0..<count { body(index) }
        return
    }
    let next = AtomicCounter()
    DispatchQueue.concurrentPerform(iterations: workers) { _ in
        while true {
            let index = next.increment()
            if index >= count { break }
            body(index)
        }
    }
}

final class AtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func increment() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value - 1
    }
}
