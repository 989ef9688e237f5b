/// Keras's `BatchNormalization` over the last (channel / feature) axis, for 2-D feature maps
/// [batch, height, width, channels] and 1-D features [batch, features] alike: the input is viewed as
/// rows x channels.
///
/// Training mode: normalise with the batch mean and biased batch variance, then
///     moving_mean     = moving_mean * momentum + mean * (1 - momentum)
///     moving_variance = moving_variance * momentum + variance * (1 - momentum)
/// Inference mode: normalise with the moving statistics.
/// A frozen (`trainable == false`) layer runs in inference mode even in training mode, as Keras does,
/// unless `frozenUsesBatchStatistics` is set.
///
/// Weights (Keras order): gamma [channels], beta [channels], moving_mean [channels], moving_variance [channels].
///
/// Inside a `Model` a 2-D input may come blocked16 (between Winograd convolutions); the output
/// and the input gradient then are blocked16 too.
public final class BatchNormalization: BlockedLayoutLayer {
    public let name: String
    public let kerasClass = "BatchNormalization"
    public let channels: Int
    public let momentum: Float
    public let epsilon: Float
    public let gamma: Parameter
    public let beta: Parameter
    public let movingMean: Parameter
    public let movingVariance: Parameter
    public var trainable = true
    public var frozenUsesBatchStatistics = false
    /// While set, a training forward makes the moving statistics the plain average of the batch
    /// statistics seen since it was set to 0 (this counts them), instead of the momentum update:
    /// see `Model.recalibrateBatchNormalization`.
    public var averagedBatches: Int?
    /// The layout the last forward wrote its output in: its input's.
    public private(set) var lastOutputLayout = ActivationLayout.nhwc
    /// When set (data-parallel training with synchronised statistics), batch statistics are
    /// those of the whole batch over every process: the per-channel sums of the forward pass and
    /// of the backward pass are summed over the processes, so each process normalises as one
    /// process holding the whole batch would. The weight gradients stay this process's share
    /// (the gradients are summed over the processes afterwards). Every process must then run
    /// each such layer's forward and backward passes in the same order, or
    /// `Model.joinTrainingStepWithoutRows` when it has no rows.
    public var synchronization: (any CrossProcessSum)?

    private struct Cache {
        var normalized: Tensor        // xhat: same shape as x
        var inverseDeviation: [Float] // 1 / sqrt(var + eps) per channel
        var usedBatchStatistics: Bool
        /// Rows the batch statistics were taken over (on every process, when synchronised).
        var rows: Double
    }
    private var cache: Cache?

    public init(name: String = "batch_normalization", channels: Int, momentum: Float = 0.99, epsilon: Float = 1e-3) {
        self.name = name
        self.channels = channels
        self.momentum = momentum
        self.epsilon = epsilon
        gamma = Parameter(name: "gamma", value: Tensor(shape: [channels], repeating: 1))
        beta = Parameter(name: "beta", value: Tensor(zeros: [channels]))
        movingMean = Parameter(name: "moving_mean", value: Tensor(zeros: [channels]), isTrainable: false)
        movingVariance = Parameter(name: "moving_variance", value: Tensor(shape: [channels], repeating: 1), isTrainable: false)
    }

