import Foundation

/// A loss value with the gradient to hand to `Model.backward`.
public struct LossResult {
    public let value: Double
    public let gradient: LossGradient
}

/// Mean squared error over all elements, or over the elements where `mask` is non-zero
/// (masked reconstruction: loss = Σ mask * (prediction - target)² / Σ mask; a mask may hold weights).
/// `denominator`, when given, replaces that Σ mask (or element count): a rank holding part of a
/// batch divides by the whole batch's, so that the ranks' losses and gradients add up to the batch's.
///     prediction, target, mask: same shape, e.g. [batch, height, width, channels]
public func meanSquaredError(prediction: Tensor, target: Tensor, mask: Tensor? = nil, denominator fixedDenominator: Double? = nil) -> LossResult {
    precondition(prediction.shape == target.shape, "MSE: prediction \(prediction.shape) and target \(target.shape) differ")
    if let mask { precondition(mask.shape == prediction.shape, "MSE: mask \(mask.shape) must match prediction \(prediction.shape)") }
    var total = 0.0
    var weightSum = 0.0
    var gradient = Tensor(zeros: prediction.shape)
    prediction.values.withUnsafeBufferPointer { p in
        target.values.withUnsafeBufferPointer { t in
            for i in 0..<p.count {
                let w = Double(mask?.values[i] ?? 1)
                let d = Double(p[i] - t[i])
                total += w * d * d
                weightSum += w
            }
        }
    }
    let denominator = fixedDenominator ?? max(weightSum, mask == nil ? 1 : 1e-12)
    let scale = Float(2 / denominator)
    gradient.values.withUnsafeMutableBufferPointer { g in
        prediction.values.withUnsafeBufferPointer { p in
            target.values.withUnsafeBufferPointer { t in
                if let mask {
                    mask.values.withUnsafeBufferPointer { m in for i in 0..<g.count { g[i] = scale * m[i] * (p[i] - t[i]) } }
                } else {
                    for i in 0..<g.count { g[i] = scale * (p[i] - t[i]) }
                }
            }
        }
    }
    return LossResult(value: total / denominator, gradient: .output(gradient))
}

/// Categorical cross-entropy on softmax probabilities, fused with the softmax: the gradient is with
/// respect to the logits, (p - y) * w / batch, so the final Dense skips its softmax derivative.
///
///     probabilities, labels: [batch, classes]   (labels one-hot or soft)
///
/// - labelSmoothing: y ← y * (1 - s) + s / classes (Keras's `label_smoothing`).
/// - classWeights: each sample's loss is scaled by the weight of its true (argmax) class, and the sum
///   divided by the batch size (Keras's `class_weight` with its default "sum over batch size").
public func softmaxCrossEntropy(probabilities: Tensor, labels: Tensor, classWeights: [Float]? = nil,
                                labelSmoothing: Float = 0) -> LossResult {
    precondition(probabilities.shape == labels.shape && probabilities.shape.count == 2,
                 "cross-entropy: probabilities \(probabilities.shape) and labels \(labels.shape) must both be [batch, classes]")
    let (batch, classes) = (probabilities.shape[0], probabilities.shape[1])
    if let classWeights { precondition(classWeights.count == classes, "cross-entropy: \(classWeights.count) class weights for \(classes) classes") }
    var total = 0.0
    var gradient = Tensor(zeros: probabilities.shape)
    gradient.values.withUnsafeMutableBufferPointer { g in
        for n in 0..<batch {
            var trueClass = 0
            for c in 0..<classes where labels.values[n * classes + c] > labels.values[n * classes + trueClass] { trueClass = c }
            let w = classWeights?[trueClass] ?? 1
            for c in 0..<classes {
                let i = n * classes + c
                let y = labels.values[i] * (1 - labelSmoothing) + labelSmoothing / Float(classes)
                let p = probabilities.values[i]
                total -= Double(w) * Double(y) * log(max(Double(p), 1e-38))
                g[i] = w * (p - y) / Float(batch)
            }
        }
    }
    return LossResult(value: total / Double(batch), gradient: .logits(gradient))
}
