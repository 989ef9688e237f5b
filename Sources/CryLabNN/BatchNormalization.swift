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
public final class BatchNormalization: Layer {
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

    private struct Cache {
        var normalized: Tensor        // xhat: same shape as x
        var inverseDeviation: [Float] // 1 / sqrt(var + eps) per channel
        var usedBatchStatistics: Bool
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

    /// Whether this call normalises with batch statistics.
    public func usesBatchStatistics(training: Bool) -> Bool {
        training && (trainable || frozenUsesBatchStatistics)
    }

    public func forward(_ inputs: [Tensor], training: Bool) -> Tensor {
        let x = inputs[0]
        precondition(x.shape.last == channels, "\(name): expected input [..., \(channels)], got \(x.shape)")
        let rows = x.count / channels
        let batchStatistics = usesBatchStatistics(training: training)
        var mean = [Float](repeating: 0, count: channels)
        var variance = [Float](repeating: 0, count: channels)
        if batchStatistics {
            var sums = [Double](repeating: 0, count: channels)
            var squares = [Double](repeating: 0, count: channels)
            x.values.withUnsafeBufferPointer { v in
                for r in 0..<rows {
                    for c in 0..<channels { sums[c] += Double(v[r * channels + c]) }
                }
                for c in 0..<channels { sums[c] /= Double(rows) }
                for r in 0..<rows {
                    for c in 0..<channels {
                        let d = Double(v[r * channels + c]) - sums[c]
                        squares[c] += d * d
                    }
                }
            }
            for c in 0..<channels {
                mean[c] = Float(sums[c])
                variance[c] = Float(squares[c] / Double(rows))
            }
            movingMean.updateValues { m in
                for c in 0..<channels { m[c] = m[c] * momentum + mean[c] * (1 - momentum) }
            }
            movingVariance.updateValues { v in
                for c in 0..<channels { v[c] = v[c] * momentum + variance[c] * (1 - momentum) }
            }
        } else {
            mean = movingMean.value.values
            variance = movingVariance.value.values
        }
        let inverse = variance.map { 1 / ($0 + epsilon).squareRoot() }
        let normalized = Tensor(shape: x.shape) { xhat in
            x.values.withUnsafeBufferPointer { v in
                for r in 0..<rows {
                    for c in 0..<channels { xhat[r * channels + c] = (v[r * channels + c] - mean[c]) * inverse[c] }
                }
            }
        }
        let y = Tensor(shape: x.shape) { out in
            normalized.values.withUnsafeBufferPointer { xhat in
                let g = gamma.value.values, b = beta.value.values
                for r in 0..<rows {
                    for c in 0..<channels { out[r * channels + c] = xhat[r * channels + c] * g[c] + b[c] }
                }
            }
        }
        if training {
            cache = Cache(normalized: normalized, inverseDeviation: inverse, usedBatchStatistics: batchStatistics)
        }
        return y
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool) -> [Tensor] {
        guard let cache else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        let rows = outputGradient.count / channels
        var sumGradient = [Double](repeating: 0, count: channels)         // Σ dy
        var sumGradientNormalized = [Double](repeating: 0, count: channels) // Σ dy * xhat
        outputGradient.values.withUnsafeBufferPointer { dy in
            cache.normalized.values.withUnsafeBufferPointer { xhat in
                for r in 0..<rows {
                    for c in 0..<channels {
                        let d = Double(dy[r * channels + c])
                        sumGradient[c] += d
                        sumGradientNormalized[c] += d * Double(xhat[r * channels + c])
                    }
                }
            }
        }
        if trainable {
            gamma.accumulateGradient { dg in for c in 0..<channels { dg[c] += Float(sumGradientNormalized[c]) } }
            beta.accumulateGradient { db in for c in 0..<channels { db[c] += Float(sumGradient[c]) } }
        }
        guard needsInputGradients else { return [] }
        let g = gamma.value.values
        let dx = Tensor(shape: outputGradient.shape) { out in
            outputGradient.values.withUnsafeBufferPointer { dy in
                cache.normalized.values.withUnsafeBufferPointer { xhat in
                    if cache.usedBatchStatistics {
                        // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
                        let n = Double(rows)
                        for r in 0..<rows {
                            for c in 0..<channels {
                                let i = r * channels + c
                                let centered = Double(dy[i]) - sumGradient[c] / n - Double(xhat[i]) * sumGradientNormalized[c] / n
                                out[i] = Float(Double(g[c] * cache.inverseDeviation[c]) * centered)
                            }
                        }
                    } else {
                        for r in 0..<rows {
                            for c in 0..<channels { out[r * channels + c] = dy[r * channels + c] * g[c] * cache.inverseDeviation[c] }
                        }
                    }
                }
            }
        }
        return [dx]
    }

    public func releaseCache() { cache = nil }
}
