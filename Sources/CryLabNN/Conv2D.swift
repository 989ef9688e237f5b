/// 2-D convolution, Keras's `Conv2D`: odd square kernels, stride 1 or 2, same/valid padding,
/// optional bias, an activation (ReLU fused into oneDNN's kernel).
///
///     x: [batch, height, width, inputChannels] -> y: [batch, outHeight, outWidth, filters]
///     kernel: [kernelSize, kernelSize, inputChannels, filters], bias: [filters]
public final class Conv2D: ActivatedLayer, BlockedLayoutLayer, ReLUMaskKeepingLayer {
    public let name: String
    public let kerasClass = "Conv2D"
    public let inputChannels: Int
    public let filters: Int
    public let kernelSize: Int
    public let stride: Int
    public let padding: Padding
    public let activation: Activation
    public let kernel: Parameter
    public let bias: Parameter?
    public var trainable = true
    /// The context's backend by default; tests switch single layers to the reference kernels.
    public var usesReferenceKernels = false
    /// The layout the last forward wrote its output in (`.blocked16` only for a hand-off inside a model).
    public private(set) var lastOutputLayout = ActivationLayout.nhwc

    private var cachedInput: Tensor?
    private var cachedOutput: Tensor?
    /// In place of `cachedOutput` once only this layer held it (`keepOnlyReLUMask`).
    private var cachedReLUMask: KeptReLUMask?
    /// The input rounded to bf16 by a bf16 training forward, reused by backward-weights.
    private var cachedRoundedInput: BFloat16Copy?

    public init(name: String = "conv2d", inputChannels: Int, filters: Int, kernelSize: Int,
                stride: Int = 1, padding: Padding = .same, activation: Activation = .linear,
                useBias: Bool = true, generator: inout SeededGenerator) {
        precondition(kernelSize >= 1 && (kernelSize % 2 == 1 || padding == .valid),
                     "\(name): kernel size must be odd for 'same' padding, got \(kernelSize)")
        precondition(stride == 1 || stride == 2, "\(name): stride must be 1 or 2, got \(stride)")
        self.name = name
        self.inputChannels = inputChannels
        self.filters = filters
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.activation = activation
        kernel = Parameter(name: "kernel", value: Initializer.glorotUniform(
            shape: [kernelSize, kernelSize, inputChannels, filters], generator: &generator))
        bias = useBias ? Parameter(name: "bias", value: Tensor(zeros: [filters])) : nil
    }

