/// Layers without weights: pooling, resampling, reshaping, joining, activations, dropout.

/// Keras's `MaxPooling2D` (default: 2x2 windows, stride = pool size, valid padding).
///     x: [batch, height, width, channels] -> y: [batch, height/stride, width/stride, channels]
///
/// A blocked16 input (handed over inside a `Model`) is pooled as the NHWC tensor of 16-channel
/// blocks it is in memory, giving a blocked16 output: the same values and the same ties.
public final class MaxPool2D: BlockedLayoutLayer, GradientAccumulatingLayer, KeepsNoInput {
    public let name: String
    public let kerasClass = "MaxPooling2D"
    public let poolSize: Int, stride: Int, padding: Padding
    public var trainable = true
    public var weights: [Parameter] { [] }
    /// The positions of the maxima (offsets into the input's values, in its layout), and the input's shape and layout.
    private var cache: (argmax: [Int32], inputShape: [Int], layout: ActivationLayout)?
    /// The layout the last forward wrote its output in: its input's.
    public private(set) var lastOutputLayout = ActivationLayout.nhwc

    public init(name: String = "max_pooling2d", poolSize: Int = 2, stride: Int? = nil, padding: Padding = .valid) {
        self.name = name
        self.poolSize = poolSize
        self.stride = stride ?? poolSize
        self.padding = padding
    }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        guard inputShapes.count == 1, inputShapes[0].count == 4 else {
            throw ShapeError(layer: name, message: "expected one input [batch, height, width, channels], got \(inputShapes)")
        }
        let s = inputShapes[0]
        return ConvolutionGeometry(batch: s[0], inputHeight: s[1], inputWidth: s[2], inputChannels: s[3], outputChannels: s[3],
                                   kernelHeight: poolSize, kernelWidth: poolSize, stride: stride, padding: padding).outputShape
    }

    /// The output of a blocked input is blocked too.
    func takesBlockedInput(_ shapes: [[Int]], outputMayBeBlocked: Bool, training: Bool, context: ComputeContext) -> Bool {
        outputMayBeBlocked && shapes.count == 1 && shapes[0].count == 4 && shapes[0][3] % 16 == 0
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        let x = inputs[0]
        // Blocked: channel blocks, the pooled blocks joined again.
        let blocked = x.layout == .blocked16
        let (y, argmax) = maxPool2DForward(blocked ? x.channelBlocks : x, pool: poolSize, stride: stride, padding: padding,
                                           recordingArgmax: training, threads: context.threads)
        if training { cache = (argmax, x.shape, x.layout) }
        lastOutputLayout = x.layout
        return blocked ? y.joiningChannelBlocks(channels: x.shape[3]) : y
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let cache else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        guard needsInputGradients else { return [] }
        var dx = Tensor(zeros: cache.inputShape)
        dx.layout = cache.layout
        backward(outputGradient, accumulatingInto: &dx, context: context)
        return [dx]
    }

    /// Scatters each output gradient onto its maximum in `inputGradient` (same memory order as the
    /// input, blocked or not: the recorded positions are offsets into it).
    func backward(_ outputGradient: Tensor, accumulatingInto inputGradient: inout Tensor, context: ComputeContext) {
        guard let cache else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        precondition(inputGradient.shape == cache.inputShape && inputGradient.layout == cache.layout
                     && outputGradient.layout == cache.layout,
                     "\(name): gradients \(outputGradient.layout) and \(inputGradient.layout) \(inputGradient.shape) for a \(cache.layout) input \(cache.inputShape)")
        maxPool2DScatterAdd(outputGradient, argmax: cache.argmax, into: &inputGradient, windowsOverlap: poolSize > stride,
                            threads: context.threads)
    }

    public func releaseCache() { cache = nil }
}

/// Keras's `UpSampling2D` with nearest-neighbour interpolation.
///     x: [batch, height, width, channels] -> y: [batch, height*size, width*size, channels]
public final class UpSampling2D: Layer {
    public let name: String
    public let kerasClass = "UpSampling2D"
    public let size: Int
    public var trainable = true
    public var weights: [Parameter] { [] }

    public init(name: String = "up_sampling2d", size: Int = 2) {
        self.name = name
        self.size = size
    }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        let s = inputShapes[0]
        guard inputShapes.count == 1, s.count == 4 else {
            throw ShapeError(layer: name, message: "expected one input [batch, height, width, channels], got \(inputShapes)")
        }
        return [s[0], s[1] * size, s[2] * size, s[3]]
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor { upsampleNearestForward(inputs[0], factor: size) }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        needsInputGradients ? [upsampleNearestBackward(outputGradient, factor: size)] : []
    }

    public func releaseCache() {}
}