    public var weights: [Parameter] { [gamma, beta, movingMean, movingVariance] }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        guard inputShapes.count == 1, inputShapes[0].last == channels else {
            throw ShapeError(layer: name, message: "expected one input [..., \(channels)], got \(inputShapes)")
        }
        return inputShapes[0]
    }

    /// A blocked input gives a blocked output.
    func takesBlockedInput(_ shapes: [[Int]], outputMayBeBlocked: Bool, training: Bool, context: ComputeContext) -> Bool {
        outputMayBeBlocked && shapes.count == 1 && shapes[0].count == 4 && channels % 16 == 0
    }

    private func channelRows(_ x: Tensor, threads: Int) -> ChannelRows {
        x.layout == .blocked16 ? ChannelRows(blocked: x.shape, threads: threads)
            : ChannelRows(rows: x.count / channels, channels: channels, threads: threads)
    }

    /// Whether this call normalises with batch statistics.
    public func usesBatchStatistics(training: Bool) -> Bool {
        training && (trainable || frozenUsesBatchStatistics)
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        let x = inputs[0]
        precondition(x.shape.last == channels, "\(name): expected input [..., \(channels)], got \(x.shape)")
        let rows = channelRows(x, threads: context.threads)
        let batchStatistics = usesBatchStatistics(training: training)
        let mean: [Float], variance: [Float]
        var statisticsRows = Double(rows.logicalRows)
        if batchStatistics {
            let sums = x.values.withUnsafeBufferPointer { batchNormSums($0.baseAddress!, rows) }
            (mean, variance, statisticsRows) = takeBatchStatistics(sums, rows: statisticsRows)
        } else {
            (mean, variance) = (movingMean.value.values, movingVariance.value.values)
        }
        let inverse = variance.map { 1 / ($0 + epsilon).squareRoot() }
        var normalized = Tensor(shape: x.shape) { _ in }
        normalized.layout = x.layout
        var y = Tensor(shape: x.shape) { out in
            x.values.withUnsafeBufferPointer { v in
                normalized.values.withUnsafeMutableBufferPointer { xhat in
                    batchNormApply(v.baseAddress!, rows, mean: mean, inverseDeviation: inverse,
                                   gamma: gamma.value.values, beta: beta.value.values,
                                   normalized: xhat.baseAddress!, output: out.baseAddress!)
                }
            }
        }
        y.layout = x.layout
        lastOutputLayout = x.layout
        if training {
            cache = Cache(normalized: normalized, inverseDeviation: inverse, usedBatchStatistics: batchStatistics, rows: statisticsRows)
        }
        return y
    }

    /// Mean and variance from this process's per-channel sums over `rows` rows (with
    /// `synchronization`, from every process's), and the moving statistics' update with them.
    private func takeBatchStatistics(_ localSums: [Double], rows: Double) -> (mean: [Float], variance: [Float], rows: Double) {
        var sums = localSums
        var count = rows
        if let synchronization {
            sums.append(count)
            synchronization.sumOverProcesses(&sums)
            count = sums.removeLast()
        }
        let statistics = batchNormStatistics(sums: sums, count: count)
        let (mean, variance) = (statistics.mean.map { Float($0) }, statistics.variance.map { Float($0) })
        // Keras's momentum update; while recalibrating, a running average over the batches.
        var keep = momentum
        if let seen = averagedBatches {
            keep = Float(seen) / Float(seen + 1)
            averagedBatches = seen + 1
        }
        movingMean.updateValues { m in
            for c in 0..<channels { m[c] = m[c] * keep + mean[c] * (1 - keep) }
        }
        movingVariance.updateValues { v in
            for c in 0..<channels { v[c] = v[c] * keep + variance[c] * (1 - keep) }
        }
        return (mean, variance, count)
    }

    /// A training forward pass with no rows of this process's own, for synchronised statistics:
    /// adds zeros to the other processes' sums and updates the moving statistics as they do.
    func joinForwardWithoutRows() {
        _ = takeBatchStatistics([Double](repeating: 0, count: 2 * channels), rows: 0)
    }

    /// The backward pass's counterpart of `joinForwardWithoutRows`.
    func joinBackwardWithoutRows() {
        var sums = [Double](repeating: 0, count: 2 * channels)
        synchronization?.sumOverProcesses(&sums)
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let cache else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        precondition(outputGradient.layout == cache.normalized.layout, "\(name): gradient in \(outputGradient.layout), input in \(cache.normalized.layout)")
        let rows = channelRows(outputGradient, threads: context.threads)
        // Σ dy and Σ dy * xhat per channel.
        let (sumGradient, sumGradientNormalized) = outputGradient.values.withUnsafeBufferPointer { dy in
            cache.normalized.values.withUnsafeBufferPointer { xhat in
                batchNormGradientSums(dy.baseAddress!, normalized: xhat.baseAddress!, rows)
            }
        }
        if trainable {
            gamma.accumulateGradient { dg in for c in 0..<channels { dg[c] += Float(sumGradientNormalized[c]) } }
            beta.accumulateGradient { db in for c in 0..<channels { db[c] += Float(sumGradient[c]) } }
        }
        // The means below are over the rows the statistics came from: with synchronised
        // statistics, every process's.
        var wholeSums = sumGradient + sumGradientNormalized
        if cache.usedBatchStatistics, let synchronization { synchronization.sumOverProcesses(&wholeSums) }
        guard needsInputGradients else { return [] }
        // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) with batch statistics;
        // gamma * invstd * dy with moving ones (the statistics are constants then).
        let scale = (0..<channels).map { gamma.value.values[$0] * cache.inverseDeviation[$0] }
        let n = cache.rows
        let zeros = [Float](repeating: 0, count: channels)
        let meanGradient = cache.usedBatchStatistics ? wholeSums[..<channels].map { Float($0 / n) } : zeros
        let meanGradientNormalized = cache.usedBatchStatistics ? wholeSums[channels...].map { Float($0 / n) } : zeros
        var dx = Tensor(shape: outputGradient.shape) { out in
            outputGradient.values.withUnsafeBufferPointer { dy in
                cache.normalized.values.withUnsafeBufferPointer { xhat in
                    batchNormInputGradient(dy.baseAddress!, normalized: xhat.baseAddress!, rows,
                                           scale: scale, meanGradient: meanGradient, meanGradientNormalized: meanGradientNormalized,
                                           into: out.baseAddress!)
                }
            }
        }
        dx.layout = outputGradient.layout
        return [dx]
    }

    public func releaseCache() { cache = nil }
}