    public var weights: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }

    private func geometry(_ shape: [Int]) -> ConvolutionGeometry {
        ConvolutionGeometry(batch: shape[0], inputHeight: shape[1], inputWidth: shape[2], inputChannels: inputChannels,
                            outputChannels: filters, kernelHeight: kernelSize, kernelWidth: kernelSize,
                            stride: stride, padding: padding)
    }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        guard inputShapes.count == 1, inputShapes[0].count == 4, inputShapes[0][3] == inputChannels else {
            throw ShapeError(layer: name, message: "expected one input [batch, height, width, \(inputChannels)], got \(inputShapes)")
        }
        return geometry(inputShapes[0]).outputShape
    }

    /// An input may come blocked if it runs on oneDNN (not the reference or the 1x1 sgemm kernels),
    /// its channels fill whole blocks of 16, and the passes use it in place: the forward pass in
    /// inference; in training two of the three, so that a pass needing an NHWC copy is outweighed.
    /// Passes not prepared yet count as not, so a model's first step runs all NHWC.
    func takesBlockedInput(_ shapes: [[Int]], outputMayBeBlocked: Bool, training: Bool, context: ComputeContext) -> Bool {
        guard takesBlockedInput(shapes[0], context) else { return false }
        let g = geometry(shapes[0])
        let passes = kernels(for: g, context).takesBlockedInput(g, bias: bias != nil, relu: activation == .relu)
        return training ? [passes.forward, passes.backwardData, passes.backwardWeights].filter { $0 }.count >= 2 : passes.forward
    }

    /// The shape's part of that: kernels that read the blocked layout, whole blocks of 16 channels.
    func takesBlockedInput(_ shape: [Int], _ context: ComputeContext) -> Bool {
        shape.count == 4 && inputChannels % 16 == 0 && kernels(for: geometry(shape), context).handlesBlockedLayout
    }

    private func kernels(for g: ConvolutionGeometry, _ context: ComputeContext) -> any ConvolutionKernels {
        usesReferenceKernels ? ReferenceConvolution(threads: context.threads) : context.backend.convolutionKernels(for: g)
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        forward(inputs, training: training, context: context, allowedOutputLayout: .nhwc)
    }

    /// The output is written blocked only where that is allowed and the forward pass is a blocked
    /// one (Winograd, or direct in oneDNN's layout), so blocked outputs cost no reorder.
    func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext, allowedOutputLayout: ActivationLayout) -> Tensor {
        let x = inputs[0]
        precondition(x.shape.count == 4 && x.shape[3] == inputChannels,
                     "\(name): expected input [batch, height, width, \(inputChannels)], got \(x.shape)")
        precondition(x.layout == .nhwc || takesBlockedInput(x.shape, context), "\(name): a blocked input needs oneDNN kernels")
        let g = geometry(x.shape)
        let fuse = activation == .relu
        let kernels = kernels(for: g, context)
        // Kernels on bf16 operands can keep the input's bf16 copy for backward-weights (training only).
        let keepRounded = training && trainable && kernels.roundsOperands
        let blockedOutput = allowedOutputLayout == .blocked16 && filters % 16 == 0 && activation != .softmax && kernels.handlesBlockedLayout
        var roundedInput: BFloat16Copy?
        var outputLayout = ActivationLayout.nhwc
        var y = Tensor(shape: g.outputShape) { out in
            x.values.withUnsafeBufferPointer { input in
                kernel.value.values.withUnsafeBufferPointer { k in
                    func run(_ b: UnsafePointer<Float>?) {
                        if keepRounded || x.layout == .blocked16 || blockedOutput {
                            (outputLayout, roundedInput) = kernels.forward(
                                g, input: input.baseAddress!, inputLayout: x.layout, kernel: k.baseAddress!, bias: b,
                                fuseReLU: fuse, output: out.baseAddress!, allowingBlockedOutput: blockedOutput,
                                keepingRoundedInput: keepRounded)
                        } else {
                            kernels.forward(g, input: input.baseAddress!, kernel: k.baseAddress!, bias: b, fuseReLU: fuse,
                                            output: out.baseAddress!)
                        }
                    }
                    if let bias {
                        bias.value.values.withUnsafeBufferPointer { run($0.baseAddress!) }
                    } else {
                        run(nil)
                    }
                }
            }
        }
        y.layout = outputLayout
        lastOutputLayout = outputLayout
        if !fuse { activation.apply(&y, threads: context.threads) }  // element-wise (softmax never comes blocked)
        if training {
            cachedInput = x
            cachedOutput = y
            cachedReLUMask = nil
            cachedRoundedInput = roundedInput
        }
        return y
    }

    func keepOnlyReLUMask(threads: Int) {
        guard activation == .relu, let y = cachedOutput else { return }
        cachedReLUMask = KeptReLUMask(of: y, threads: threads)
        cachedOutput = nil
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        if let mask = cachedReLUMask {
            return backward(mask.backward(consume outputGradient, threads: context.threads), reluOutput: nil,
                            needsInputGradients: needsInputGradients, context: context)
        }
        guard let y = cachedOutput, let x = cachedInput else { preconditionFailure("\(name): backward without a training-mode forward") }
        if activation == .relu && cachedRoundedInput != nil && kernels(for: geometry(x.shape), context).handlesBlockedLayout {
            // bf16 oneDNN: the kernels apply ReLU's backward while rounding the gradient.
            return backward(outputGradient, reluOutput: y, needsInputGradients: needsInputGradients, context: context)
        }
        return backward(preActivationGradient: activation.backward(consume outputGradient, output: y, threads: context.threads),
                        needsInputGradients: needsInputGradients, context: context)
    }

    public func backward(preActivationGradient dz: Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        backward(dz, reluOutput: nil, needsInputGradients: needsInputGradients, context: context)
    }

    /// `dz` is the gradient of the pre-activation output, or, with `reluOutput`, of the ReLU's output.
    private func backward(_ dz: Tensor, reluOutput: Tensor?, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let x = cachedInput, let outputLayout = cachedOutput?.layout ?? cachedReLUMask?.layout else {
            preconditionFailure("\(name): backward without a training-mode forward")
        }
        precondition(dz.layout == outputLayout, "\(name): output gradient in \(dz.layout), output in \(outputLayout)")
        let g = geometry(x.shape)
        let kernels = kernels(for: g, context)
        defer { releaseCache() }
        // Kernel and bias gradients (accumulated, if trainable) and dx (if needed) in one call, so
        // the kernels can share work between the two passes.
        func run(inputGradient: UnsafeMutablePointer<Float>?) {
            dz.values.withUnsafeBufferPointer { dzp in
                x.values.withUnsafeBufferPointer { input in
                    kernel.value.values.withUnsafeBufferPointer { k in
                        func pass(kernelGradient: UnsafeMutablePointer<Float>?, biasGradient: UnsafeMutablePointer<Float>?) {
                            func call(_ reluOutput: UnsafePointer<Float>?) {
                                kernels.backward(g, input: input.baseAddress!, inputLayout: x.layout, roundedInput: cachedRoundedInput,
                                                 outputGradient: dzp.baseAddress!, outputLayout: dz.layout, reluOutput: reluOutput,
                                                 kernel: k.baseAddress!, kernelGradient: kernelGradient,
                                                 biasGradient: biasGradient, inputGradient: inputGradient)
                            }
                            if let reluOutput {
                                reluOutput.values.withUnsafeBufferPointer { call($0.baseAddress!) }
                            } else {
                                call(nil)
                            }
                        }
                        guard trainable else { return pass(kernelGradient: nil, biasGradient: nil) }
                        kernel.accumulateGradient { dk in
                            if let bias {
                                bias.accumulateGradient { db in pass(kernelGradient: dk, biasGradient: db) }
                            } else {
                                pass(kernelGradient: dk, biasGradient: nil)
                            }
                        }
                    }
                }
            }
        }
        guard needsInputGradients else {
            run(inputGradient: nil)
            return []
        }
        var dx = Tensor(shape: x.shape) { dxp in run(inputGradient: dxp.baseAddress!) }
        dx.layout = x.layout
        return [dx]
    }

    public func releaseCache() {
        cachedInput = nil
        cachedOutput = nil
        cachedReLUMask = nil
        cachedRoundedInput = nil
    }
}

