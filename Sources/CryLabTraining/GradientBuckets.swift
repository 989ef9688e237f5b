import CryLabMPI
import CryLabNN
import Dispatch
import Foundation
import Synchronization

/// Sums a model's weight gradients over the ranks of a data-parallel run, in buckets of about
/// `bucketBytes`, each started as soon as the backward pass has finished its layers, so that the
/// communication of the late layers' gradients overlaps the backward pass of the early ones.
///
/// - Buckets hold the trainable weights in backward order (the model's last layer first), whole
///   layers at a time: a bucket is full once it reaches `bucketBytes`, and a layer larger than
///   that is a bucket of its own.
/// - Every rank starts the buckets in the same order (MPI requires collectives in one order on
///   all ranks): bucket k starts once its layers are done *and* bucket k - 1 has started. A rank
///   whose share of a batch is empty runs no backward pass and starts them all at `startRemaining`.
/// - Each bucket is one in-place fp32 `MPI_Iallreduce`; for two ranks the sum of two numbers is
///   the same however the buffer is cut, so buckets give the bits of one flat allreduce.
///
/// - MPI moves a started allreduce's data only while the rank is inside an MPI call. After each
///   layer the pending buckets are tested once, and while any is pending a `ProgressThread`
///   runs MPI's progress engine every `progressInterval`.
///
/// A step is `beginStep`, the backward pass (which calls `layerFinished`), `startRemaining`, then
/// `finish`, which waits and copies the sums back into the gradients. With `overlaps` false the
/// buckets all start at `startRemaining`, after the backward pass.
final class GradientBuckets {
    struct Bucket {
        /// In backward order; their gradients lie one after the other in `buffer`.
        var parameters: [Parameter]
        var layers: Int
        var buffer: FloatBuffer
        var layersLeft = 0
        var pending: PendingOperation?

        /// Calls `body` with each parameter's gradient and its place in `buffer`.
        func forEachGradient(_ body: (UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void) {
            var offset = 0
            for parameter in parameters {
                parameter.withGradientValues { gradient in
                    body(gradient, UnsafeMutableBufferPointer(rebasing: buffer.values[offset..<(offset + gradient.count)]))
                    offset += gradient.count
                }
            }
        }
    }

    let communicator: Communicator
    let bucketBytes: Int
    let overlaps: Bool
    /// While buckets are pending during the backward pass, a thread runs MPI's progress engine
    /// every `progressInterval`: without it their data moves only when the backward pass calls
    /// into MPI, once per layer.
    let progressInterval: Duration?
    private var progressThread: ProgressThread?
    private(set) var buckets: [Bucket] = []
    /// The parameters the buckets were made for, in `Model.trainableParameters` order.
    private var madeFor: [ObjectIdentifier] = []
    private var bucketOfLayer: [ObjectIdentifier: Int] = [:]
    private var nextToStart = 0

    /// Steps summed, for the run's summary.
    private(set) var steps = 0
    /// Time in `startRemaining` and `finish`: the communication (and copying) the backward pass
    /// did not hide.
    private(set) var exposedSeconds = 0.0
    /// Buckets that had already finished when `finish` began.
    private(set) var bucketsDoneBeforeFinish = 0

    init(communicator: Communicator, bucketBytes: Int, overlaps: Bool, progressInterval: Duration? = .milliseconds(1)) {
        self.communicator = communicator
        self.bucketBytes = max(bucketBytes, 4)
        self.overlaps = overlaps
        self.progressInterval = progressInterval
    }

    /// Prepares a step of `model`: (re)makes the buckets if its trainable weights changed.
    func beginStep(_ model: Model) {
        let parameters = model.trainableParameters
        if parameters.map(ObjectIdentifier.init) != madeFor { makeBuckets(model) }
        for index in buckets.indices {
            buckets[index].layersLeft = buckets[index].layers
            buckets[index].pending = nil
        }
        nextToStart = 0
    }

    private func makeBuckets(_ model: Model) {
        buckets = []
        bucketOfLayer = [:]
        var current: (parameters: [Parameter], layers: Int, count: Int) = ([], 0, 0)
        func close() {
            guard !current.parameters.isEmpty else { return }
            buckets.append(Bucket(parameters: current.parameters, layers: current.layers, buffer: FloatBuffer(count: current.count)))
            current = ([], 0, 0)
        }
        for layer in model.layers.reversed() where layer.trainable {
            let weights = layer.weights.filter(\.isTrainable)
            guard !weights.isEmpty else { continue }
            bucketOfLayer[ObjectIdentifier(layer)] = buckets.count
            current.parameters += weights
            current.layers += 1
            current.count += weights.reduce(0) { $0 + $1.value.count }
            if current.count * MemoryLayout<Float>.size >= bucketBytes { close() }
        }
        close()
        madeFor = model.trainableParameters.map(ObjectIdentifier.init)
    }

