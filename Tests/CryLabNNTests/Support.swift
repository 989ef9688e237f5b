import CryLabNN
import CryLabOneDNN
import Foundation
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

/// One optimisation step for the engine's tests: zeroed gradients, `loss` back-propagated, optional
/// clipping, the optimiser's update (training runs step through CryLabTraining's loop).
@discardableResult
func optimizationStep(_ model: Model, input: Tensor, optimizer: any Optimizer, clipNorm: Float? = nil,
                      loss: (Tensor) -> LossResult) -> Double {
    model.zeroGradients()
    let value = model.accumulateGradients(input: input, loss: loss)
    if let clipNorm { clipGradientsByGlobalNorm(model.trainableParameters, maxNorm: clipNorm) }
    optimizer.step(model)
    return value
}

// MARK: Gradient checks against finite differences in Double
//
// A check has three parts: the float32 forward against the Double reference forward
// (ReferenceLayers.swift); central finite differences of a scalar computed entirely in Double through
// that reference; the float32 analytic backward against those differences.

/// Relative forward tolerance: float32 rounding (~6e-8 per operation) grows with the length of sums.
let forwardTolerance = 1e-5
/// Gradient tolerance, relative to the gradient's scale: float32 backward passes are good to ~1e-6 here,
/// while a wrong term in a backward pass gives errors of order one.
let gradientTolerance = 1e-3
/// Tensors up to this many values have every index probed; larger ones this many spread indices.
let probesPerTensor = 1_000

/// Largest |y - reference| divided by the largest |reference|; expects it within `tolerance`.
@discardableResult
func checkForward(_ y: Tensor, against reference: DoubleTensor, tolerance: Double = forwardTolerance, label: String,
                  sourceLocation: SourceLocation = #_sourceLocation) -> (error: Double, difference: Double) {
    guard y.shape == reference.shape else {
        func text(_ shape: [Int]) -> String { shape.map(String.init).joined(separator: "x") }
        Issue.record("\(label) forward: shape \(text(y.shape)), reference \(text(reference.shape))", sourceLocation: sourceLocation)
        return (.infinity, .infinity)
    }
    let difference = zip(y.values, reference.values).reduce(0.0) { max($0, abs(Double($1.0) - $1.1)) }
    let scale = reference.values.reduce(0.0) { max($0, abs($1)) }
    let error = difference / scale
    #expect(error <= tolerance, "\(label) forward: largest difference \(difference), relative \(error) (tolerance \(tolerance))",
            sourceLocation: sourceLocation)
    return (error, difference)
}

/// Central finite difference of a Double function along one value of one of its tensors. The step is
/// 1e-6 relative (1e-6 absolute near zero): truncation (~h²) and rounding (~1e-16·|f| / h) stay far below
/// float32's errors.
func centralDifference(_ f: ([DoubleTensor]) -> Double, at point: [DoubleTensor], tensor: Int, index: Int) -> Double {
    let value = point[tensor].values[index]
    let h = 1e-6 * max(1, abs(value))
    var plus = point, minus = point
    plus[tensor].values[index] = value + h
    minus[tensor].values[index] = value - h
    return (f(plus) - f(minus)) / (plus[tensor].values[index] - minus[tensor].values[index])
}

/// A float32 backward's gradient of one of the objective's tensors (`tensor`: its place in the point).
struct AnalyticGradient {
    let name: String
    let tensor: Int
    let gradient: Tensor
}

