import Foundation

/// Multinomial logistic regression on standardised features, with L2 regularisation and
/// optional class weights: the linear probe and the baseline every model must beat.
///
/// Fitted by full-batch gradient descent with Adam steps (the problems here are a few hundred
/// examples by a few hundred features, so this takes milliseconds) from zero weights, hence
/// deterministic.
public struct LogisticRegression: Sendable {
    public var classes: Int
    public var features: Int
    /// weights: [features, classes], bias: [classes]
    public var weights: [Double]
    public var bias: [Double]
    /// Standardisation learned on the training data.
    public var mean: [Double]
    public var scale: [Double]

    /// - Parameters:
    ///   - x: [examples][features]
    ///   - y: class index per example
    ///   - l2: penalty on the weights (per example)
    ///   - balanced: weight each class by n / (classes * count), sklearn's "balanced"
    public init(x: [[Double]], y: [Int], classes: Int, l2: Double = 1e-2, balanced: Bool = true, iterations: Int = 400) {
        precondition(!x.isEmpty && x.count == y.count, "need one label per example")
        self.classes = classes
        features = x[0].count
        let n = x.count, d = features
        let mean = (0..<d).map { j in x.reduce(0) { $0 + $1[j] } / Double(n) }
        let scale = (0..<d).map { j in
            let m = x.reduce(0) { $0 + $1[j] } / Double(n)
            let variance = x.reduce(0) { $0 + ($1[j] - m) * ($1[j] - m) } / Double(n)
            return variance > 1e-12 ? 1 / variance.squareRoot() : 1
        }
        self.mean = mean
        self.scale = scale
        // Standardised examples, one flat row per example.
        var z = [Double](repeating: 0, count: n * d)
        for i in 0..<n { for j in 0..<d { z[i * d + j] = (x[i][j] - mean[j]) * scale[j] } }
        var counts = [Double](repeating: 0, count: classes)
        for label in y { counts[label] += 1 }
        let sampleWeight = y.map { balanced ? Double(n) / (Double(classes) * max(counts[$0], 1)) : 1 }
        let totalWeight = sampleWeight.reduce(0, +)

        var weights = [Double](repeating: 0, count: d * classes)
        var bias = [Double](repeating: 0, count: classes)
        var mW = weights, vW = weights, mB = bias, vB = bias
        var gradW = weights, gradB = bias, p = bias, g = bias
        let rate = 0.05, beta1 = 0.9, beta2 = 0.999
        z.withUnsafeBufferPointer { z in
            for step in 1...iterations {
                for index in 0..<gradW.count { gradW[index] = 0 }
                for c in 0..<classes { gradB[c] = 0 }
                weights.withUnsafeBufferPointer { w in
                    gradW.withUnsafeMutableBufferPointer { gradW in
                        for i in 0..<n {
                            let row = z.baseAddress! + i * d
                            Self.logits(row, features: d, weights: w, bias: bias, into: &p)
                            Self.softmaxInPlace(&p)
                            for c in 0..<classes {
                                g[c] = sampleWeight[i] * (p[c] - (y[i] == c ? 1 : 0)) / totalWeight
                                gradB[c] += g[c]
                            }
                            for j in 0..<d {
                                let value = row[j], offset = j * classes
                                for c in 0..<classes { gradW[offset + c] += g[c] * value }
                            }
                        }
                    }
                }
                for index in 0..<weights.count { gradW[index] += l2 * weights[index] }
                let correction1 = 1 - pow(beta1, Double(step)), correction2 = 1 - pow(beta2, Double(step))
                for index in 0..<weights.count {
                    mW[index] = beta1 * mW[index] + (1 - beta1) * gradW[index]
                    vW[index] = beta2 * vW[index] + (1 - beta2) * gradW[index] * gradW[index]
                    weights[index] -= rate * (mW[index] / correction1) / ((vW[index] / correction2).squareRoot() + 1e-8)
                }
                for c in 0..<classes {
                    mB[c] = beta1 * mB[c] + (1 - beta1) * gradB[c]
                    vB[c] = beta2 * vB[c] + (1 - beta2) * gradB[c] * gradB[c]
                    bias[c] -= rate * (mB[c] / correction1) / ((vB[c] / correction2).squareRoot() + 1e-8)
                }
            }
        }
        self.weights = weights
        self.bias = bias
    }

    /// bias + row . weights for every class, skipping zero features.
    private static func logits(_ row: UnsafePointer<Double>, features: Int, weights: UnsafeBufferPointer<Double>,
                               bias: [Double], into out: inout [Double]) {
        let classes = bias.count
        for c in 0..<classes { out[c] = bias[c] }
        for j in 0..<features where row[j] != 0 {
            for c in 0..<classes { out[c] += row[j] * weights[j * classes + c] }
        }
    }

    private static func softmaxInPlace(_ values: inout [Double]) {
        let top = values.max() ?? 0
        for c in values.indices { values[c] = exp(values[c] - top) }
        let sum = values.reduce(0, +)
        for c in values.indices { values[c] /= sum }
    }

    /// Class probabilities for one example: the same logits and softmax as fitting uses.
    public func probabilities(_ x: [Double]) -> [Double] {
        let z = (0..<features).map { (x[$0] - mean[$0]) * scale[$0] }
        var p = bias
        z.withUnsafeBufferPointer { row in
            weights.withUnsafeBufferPointer { w in Self.logits(row.baseAddress!, features: features, weights: w, bias: bias, into: &p) }
        }
        Self.softmaxInPlace(&p)
        return p
    }

    public func predict(_ x: [Double]) -> Int {
        let p = probabilities(x)
        return p.indices.max { p[$0] < p[$1] }!
    }
}