/// Keras's `GlobalAveragePooling2D`.  x: [batch, height, width, channels] -> y: [batch, channels]
public final class GlobalAveragePooling2D: Layer {
    public let name: String
    public let kerasClass = "GlobalAveragePooling2D"
    public var trainable = true
    public var weights: [Parameter] { [] }
    private var inputShape: [Int]?

    public init(name: String = "global_average_pooling2d") { self.name = name }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        guard inputShapes.count == 1, inputShapes[0].count == 4 else {
            throw ShapeError(layer: name, message: "expected one input [batch, height, width, channels], got \(inputShapes)")
        }
        return [inputShapes[0][0], inputShapes[0][3]]
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        if training { inputShape = inputs[0].shape }
        return globalAveragePoolForward(inputs[0])
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let inputShape else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        return needsInputGradients ? [globalAveragePoolBackward(outputGradient, inputShape: inputShape)] : []
    }

    public func releaseCache() { inputShape = nil }
}

/// Keras's `Flatten`.  x: [batch, ...] -> y: [batch, product of the rest]
public final class Flatten: Layer {
    public let name: String
    public let kerasClass = "Flatten"
    public var trainable = true
    public var weights: [Parameter] { [] }
    private var inputShape: [Int]?

    public init(name: String = "flatten") { self.name = name }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        [inputShapes[0][0], inputShapes[0].dropFirst().reduce(1, *)]
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        let x = inputs[0]
        if training { inputShape = x.shape }
        return x.reshaped([x.shape[0], x.count / max(x.shape[0], 1)])
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let inputShape else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        return needsInputGradients ? [outputGradient.reshaped(inputShape)] : []
    }

    public func releaseCache() { inputShape = nil }
}

/// Keras's `Concatenate` along the channel axis (-1).
///     inputs[i]: [batch, height, width, channels_i] -> y: [batch, height, width, Σ channels_i]
///
/// Inside a `Model`, parts may come blocked16 and the output may be written blocked16 (when every
/// reader takes it), converting layouts while copying; each part's gradient leaves in its layout.
public final class Concatenate: BlockedLayoutLayer, KeepsNoInput {
    public let name: String
    public let kerasClass = "Concatenate"
    public var trainable = true
    public var weights: [Parameter] { [] }
    private var widths: [Int]?
    private var layouts: [ActivationLayout]?
    /// The layout the last forward wrote its output in.
    public private(set) var lastOutputLayout = ActivationLayout.nhwc
    /// Replaces every input after the first by zeros: a U-Net run with its skip connection cut,
    /// to measure what the bottleneck alone reconstructs.
    public var zeroesSkipInputs = false

    public init(name: String = "concatenate") { self.name = name }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        guard inputShapes.count >= 2, Set(inputShapes.map { Array($0.dropLast()) }).count == 1 else {
            throw ShapeError(layer: name, message: "inputs must agree on all but the channel axis, got \(inputShapes)")
        }
        return Array(inputShapes[0].dropLast()) + [inputShapes.reduce(0) { $0 + $1.last! }]
    }

    /// Any mix of layouts in, either out, when every width fills whole blocks of 16.
    func takesBlockedInput(_ shapes: [[Int]], outputMayBeBlocked: Bool, training: Bool, context: ComputeContext) -> Bool {
        shapes.allSatisfy { $0.count == 4 && $0[3] % 16 == 0 }
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        forward(inputs, training: training, context: context, allowedOutputLayout: .nhwc)
    }

    func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext, allowedOutputLayout: ActivationLayout) -> Tensor {
        if training {
            widths = inputs.map { $0.shape.last! }
            layouts = inputs.map(\.layout)
        }
        let layout: ActivationLayout = allowedOutputLayout == .blocked16 && inputs.allSatisfy({ $0.shape.last! % 16 == 0 }) ? .blocked16 : .nhwc
        lastOutputLayout = layout
        if zeroesSkipInputs {
            return concatenateChannels([inputs[0]] + inputs.dropFirst().map { Tensor(zeros: $0.shape) }, layout: layout,
                                       threads: context.threads)
        }
        return concatenateChannels(inputs, layout: layout, threads: context.threads)
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let widths, let layouts else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        return needsInputGradients ? splitChannels(outputGradient, widths: widths, layouts: layouts, threads: context.threads) : []
    }

    public func releaseCache() {
        widths = nil
        layouts = nil
    }
}

