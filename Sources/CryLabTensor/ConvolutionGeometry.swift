/// Keras padding modes.
public enum Padding: String, Codable, Sendable {
    /// Output size ceil(input / stride); the extra row/column of padding goes at the bottom/right.
    case same
    /// No padding; output size floor((input - kernel) / stride) + 1.
    case valid
}

/// Everything that fixes the shapes of one 2-D convolution. Also the cache key of oneDNN primitives.
///
///     input:  [batch, inputHeight, inputWidth, inputChannels]
///     kernel: [kernelHeight, kernelWidth, inputChannels, outputChannels]
///     output: [batch, outputHeight, outputWidth, outputChannels]
public struct ConvolutionGeometry: Hashable, Sendable, CustomStringConvertible {
    public let batch: Int
    public let inputHeight: Int, inputWidth: Int, inputChannels: Int
    public let outputChannels: Int
    public let kernelHeight: Int, kernelWidth: Int
    public let stride: Int
    public let padTop: Int, padLeft: Int, padBottom: Int, padRight: Int
    public let outputHeight: Int, outputWidth: Int

    public init(batch: Int, inputHeight: Int, inputWidth: Int, inputChannels: Int,
                outputChannels: Int, kernelHeight: Int, kernelWidth: Int,
                stride: Int, padding: Padding) {
        self.batch = batch
        self.inputHeight = inputHeight
        self.inputWidth = inputWidth
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelHeight = kernelHeight
        self.kernelWidth = kernelWidth
        self.stride = stride
        func split(input: Int, kernel: Int) -> (before: Int, after: Int, output: Int) {
            switch padding {
            case .valid:
                return (0, 0, (input - kernel) / stride + 1)
            case .same:
                let output = (input + stride - 1) / stride
                let total = max((output - 1) * stride + kernel - input, 0)
                return (total / 2, total - total / 2, output)
            }
        }
        let vertical = split(input: inputHeight, kernel: kernelHeight)
        let horizontal = split(input: inputWidth, kernel: kernelWidth)
        padTop = vertical.before
        padBottom = vertical.after
        outputHeight = vertical.output
        padLeft = horizontal.before
        padRight = horizontal.after
        outputWidth = horizontal.output
    }

    public var inputShape: [Int] { [batch, inputHeight, inputWidth, inputChannels] }
    public var outputShape: [Int] { [batch, outputHeight, outputWidth, outputChannels] }
    public var kernelShape: [Int] { [kernelHeight, kernelWidth, inputChannels, outputChannels] }

    /// Multiply-adds x 2 of one forward pass.
    public var forwardFlops: Double {
        2 * Double(batch * outputHeight * outputWidth) * Double(kernelHeight * kernelWidth * inputChannels * outputChannels)
    }

    public var description: String {
        "conv \(inputShape) * \(kernelShape) stride \(stride) pad (\(padTop),\(padLeft),\(padBottom),\(padRight)) -> \(outputShape)"
    }
}

/// The passes of a convolution. Implemented by `ReferenceConvolution` (portable, im2col +
/// OpenBLAS), `PointwiseConvolution` (1x1 as one product) and a backend's own kernels (CryLabOneDNN's
/// `DNNLConvolution`). Pointers follow `ConvolutionGeometry`'s shapes.
///
/// The first four requirements are all a kernel must provide. The others let a backend share work
/// across passes (bf16 copies kept from forward, ReLU's backward fused into rounding) and read and
/// write `ActivationLayout.blocked16`; their defaults take NHWC only and share nothing.
public protocol ConvolutionKernels: Sendable {
    /// output = conv(input, kernel) + bias, then ReLU if `fuseReLU`. Overwrites `output`.
    func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                 bias: UnsafePointer<Float>?, fuseReLU: Bool, output: UnsafeMutablePointer<Float>)
    /// inputGradient = d(loss)/d(input) given d(loss)/d(output). Overwrites `inputGradient`.
    func backwardData(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                      kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>)
    /// kernelGradient += d(loss)/d(kernel); biasGradient += d(loss)/d(bias) when given.
    func backwardWeights(_ g: ConvolutionGeometry, input: UnsafePointer<Float>,
                         outputGradient: UnsafePointer<Float>,
                         kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?)
    /// backwardWeights (if `kernelGradient`) then backwardData (if `inputGradient`) from one output
    /// gradient; kernels may share work between the two (oneDNN's bf16 path rounds it once).
    func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                  kernel: UnsafePointer<Float>, kernelGradient: UnsafeMutablePointer<Float>?,
                  biasGradient: UnsafeMutablePointer<Float>?, inputGradient: UnsafeMutablePointer<Float>?)

    /// Whether these kernels read and write `ActivationLayout.blocked16` operands.
    var handlesBlockedLayout: Bool { get }
    /// Whether a training forward may keep its input rounded to bf16 (`keepingRoundedInput`) for
    /// backward-weights: true where some pass may run on bf16 operands.
    var roundsOperands: Bool { get }
    /// `forward` with `input` in `inputLayout`; with `allowingBlockedOutput` the kernels may write
    /// `output` in `.blocked16` where that spares a reorder, and return the layout written. With
    /// `keepingRoundedInput`, a pass on bf16 operands returns the input's bf16 copy for `backward`.
    func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout,
                 kernel: UnsafePointer<Float>, bias: UnsafePointer<Float>?, fuseReLU: Bool,
                 output: UnsafeMutablePointer<Float>, allowingBlockedOutput: Bool,
                 keepingRoundedInput: Bool) -> (layout: ActivationLayout, rounded: BFloat16Copy?)
    /// `backward` with the layouts of `input` (and `inputGradient`) and of `outputGradient`,
    /// `roundedInput` as `forward(keepingRoundedInput:)` returned it, and, with `reluOutput`, the
    /// convolution followed by ReLU of that output: `outputGradient` is then the ReLU output's gradient.
    func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout,
                  roundedInput: BFloat16Copy?, outputGradient: UnsafePointer<Float>,
                  outputLayout: ActivationLayout, reluOutput: UnsafePointer<Float>?, kernel: UnsafePointer<Float>,
                  kernelGradient: UnsafeMutablePointer<Float>?, biasGradient: UnsafeMutablePointer<Float>?,
                  inputGradient: UnsafeMutablePointer<Float>?)
    /// Which passes of `g` read the layer's input (or write its gradient) in `.blocked16` where it
    /// lies, as far as the kernels know now; a model hands a blocked input only to layers it saves
    /// reorders in.
    func takesBlockedInput(_ g: ConvolutionGeometry, bias: Bool, relu: Bool)
        -> (forward: Bool, backwardData: Bool, backwardWeights: Bool)
}