/// Keras's `Conv2DTranspose`: square kernels and strides of any size, 'valid' (Keras's default) or
/// 'same' padding, output_padding None, optional bias, an activation. Kernel == stride (the U-Net's
/// 2x2 stride-2 upsampling) takes a fast path that also runs in bf16; see `TransposedConvolutionGeometry`.
///
///     x: [batch, height, width, inputChannels] -> y: [batch, outHeight, outWidth, filters]
///        'valid': outHeight = height * stride + max(k - stride, 0);  'same': outHeight = height * stride
///     kernel: [k, k, filters, inputChannels]  (Keras stores transposed kernels output-first), bias: [filters]
public final class Conv2DTranspose: ActivatedLayer, ReLUMaskKeepingLayer {
    public let name: String
    public let kerasClass = "Conv2DTranspose"
    public let inputChannels: Int
    public let filters: Int
    public let kernelSize: Int
    public let stride: Int
    public let padding: Padding
    public let activation: Activation
    public let kernel: Parameter
    public let bias: Parameter?
    public var trainable = true

    private var cachedInput: Tensor?
    private var cachedOutput: Tensor?
    /// In place of `cachedOutput` once only this layer held it (`keepOnlyReLUMask`).
    private var cachedReLUMask: KeptReLUMask?

    public init(name: String = "conv2d_transpose", inputChannels: Int, filters: Int, kernelSize: Int = 2,
                stride: Int = 2, padding: Padding = .valid, activation: Activation = .linear, useBias: Bool = true,
                generator: inout SeededGenerator) {
        precondition(kernelSize >= 1 && stride >= 1, "\(name): kernel size and stride must be >= 1, got \(kernelSize), \(stride)")
        self.name = name
        self.inputChannels = inputChannels
        self.filters = filters
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.activation = activation
        kernel = Parameter(name: "kernel", value: Initializer.glorotUniform(
            shape: [kernelSize, kernelSize, filters, inputChannels], generator: &generator))
        bias = useBias ? Parameter(name: "bias", value: Tensor(zeros: [filters])) : nil
    }