/// Keras's `ReLU` layer (max(x, 0)); LeakyReLU below keeps a slope for negatives. Element-wise, so
/// a blocked16 input (inside a `Model`) gives a blocked16 output.
public final class ReLU: BlockedLayoutLayer {
    public let name: String
    public let kerasClass = "ReLU"
    public var trainable = true
    public var weights: [Parameter] { [] }
    private var output: Tensor?
    /// The layout the last forward wrote its output in: its input's.
    public private(set) var lastOutputLayout = ActivationLayout.nhwc

    public init(name: String = "re_lu") { self.name = name }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] { inputShapes[0] }

    func takesBlockedInput(_ shapes: [[Int]], outputMayBeBlocked: Bool, training: Bool, context: ComputeContext) -> Bool { outputMayBeBlocked }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        // Into a tensor of its own: the model still holds the input, so changing it in place would copy it first.
        let x = inputs[0]
        var y = Tensor(shape: x.shape) { out in
            x.values.withUnsafeBufferPointer { relu($0.baseAddress!, into: out.baseAddress!, count: out.count, threads: context.threads) }
        }
        y.layout = x.layout
        lastOutputLayout = x.layout
        if training { output = y }
        return y
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let output else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        return needsInputGradients ? [Activation.relu.backward(outputGradient, output: output, threads: context.threads)] : []
    }

    public func releaseCache() { output = nil }
}

/// Keras's `LeakyReLU`: x for x > 0, negativeSlope * x otherwise (Keras 3 default slope 0.3).
public final class LeakyReLU: Layer {
    public let name: String
    public let kerasClass = "LeakyReLU"
    public let negativeSlope: Float
    public var trainable = true
    public var weights: [Parameter] { [] }
    private var input: Tensor?

    public init(name: String = "leaky_re_lu", negativeSlope: Float = 0.3) {
        self.name = name
        self.negativeSlope = negativeSlope
    }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] { inputShapes[0] }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        if training { input = inputs[0] }
        var y = inputs[0]
        let slope = negativeSlope
        y.values.withUnsafeMutableBufferPointer { v in for i in 0..<v.count where v[i] < 0 { v[i] *= slope } }
        return y
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let input else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        guard needsInputGradients else { return [] }
        var dx = outputGradient
        let slope = negativeSlope
        dx.values.withUnsafeMutableBufferPointer { d in
            input.values.withUnsafeBufferPointer { x in for i in 0..<d.count where x[i] < 0 { d[i] *= slope } }
        }
        return [dx]
    }

    public func releaseCache() { input = nil }
}

/// Keras's `Dropout`, inverted: in training mode each value is zeroed with probability `rate` and the
/// survivors are scaled by 1 / (1 - rate); in inference mode it is the identity. Masks come from the
/// layer's own seeded generator, so a seed fixes them.
public final class Dropout: Layer {
    public let name: String
    public let kerasClass = "Dropout"
    public let rate: Float
    public var trainable = true
    public var weights: [Parameter] { [] }
    public var generator: SeededGenerator
    private var mask: [Float]?

    public init(name: String = "dropout", rate: Float, seed: UInt64 = 0) {
        precondition(rate >= 0 && rate < 1, "\(name): dropout rate must be in [0, 1), got \(rate)")
        self.name = name
        self.rate = rate
        generator = SeededGenerator(seed: seed)
    }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] { inputShapes[0] }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        guard training, rate > 0 else { return inputs[0] }
        let scale = 1 / (1 - rate)
        var m = [Float](repeating: 0, count: inputs[0].count)
        for i in 0..<m.count where generator.nextUnitFloat() >= rate { m[i] = scale }
        var y = inputs[0]
        y.values.withUnsafeMutableBufferPointer { v in for i in 0..<v.count { v[i] *= m[i] } }
        mask = m
        return y
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        defer { releaseCache() }
        guard needsInputGradients else { return [] }
        guard let mask else { return [outputGradient] }
        var dx = outputGradient
        dx.values.withUnsafeMutableBufferPointer { d in for i in 0..<d.count { d[i] *= mask[i] } }
        return [dx]
    }

    public func releaseCache() { mask = nil }
}
