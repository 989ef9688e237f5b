import Foundation

/// A dictionary behind a lock: values are made once per key and then shared.
///
/// `make` runs while the lock is held, so two threads asking for the same key never build
/// it twice — and for FFTW plans, whose planner is not thread-safe, no two plans are ever
/// made at the same time.
final class LockedCache<Key: Hashable & Sendable, Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Key: Value] = [:]

    func value(for key: Key, make: () throws -> Value) rethrows -> Value {
        lock.lock()
        defer { lock.unlock() }
        if let value = storage[key] { return value }
        let value = try make()
        storage[key] = value
        return value
    }
}