    public var weights: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }

    private func geometry(_ shape: [Int]) -> TransposedConvolutionGeometry {
        TransposedConvolutionGeometry(batch: shape[0], height: shape[1], width: shape[2], inputChannels: inputChannels,
                                      outputChannels: filters, kernelSize: kernelSize, stride: stride, padding: padding)
    }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        guard inputShapes.count == 1, inputShapes[0].count == 4, inputShapes[0][3] == inputChannels else {
            throw ShapeError(layer: name, message: "expected one input [batch, height, width, \(inputChannels)], got \(inputShapes)")
        }
        return geometry(inputShapes[0]).outputShape
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        forward(inputs, training: training, context: context, allowedOutputLayout: .nhwc)
    }

    /// The output is written blocked only where that is allowed and the forward pass is a blocked
    /// one (Winograd, or direct in oneDNN's layout), so blocked outputs cost no reorder.
    func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext, allowedOutputLayout: ActivationLayout) -> Tensor {
        let x = inputs[0]
        precondition(x.shape.count == 4 && x.shape[3] == inputChannels,
                     "\(name): expected input [batch, height, width, \(inputChannels)], got \(x.shape)")
        let g = geometry(x.shape)
        let fuse = activation == .relu
        var y = Tensor(shape: g.outputShape) { out in
            x.values.withUnsafeBufferPointer { input in
                kernel.value.values.withUnsafeBufferPointer { k in
                    if let bias {
                        bias.value.values.withUnsafeBufferPointer { b in
                            transposedConvolutionForward(g, input: input.baseAddress!, kernel: k.baseAddress!,
                                                         bias: b.baseAddress!, output: out.baseAddress!, fuseReLU: fuse,
                                                         context: context)
                        }
                    } else {
                        transposedConvolutionForward(g, input: input.baseAddress!, kernel: k.baseAddress!,
                                                     bias: nil, output: out.baseAddress!, fuseReLU: fuse,
                                                     context: context)
                    }
                }
            }
        }
        if !fuse { activation.apply(&y, threads: context.threads) }
        if training {
            cachedInput = x
            cachedOutput = y
            cachedReLUMask = nil
        }
        return y
    }

    /// Only where the gather's runs start at whole mask words: filters a multiple of 16.
    func keepOnlyReLUMask(threads: Int) {
        guard activation == .relu, filters % 16 == 0, let y = cachedOutput else { return }
        cachedReLUMask = KeptReLUMask(of: y, threads: threads)
        cachedOutput = nil
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        if let mask = cachedReLUMask {
            // The kernels apply ReLU's backward while gathering the gradient, from the mask.
            return mask.bits.withUnsafeBufferPointer {
                backward(outputGradient, reluOutput: .mask($0.baseAddress!), needsInputGradients: needsInputGradients, context: context)
            }
        }
        guard let y = cachedOutput else { preconditionFailure("\(name): backward without a training-mode forward") }
        if activation == .relu {
            // The kernels apply ReLU's backward while gathering the gradient.
            return y.values.withUnsafeBufferPointer {
                backward(outputGradient, reluOutput: .values($0.baseAddress!), needsInputGradients: needsInputGradients,
                         context: context)
            }
        }
        return backward(preActivationGradient: activation.backward(consume outputGradient, output: y, threads: context.threads),
                        needsInputGradients: needsInputGradients, context: context)
    }

    public func backward(preActivationGradient dz: Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        backward(dz, reluOutput: nil, needsInputGradients: needsInputGradients, context: context)
    }

    /// `dz` is the gradient of the pre-activation output, or, with `reluOutput`, of the ReLU's output.
    private func backward(_ dz: Tensor, reluOutput: ReLUOutput?, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let x = cachedInput else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        let g = geometry(x.shape)
        // Every value of dx is written by the kernels: no need to zero it first.
        var dx = needsInputGradients ? Tensor(shape: x.shape) { _ in } : nil
        let weightGradients = trainable
        x.values.withUnsafeBufferPointer { input in
            kernel.value.values.withUnsafeBufferPointer { k in
                dz.values.withUnsafeBufferPointer { dzp in
                    withOptionalPointer(&dx) { dxp in
                        withOptionalGradient(weightGradients ? kernel : nil) { dk in
                            withOptionalGradient(weightGradients ? bias : nil) { db in
                                transposedConvolutionBackward(g, input: input.baseAddress!, kernel: k.baseAddress!,
                                                              outputGradient: dzp.baseAddress!, inputGradient: dxp,
                                                              kernelGradient: dk, biasGradient: db, reluOutput: reluOutput,
                                                              context: context)
                            }
                        }
                    }
                }
            }
        }
        return dx.map { [$0] } ?? []
    }

    public func releaseCache() {
        cachedInput = nil
        cachedOutput = nil
        cachedReLUMask = nil
    }
}

