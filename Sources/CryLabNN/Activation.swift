import Foundation

/// Activation functions a layer can apply to its output (Keras's `activation=` strings).
public enum Activation: String, Codable, Sendable {
    case linear, relu, sigmoid, softmax, tanh

    /// Applies the activation in place. Softmax runs over the last axis of a [rows, classes] view.
    public func apply(_ y: inout Tensor, threads: Int) {
        switch self {
        case .linear:
            return
        case .relu:
            y.values.withUnsafeMutableBufferPointer { reluInPlace($0.baseAddress!, count: $0.count, threads: threads) }
        case .sigmoid:
            y.values.withUnsafeMutableBufferPointer { v in for i in 0..<v.count { v[i] = 1 / (1 + exp(-v[i])) } }
        case .tanh:
            y.values.withUnsafeMutableBufferPointer { v in for i in 0..<v.count { v[i] = Foundation.tanh(v[i]) } }
        case .softmax:
            let classes = y.shape.last!
            y.values.withUnsafeMutableBufferPointer { v in
                for start in stride(from: 0, to: v.count, by: classes) {
                    var maximum = -Float.infinity
                    for c in 0..<classes { maximum = max(maximum, v[start + c]) }
                    var sum: Float = 0
                    for c in 0..<classes {
                        v[start + c] = exp(v[start + c] - maximum)
                        sum += v[start + c]
                    }
                    for c in 0..<classes { v[start + c] /= sum }
                }
            }
        }
    }

    /// d(loss)/d(pre-activation) from d(loss)/d(output) and the output itself. Takes `dy` by value
    /// and reuses its buffer when the caller hands over the only reference (no copy in training).
    public func backward(_ dy: consuming Tensor, output y: Tensor, threads: Int) -> Tensor {
        if self == .linear { return dy }
        var dx = consume dy
        dx.values.withUnsafeMutableBufferPointer { buffer in
            y.values.withUnsafeBufferPointer { outBuffer in
                let d = buffer.baseAddress!, out = outBuffer.baseAddress!
                let count = buffer.count
                switch self {
                case .linear:
                    break
                case .relu:
                    reluBackwardInPlace(gradient: d, output: out, count: count, threads: threads)
                case .sigmoid:
                    for i in 0..<count { d[i] *= out[i] * (1 - out[i]) }
                case .tanh:
                    for i in 0..<count { d[i] *= 1 - out[i] * out[i] }
                case .softmax:
                    // dx = y * (dy - Σ dy*y) per row
                    let classes = y.shape.last!
                    for start in stride(from: 0, to: count, by: classes) {
                        var dot: Float = 0
                        for c in 0..<classes { dot += d[start + c] * out[start + c] }
                        for c in 0..<classes { d[start + c] = out[start + c] * (d[start + c] - dot) }
                    }
                }
            }
        }
        return dx
    }
}