/// Compares each analytic gradient with finite differences of `f` at `point`. The error of a gradient is
/// max |fd - analytic| over its probes divided by its scale: max(|fd|, |analytic|) over those probes, but
/// at least 1e-3 of the largest scale in the check. The floor is for gradients that are zero in exact
/// arithmetic (a bias followed by batch normalisation), which float32 computes as rounding noise of the
/// terms it cancels; a tensor whose gradient is 1e-3 of the largest is still checked to ~1e-6 absolute.
/// Expects every error within `tolerance` and some nonzero gradient (all zero would check nothing).
/// Returns the worst error and the gradient it belongs to.
@discardableResult
func compareWithFiniteDifferences(_ f: ([DoubleTensor]) -> Double, at point: [DoubleTensor], _ gradients: [AnalyticGradient],
                                  tolerance: Double = gradientTolerance, label: String,
                                  sourceLocation: SourceLocation = #_sourceLocation) -> (error: Double, name: String) {
    // Per gradient: its scale and its largest difference from the finite differences.
    var results: [(scale: Double, difference: Double, index: Int, fd: Double)] = []
    for analytic in gradients {
        let count = point[analytic.tensor].count
        precondition(analytic.gradient.count == count, "\(label) \(analytic.name): gradient and tensor sizes differ")
        let indices = count <= probesPerTensor ? Array(0..<count) : (0..<probesPerTensor).map { $0 * count / probesPerTensor }
        var result = (scale: 0.0, difference: 0.0, index: 0, fd: 0.0)
        for i in indices {
            let fd = centralDifference(f, at: point, tensor: analytic.tensor, index: i)
            let value = Double(analytic.gradient.values[i])
            result.scale = max(result.scale, abs(fd), abs(value))
            if abs(fd - value) >= result.difference { (result.difference, result.index, result.fd) = (abs(fd - value), i, fd) }
        }
        results.append(result)
    }
    let largestScale = results.reduce(0) { max($0, $1.scale) }
    guard largestScale > 0 else {
        Issue.record("\(label): every gradient is zero at every probe, the check cannot fail", sourceLocation: sourceLocation)
        return (.infinity, "-")
    }
    var worst = (error: 0.0, name: "-")
    for (analytic, result) in zip(gradients, results) {
        let scale = max(result.scale, 1e-3 * largestScale)
        let error = result.difference / scale
        #expect(error <= tolerance, """
            \(label) \(analytic.name)[\(result.index)]: finite difference \(result.fd) vs backward \
            \(analytic.gradient.values[result.index]), error \(error) relative to the gradient scale \(scale)
            """, sourceLocation: sourceLocation)
        if error >= worst.error { worst = (error, analytic.name) }
    }
    return worst
}

/// The accumulated gradients of a layer's trainable weights, whose values are the objective's tensors
/// `firstTensor...` in `layer.weights` order. A frozen layer contributes none and must have accumulated none.
func weightGradients(of layer: any Layer, firstTensor: Int, label: String,
                     sourceLocation: SourceLocation = #_sourceLocation) -> [AnalyticGradient] {
    var gradients: [AnalyticGradient] = []
    for (i, weight) in layer.weights.enumerated() where weight.isTrainable {
        let path = "\(layer.name)/\(weight.name)"
        if !layer.trainable {
            #expect(weight.gradient?.values.allSatisfy { $0 == 0 } ?? true, "\(label): \(path) is frozen, yet has a gradient",
                    sourceLocation: sourceLocation)
        } else if let gradient = weight.gradient {
            gradients.append(AnalyticGradient(name: path, tensor: firstTensor + i, gradient: gradient))
        } else {
            Issue.record("\(label) \(path): no gradient accumulated", sourceLocation: sourceLocation)
        }
    }
    return gradients
}

/// Checks a layer: its float32 forward against the Double reference, and its backward (input gradients
/// and every trainable weight's gradient) against Double central differences of L = Σ r·y, r fixed and
/// random, so backward(r) must give dL/dx and dL/dθ. Prints and returns the worst gradient error.
@discardableResult
func checkGradients(_ layer: any Layer, inputs: [Tensor], training: Bool = true, label: String? = nil,
                    sourceLocation: SourceLocation = #_sourceLocation) -> Double {
    let label = label ?? "\(layer.kerasClass) \(layer.name)"
    guard let reference = referenceForward(for: layer, training: training) else {
        Issue.record("no Double reference for \(layer.kerasClass)", sourceLocation: sourceLocation)
        return .infinity
    }
    // Read before forward: a training forward of BatchNormalization moves its moving statistics.
    let weights = layer.weights.map { DoubleTensor($0.value) }
    let y = layer.forward(inputs, training: training)
    let r = randomTensor(y.shape, seed: 99)
    for weight in layer.weights { weight.zeroGradient() }
    let inputGradients = layer.backward(r, needsInputGradients: true)
    guard inputGradients.count == inputs.count else {
        Issue.record("\(label): \(inputGradients.count) input gradients for \(inputs.count) inputs", sourceLocation: sourceLocation)
        return .infinity
    }

    // The objective's tensors: the inputs, then the weights.
    let point = inputs.map(DoubleTensor.init) + weights
    let r64 = r.values.map(Double.init)
    func objective(_ p: [DoubleTensor]) -> Double {
        let out = reference(Array(p[..<inputs.count]), Array(p[inputs.count...]))
        return zip(out.values, r64).reduce(0) { $0 + $1.0 * $1.1 }
    }
    let forward = checkForward(y, against: reference(Array(point[..<inputs.count]), weights), label: label,
                               sourceLocation: sourceLocation)

    let gradients = inputs.indices.map { AnalyticGradient(name: "input \($0)", tensor: $0, gradient: inputGradients[$0]) }
        + weightGradients(of: layer, firstTensor: inputs.count, label: label, sourceLocation: sourceLocation)
    let worst = compareWithFiniteDifferences(objective, at: point, gradients, label: label, sourceLocation: sourceLocation)
    print("gradient check \(label): forward largest difference \(forward.difference) (relative \(forward.error)), "
          + "worst gradient error \(worst.error) in \(worst.name)")
    return worst.error
}

/// Checks a model's weight gradients from `Model.backward` of a loss against Double central differences of
/// the same loss through `ReferenceModel`, which composes the layers' references along the model's graph.
/// `loss` is the library's float32 loss; `referenceLoss` the same loss in Double. Returns the worst error.
@discardableResult
func checkModelGradients(_ model: Model, input: Tensor, label: String, loss: (Tensor) -> LossResult,
                         referenceLoss: (DoubleTensor) -> Double,
                         sourceLocation: SourceLocation = #_sourceLocation) throws -> Double {
    let reference = try #require(ReferenceModel(model, training: true), "\(label): a layer has no Double reference",
                                 sourceLocation: sourceLocation)
    let weights = model.layers.map { $0.weights.map { DoubleTensor($0.value) } }  // [node][weight]
    model.zeroGradients()
    let y = model.forward(input, training: true)
    model.backward(loss(y).gradient)

    let x = DoubleTensor(input)
    let forward = checkForward(y, against: reference.forward(x, weights: weights), label: label,
                               sourceLocation: sourceLocation)
    // The objective's tensors: every weight, node by node.
    let weightCounts = weights.map(\.count)
    func objective(_ p: [DoubleTensor]) -> Double {
        var nodeWeights: [[DoubleTensor]] = []
        var start = 0
        for count in weightCounts {
            nodeWeights.append(Array(p[start..<(start + count)]))
            start += count
        }
        return referenceLoss(reference.forward(x, weights: nodeWeights))
    }
    var gradients: [AnalyticGradient] = []
    var firstTensor = 0
    for layer in model.layers {
        gradients += weightGradients(of: layer, firstTensor: firstTensor, label: label, sourceLocation: sourceLocation)
        firstTensor += layer.weights.count
    }
    let worst = compareWithFiniteDifferences(objective, at: weights.flatMap { $0 }, gradients, label: label,
                                             sourceLocation: sourceLocation)
    print("gradient check \(label): \(gradients.count) weight tensors, forward largest difference \(forward.difference) "
          + "(relative \(forward.error)), worst gradient error \(worst.error) in \(worst.name)")
    return worst.error
}

/// The threads tests compute with: every core, as `ComputeContext.default`.
let testThreads = ProcessInfo.processInfo.activeProcessorCount

/// A oneDNN runtime of its own in `precision` (in `.fast`, choosing among `candidates`, with
/// `choices` if given): what a `ComputeContext` of these settings computes with.
func oneDNN(_ precision: ConvolutionPrecision, candidates: FastModeCandidates = .all,
            choices: FastModeChoices? = nil) -> DNNLConvolution {
    DNNLConvolution(precision: precision, threads: testThreads, fastModeCandidates: candidates, fastModeChoices: choices)
}

/// The reference convolution with the tests' threads.
let reference = ReferenceConvolution(threads: testThreads)