/// A ReLU-activated output kept as its `reluMask` for backward (the output's layout, 1/32 of its bytes).
struct KeptReLUMask {
    let bits: [UInt16]
    let count: Int
    let layout: ActivationLayout

    init(of output: Tensor, threads: Int) {
        count = output.count
        bits = output.values.withUnsafeBufferPointer { values in
            [UInt16](unsafeUninitializedCapacity: (values.count + 15) / 16) { mask, initialized in
                reluMask(of: values.baseAddress!, count: values.count, into: mask.baseAddress!, threads: threads)
                initialized = mask.count
            }
        }
        layout = output.layout
    }

    /// d(loss)/d(pre-activation) from d(loss)/d(output), in the gradient's own buffer.
    func backward(_ outputGradient: consuming Tensor, threads: Int) -> Tensor {
        var dz = consume outputGradient
        precondition(dz.count == count, "ReLU mask of \(count) values for a gradient of \(dz.count)")
        dz.values.withUnsafeMutableBufferPointer { gradient in
            bits.withUnsafeBufferPointer {
                reluBackwardInPlace(gradient: gradient.baseAddress!, mask: $0.baseAddress!, count: gradient.count, threads: threads)
            }
        }
        return dz
    }
}

/// Calls body with a pointer to the tensor's values, or nil when there is no tensor.
func withOptionalPointer<R>(_ tensor: inout Tensor?, _ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
    if tensor == nil { return body(nil) }
    return tensor!.values.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}

/// Calls body with the parameter's gradient buffer (allocated if needed), or nil.
func withOptionalGradient<R>(_ parameter: Parameter?, _ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
    guard let parameter else { return body(nil) }
    var result: R?
    parameter.accumulateGradient { result = body($0) }
    return result!
}
