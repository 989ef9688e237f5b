@_exported import CryLabTensor
import CryLabOneDNN

/// The one API every layer follows (llm.c style: explicit forward and backward, no autograd).
///
/// - `forward(_:training:context:)` computes the output with the context's kernels and threads
///   (`Model` passes its own; without one, layers run on `ComputeContext.default`). `training` is the *mode* flag: Dropout drops and
///   BatchNormalization normalises with batch statistics. In training mode a layer keeps what its
///   backward pass needs until `backward` or `releaseCache` is called.
/// - `backward(_:needsInputGradients:context:)`, with the context its forward ran with, takes d(loss)/d(output) and *accumulates* d(loss)/d(weight)
///   into each trainable weight's `gradient` (unless the layer is frozen), then returns d(loss)/d(input)
///   for each input, or nothing when the caller says no one needs it.
/// - `weights` lists the layer's weights in Keras's order under Keras's names (`kernel`, `bias`,
///   `gamma`, `beta`, `moving_mean`, `moving_variance`), each with a `isTrainable` flag.
/// - `trainable` is the *freeze* flag, separate from the mode: a frozen layer computes no weight
///   gradients and the optimiser never updates it (and a frozen BatchNormalization runs in inference
///   mode, as in Keras).
public protocol Layer: AnyObject {
    /// The name Keras gives this layer in a freshly built model, e.g. "conv2d_3".
    var name: String { get }
    /// Keras's class name, e.g. "Conv2D".
    var kerasClass: String { get }
    var weights: [Parameter] { get }
    var trainable: Bool { get set }
    /// Output shape (batch included) for the given input shapes; throws with the layer's name on mismatch.
    func outputShape(inputShapes: [[Int]]) throws -> [Int]
    func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor
    func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor]
    func releaseCache()
}

extension Layer {
    /// Single-input convenience.
    public func forward(_ input: Tensor, training: Bool = false, context: ComputeContext = .default) -> Tensor {
        forward([input], training: training, context: context)
    }

    /// `forward` on `ComputeContext.default` (fp32, every core).
    public func forward(_ inputs: [Tensor], training: Bool) -> Tensor {
        forward(inputs, training: training, context: .default)
    }

    /// `backward` on `ComputeContext.default`, for a forward run on it.
    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool) -> [Tensor] {
        backward(outputGradient, needsInputGradients: needsInputGradients, context: .default)
    }

    /// Whether backward would accumulate any weight gradient.
    public var computesWeightGradients: Bool {
        trainable && weights.contains { $0.isTrainable }
    }

    public func weight(named name: String) -> Parameter? {
        weights.first { $0.name == name }
    }

    public var parameterCount: Int {
        weights.reduce(0) { $0 + $1.value.count }
    }
}

/// A single-input layer that can add its input gradient into one another reader of the input
/// already produced (a skip connection's), instead of returning it for `Model` to add: the same
/// sums, without the zero-filled tensor and the extra pass.
protocol GradientAccumulatingLayer: Layer {
    /// inputGradient += d(loss)/d(input), in inputGradient's layout (the input's).
    func backward(_ outputGradient: Tensor, accumulatingInto inputGradient: inout Tensor, context: ComputeContext)
}

/// A layer with a fused ReLU that keeps its output for ReLU's backward, and can keep only a bit
/// per value of it (`reluMask`) once the output is nowhere else: `Model.forward` says so when
/// every reader has run and none keeps its input (`KeepsNoInput`). In a U-Net that is each
/// upsampling and each skip, whose values the concatenation has copied: their bytes go back in
/// forward instead of after backward.
protocol ReLUMaskKeepingLayer: Layer {
    /// In training, after `forward`: replace the kept output by its mask (nothing if there is no
    /// ReLU or no kept output).
    func keepOnlyReLUMask(threads: Int)
}

/// A layer whose backward needs none of its inputs' values (max pooling keeps positions,
/// concatenation widths).
protocol KeepsNoInput: Layer {}

/// A layer that reads, and may write, `ActivationLayout.blocked16` tensors inside a `Model`,
/// whose execution plan decides where such hand-offs are allowed (`Model.passesBlockedActivations`).
protocol BlockedLayoutLayer: Layer {
    /// Whether inputs of these shapes may come blocked, given whether this layer's own output may be
    /// (and whether the forward is for training, whose backward passes read the input too).
    func takesBlockedInput(_ shapes: [[Int]], outputMayBeBlocked: Bool, training: Bool, context: ComputeContext) -> Bool
    /// `forward` with the layout the model's plan allows for the output: `.blocked16` where every
    /// reader takes it blocked, else `.nhwc`. A layer may still write NHWC where blocked would cost
    /// it a reorder; layers whose output follows their input's layout ignore it.
    func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext, allowedOutputLayout: ActivationLayout) -> Tensor
}

extension BlockedLayoutLayer {
    func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext, allowedOutputLayout: ActivationLayout) -> Tensor {
        forward(inputs, training: training, context: context)
    }
}