    /// The backward pass is done with `layer`: starts the buckets that are complete, in order,
    /// and lets MPI progress the pending ones.
    func layerFinished(_ layer: any Layer) throws {
        guard overlaps else { return }
        if let index = bucketOfLayer[ObjectIdentifier(layer)] { buckets[index].layersLeft -= 1 }
        while nextToStart < buckets.count && buckets[nextToStart].layersLeft == 0 { try start(nextToStart) }
        for index in 0..<nextToStart { _ = try buckets[index].pending?.isFinished() }
    }

    /// The backward pass is over: starts every bucket not started yet.
    func startRemaining() throws {
        let started = DispatchTime.now().uptimeNanoseconds
        defer { exposedSeconds += Self.seconds(since: started) }
        while nextToStart < buckets.count { try start(nextToStart) }
    }

    private static func seconds(since start: UInt64) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    private func start(_ index: Int) throws {
        buckets[index].forEachGradient { gradient, place in _ = place.initialize(from: gradient) }
        buckets[index].pending = try communicator.startAllreduceSum(buckets[index].buffer)
        nextToStart = index + 1
        if progressThread == nil, overlaps, let progressInterval {
            progressThread = ProgressThread(communicator: communicator, interval: progressInterval)
        }
    }

    /// Waits for every bucket and copies the sums into the gradients of `parameters` (the
    /// model's trainable weights, which the buckets hold).
    func finish(_ parameters: [Parameter]) throws {
        precondition(parameters.map(ObjectIdentifier.init) == madeFor, "the trainable weights changed within a step")
        if nextToStart < buckets.count { try startRemaining() }
        let started = DispatchTime.now().uptimeNanoseconds
        defer { exposedSeconds += Self.seconds(since: started) }
        progressThread?.stop()
        progressThread = nil
        for index in buckets.indices {
            guard let pending = buckets[index].pending else { continue }
            if try pending.isFinished() { bucketsDoneBeforeFinish += 1 }
            try pending.wait()
            buckets[index].pending = nil
            buckets[index].forEachGradient { gradient, place in _ = gradient.initialize(from: place) }
        }
        steps += 1
    }

    /// What the run's summary reports.
    var summary: AllreduceSummary {
        AllreduceSummary(ranks: communicator.size, buckets: buckets.count, bucketBytes: bucketBytes, overlapsBackward: overlaps,
                         gradientBytes: buckets.reduce(0) { $0 + $1.buffer.values.count } * MemoryLayout<Float>.size,
                         steps: steps, exposedSecondsPerStep: steps == 0 ? 0 : exposedSeconds / Double(steps),
                         bucketsDoneBeforeWaiting: steps == 0 ? 0 : Double(bucketsDoneBeforeFinish) / Double(steps))
    }
}

/// How the gradients of a data-parallel pretraining run were summed over the ranks.
public struct AllreduceSummary: Codable, Sendable, Equatable {
    public var ranks: Int
    public var buckets: Int
    public var bucketBytes: Int
    public var overlapsBackward: Bool
    /// fp32 gradient bytes summed per step.
    public var gradientBytes: Int
    public var steps: Int
    /// Mean seconds per step spent starting the buckets left after the backward pass and waiting
    /// for the sums: the communication the backward pass did not hide.
    public var exposedSecondsPerStep: Double
    /// Mean buckets per step whose allreduce had finished before that wait began.
    public var bucketsDoneBeforeWaiting: Double
}

/// Runs `Communicator.progress` every `interval` on a thread of its own until stopped.
final class ProgressThread: @unchecked Sendable {
    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)

    init(communicator: Communicator, interval: Duration) {
        let (seconds, attoseconds) = interval.components
        let microseconds = UInt32(clamping: max(seconds * 1_000_000 + attoseconds / 1_000_000_000_000, 1))
        let thread = Thread { [self] in
            while running.load(ordering: .relaxed) {
                // An error here shows again in the main thread's wait, which reports it.
                try? communicator.progress()
                usleep(microseconds)
            }
            finished.signal()
        }
        thread.start()
    }

    /// Stops the thread and returns once it has made its last MPI call.
    func stop() {
        running.store(false, ordering: .relaxed)
        finished.wait()
    }
}