/// Sums per-channel figures over the processes that train one model together (synchronised
/// BatchNormalization statistics).
public protocol CrossProcessSum: AnyObject {
    /// Replaces `values` by their element-wise sum over the processes. Every process calls it
    /// with as many values, in the same order of calls.
    func sumOverProcesses(_ values: inout [Double])
}

extension Model {
    /// The BatchNormalization layers with synchronised statistics that normalise with batch
    /// statistics in training.
    var synchronizedBatchNormalizations: [BatchNormalization] {
        layers.compactMap { $0 as? BatchNormalization }.filter { $0.synchronization != nil && $0.usesBatchStatistics(training: true) }
    }

    /// What a process with no rows in a training step (a last batch smaller than the processes)
    /// does so that the others' sums over the processes go through: zeros for each synchronised
    /// BatchNormalization's forward sums in forward order (its moving statistics take the
    /// others' batch statistics, as theirs do), then the backward pass's order of calls, each
    /// layer's `afterLayerBackward` and the backward sums of the synchronised ones.
    public func joinTrainingStepWithoutRows() {
        joinForwardWithoutRows()
        joinBackwardWithoutRows()
    }

    /// The forward half of `joinTrainingStepWithoutRows`.
    public func joinForwardWithoutRows() {
        for norm in synchronizedBatchNormalizations { norm.joinForwardWithoutRows() }
    }

    /// The backward half of `joinTrainingStepWithoutRows`.
    public func joinBackwardWithoutRows() {
        let ids = Set(synchronizedBatchNormalizations.map(ObjectIdentifier.init))
        for layer in layers.reversed() {
            if ids.contains(ObjectIdentifier(layer)), let norm = layer as? BatchNormalization { norm.joinBackwardWithoutRows() }
            afterLayerBackward?(layer)
        }
    }

    /// Sets the moving mean and variance of every BatchNormalization layer that normalises with
    /// batch statistics in training to the average of those statistics over `batches` (training
    /// forward passes; no weight changes). After a short run the momentum-0.99 moving statistics
    /// still hold much of their initial values, and inference with them can fall to chance.
    public func recalibrateBatchNormalization(_ batches: [Tensor]) {
        let norms = layers.compactMap { $0 as? BatchNormalization }.filter { $0.usesBatchStatistics(training: true) }
        guard !norms.isEmpty, !batches.isEmpty else { return }
        for norm in norms { norm.averagedBatches = 0 }
        for batch in batches { _ = forward(batch, training: true) }
        for norm in norms { norm.averagedBatches = nil }
    }
}
