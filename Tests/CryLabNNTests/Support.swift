import CryLabNN
import Testing

/// Uniform random values in [-scale, scale) from a fixed seed.
func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var generator = SeededGenerator(seed: seed)
    return Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in generator.nextFloat(in: -scale, scale) })
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }

/// Largest |a - b| divided by max(1, largest |b|): a relative error that does not blow up on zeros.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    Double(maxAbsDifference(a, b)) / Double(max(1, maxAbs(b)))
}

/// Central finite differences against a layer's backward pass.
///
/// The scalar checked is L = Σ r·y with a fixed random r, summed in Double, so backward(r) must give
/// dL/dx and dL/dθ. Forward runs in Float; the step `h` balances Float rounding (~1e-7·|L|/h)
/// against truncation (~h²). Each input and trainable weight is probed at up to `probes` indices.
/// Returns the largest normalised error |fd - analytic| / max(1, max|analytic|) over all probes.
@discardableResult
func checkGradients(_ layer: any Layer, inputs: [Tensor], training: Bool = true, probes: Int = 24,
                    step h: Float = 1e-3, tolerance: Double = 5e-3, beforeForward: () -> Void = {},
                    sourceLocation: SourceLocation = #_sourceLocation) -> Double {
    beforeForward()
    let y = layer.forward(inputs, training: training)
    let r = randomTensor(y.shape, seed: 99)
    for weight in layer.weights { weight.zeroGradient() }
    let analyticInputs = layer.backward(r, needsInputGradients: true)

    func objective(_ inputs: [Tensor]) -> Double {
        beforeForward()
        let out = layer.forward(inputs, training: training)
        layer.releaseCache()
        return zip(out.values, r.values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    var worst = 0.0
    func probeIndices(_ count: Int) -> [Int] {
        count <= probes ? Array(0..<count) : (0..<probes).map { ($0 * 7919 + 13) % count }
    }
    func record(_ fd: Double, _ analytic: Float, scale: Float, what: String) {
        let error = abs(fd - Double(analytic)) / Double(max(1, scale))
        worst = max(worst, error)
        #expect(error <= tolerance, "\(layer.name) \(what): finite difference \(fd) vs backward \(analytic)",
                sourceLocation: sourceLocation)
    }

    for (which, input) in inputs.enumerated() {
        let analytic = analyticInputs[which]
        let scale = maxAbs(analytic.values)
        for i in probeIndices(input.count) {
            var plus = inputs, minus = inputs
            plus[which].values[i] += h
            minus[which].values[i] -= h
            let fd = (objective(plus) - objective(minus)) / Double(2 * h)
            record(fd, analytic.values[i], scale: scale, what: "input \(which)[\(i)]")
        }
    }
    for weight in layer.weights where weight.isTrainable && layer.trainable {
        guard let analytic = weight.gradient else {
            Issue.record("\(layer.name)/\(weight.name): no gradient accumulated", sourceLocation: sourceLocation)
            continue
        }
        let original = weight.value
        let scale = maxAbs(analytic.values)
        for i in probeIndices(original.count) {
            var plus = original, minus = original
            plus.values[i] += h
            minus.values[i] -= h
            try! weight.assign(plus)
            let up = objective(inputs)
            try! weight.assign(minus)
            let down = objective(inputs)
            try! weight.assign(original)
            record((up - down) / Double(2 * h), analytic.values[i], scale: scale, what: "\(weight.name)[\(i)]")
        }
    }
    print("gradient check \(layer.kerasClass) \(layer.name): largest normalised error \(worst) (tolerance \(tolerance))")
    return worst
}