extension ConvolutionKernels {
    public func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         kernel: UnsafePointer<Float>, kernelGradient: UnsafeMutablePointer<Float>?,
                         biasGradient: UnsafeMutablePointer<Float>?, inputGradient: UnsafeMutablePointer<Float>?) {
        if let kernelGradient {
            backwardWeights(g, input: input, outputGradient: outputGradient, kernelGradient: kernelGradient, biasGradient: biasGradient)
        }
        if let inputGradient {
            backwardData(g, outputGradient: outputGradient, kernel: kernel, inputGradient: inputGradient)
        }
    }

    public var handlesBlockedLayout: Bool { false }
    public var roundsOperands: Bool { false }

    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout,
                        kernel: UnsafePointer<Float>, bias: UnsafePointer<Float>?, fuseReLU: Bool,
                        output: UnsafeMutablePointer<Float>, allowingBlockedOutput: Bool,
                        keepingRoundedInput: Bool) -> (layout: ActivationLayout, rounded: BFloat16Copy?) {
        precondition(inputLayout == .nhwc, "\(Self.self) reads NHWC inputs only")
        forward(g, input: input, kernel: kernel, bias: bias, fuseReLU: fuseReLU, output: output)
        return (.nhwc, nil)
    }

    public func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout,
                         roundedInput: BFloat16Copy?, outputGradient: UnsafePointer<Float>,
                         outputLayout: ActivationLayout, reluOutput: UnsafePointer<Float>?, kernel: UnsafePointer<Float>,
                         kernelGradient: UnsafeMutablePointer<Float>?, biasGradient: UnsafeMutablePointer<Float>?,
                         inputGradient: UnsafeMutablePointer<Float>?) {
        precondition(inputLayout == .nhwc && outputLayout == .nhwc && reluOutput == nil,
                     "\(Self.self) takes NHWC operands and no fused ReLU")
        backward(g, input: input, outputGradient: outputGradient, kernel: kernel, kernelGradient: kernelGradient,
                 biasGradient: biasGradient, inputGradient: inputGradient)
    }

    public func takesBlockedInput(_ g: ConvolutionGeometry, bias: Bool, relu: Bool)
        -> (forward: Bool, backwardData: Bool, backwardWeights: Bool) {
        (false, false, false)
    }
}

/// What layers compute with: the convolution kernels for each shape and the matrix products.
/// CryLabOneDNN implements it on oneDNN; layers name only this protocol.
public protocol ComputeBackend: Sendable {
    /// The kernels for convolutions of `g`'s shape.
    func convolutionKernels(for g: ConvolutionGeometry) -> any ConvolutionKernels
    /// Matrix products (Dense layers, 1x1 and transposed convolutions).
    var matrices: any MatrixKernels { get }
    /// The same settings in `precision`, on a backend of its own: what `ConvolutionPrecision.fast`
    /// times a whole step in when it compares its per-pass choices with one precision throughout.
    /// Nil where the backend has no other precisions.
    func sibling(precision: ConvolutionPrecision) -> ComputeContext?
    /// The fast mode's decision named `key` among `names`: one made earlier (in this process, or
    /// kept on this machine), else the index of the least of `timing()` (each candidate's time),
    /// which is then kept under `key`.
    func fastModeDecision(_ key: String, among names: [String], timing: () -> [Double]) -> Int
    /// Gives back the memory the backend reuses between calls (it is allocated again when next
    /// needed): after a whole-step trial, for the contexts the model no longer runs in.
    func releaseReusedMemory()
    /// Allocates again, at the sizes they had, the reused buffers `releaseReusedMemory` gave back,
    /// and touches them: before a timed run, so that the run's time does not include it.
    func restoreReusedMemory()
}

extension ComputeBackend {
    public func sibling(precision: ConvolutionPrecision) -> ComputeContext? { nil }
    public func fastModeDecision(_ key: String, among names: [String], timing: () -> [Double]) -> Int {
        let times = timing()
        return times.indices.min { times[$0] < times[$1] }!
    }
    public func releaseReusedMemory() {}
    public func restoreReusedMemory() {}
}