/// A layer whose output passes through an activation function; lets a fused softmax + cross-entropy
/// loss hand in d(loss)/d(logits) directly.
public protocol ActivatedLayer: Layer {
    var activation: Activation { get }
    func backward(preActivationGradient: Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor]
}

/// One named weight of a layer. `value` has exactly Keras's shape.
public final class Parameter {
    /// Keras's weight name within its layer, e.g. "kernel".
    public let name: String
    public private(set) var value: Tensor
    /// Changes whenever `value` does (`assign`, or an optimiser's `updateValues`): a layer that
    /// keeps a converted copy of its weights (Dense's bf16 kernel for inference) compares it.
    public private(set) var version = 0
    /// d(loss)/d(value), accumulated by backward; allocated on first use, zeroed by `Model.zeroGradients`.
    public internal(set) var gradient: Tensor?
    /// false for state that forward updates (BatchNormalization moving statistics): never optimised.
    public let isTrainable: Bool

    public init(name: String, value: Tensor, isTrainable: Bool = true) {
        self.name = name
        self.value = value
        self.isTrainable = isTrainable
    }

    public var shape: [Int] { value.shape }

    /// Replaces the values; the shape must match Keras's.
    public func assign(_ newValue: Tensor, layerName: String = "?") throws(WeightError) {
        guard newValue.shape == value.shape else {
            throw .shapeMismatch(path: "\(layerName)/\(name)", expected: value.shape, actual: newValue.shape)
        }
        value = newValue
        version &+= 1
    }

    /// Runs `body` on the gradient buffer, allocating zeros the first time.
    func accumulateGradient(_ body: (UnsafeMutablePointer<Float>) -> Void) {
        if gradient == nil { gradient = Tensor(zeros: value.shape) }
        gradient!.values.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
    }

    /// Runs `body` on the gradient's values, allocating zeros the first time: for a caller that
    /// rewrites the gradients in place (a data-parallel run's allreduce).
    public func withGradientValues<T>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> T) rethrows -> T {
        if gradient == nil { gradient = Tensor(zeros: value.shape) }
        return try gradient!.values.withUnsafeMutableBufferPointer { try body($0) }
    }

    /// gradient += contribution (shapes must match).
    public func addToGradient(_ contribution: Tensor) {
        precondition(contribution.shape == value.shape, "gradient of \(name): expected \(value.shape), got \(contribution.shape)")
        accumulateGradient { g in for i in 0..<contribution.count { g[i] += contribution.values[i] } }
    }

    public func zeroGradient() {
        guard gradient != nil else { return }
        gradient!.values.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    /// Drops the gradient buffer (e.g. after freezing) to give its memory back.
    public func releaseGradient() { gradient = nil }

    /// For optimisers: mutable access to the values.
    func updateValues(_ body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        version &+= 1
        value.values.withUnsafeMutableBufferPointer { body($0) }
    }
}

/// Errors of loading and addressing weights; each names the path and both shapes.
public enum WeightError: Error, Equatable, CustomStringConvertible {
    case shapeMismatch(path: String, expected: [Int], actual: [Int])
    case unknownLayer(name: String, available: [String])
    case unknownWeight(path: String, available: [String])
    case missingWeight(path: String)

    public var description: String {
        switch self {
        case let .shapeMismatch(path, expected, actual):
            "weight \(path): expected shape \(expected), got \(actual); check that the checkpoint matches the model configuration"
        case let .unknownLayer(name, available):
            "no layer named '\(name)'; the model has: \(available.joined(separator: ", "))"
        case let .unknownWeight(path, available):
            "no weight \(path); that layer has: \(available.joined(separator: ", "))"
        case let .missingWeight(path):
            "weight \(path) was not provided"
        }
    }
}

/// Shape errors raised while building a model; name the layer and both shapes.
public struct ShapeError: Error, CustomStringConvertible {
    public let layer: String
    public let message: String
    public var description: String { "layer \(layer): \(message)" }
}

/// Gives layers the names Keras would give them in a fresh session: the first Conv2D is "conv2d",
/// the next "conv2d_1", and so on, per layer kind, in creation order.
public struct KerasNamer: Sendable {
    private var counts: [String: Int] = [:]

    public init() {}

    /// Starts counting after names already in use (e.g. an encoder's layers reused by a classifier).
    public init(continuingAfter names: [String]) {
        for name in names { reserve(name) }
    }

    public mutating func next(_ base: String) -> String {
        let n = counts[base, default: 0]
        counts[base] = n + 1
        return n == 0 ? base : "\(base)_\(n)"
    }

    private mutating func reserve(_ name: String) {
        if let underscore = name.lastIndex(of: "_"), let n = Int(name[name.index(after: underscore)...]) {
            let base = String(name[..<underscore])
            counts[base] = max(counts[base, default: 0], n + 1)
        } else {
            counts[name] = max(counts[name, default: 0], 1)
        }
    }
}
