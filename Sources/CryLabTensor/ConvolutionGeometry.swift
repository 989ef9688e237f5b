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

/// The three passes of a convolution. Implemented by `ReferenceConvolution` (portable, im2col +
/// sgemm) and `DNNLConvolution` (oneDNN direct kernels). Pointers follow `ConvolutionGeometry`'s shapes.
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
}

/// The kernels layers use: oneDNN (1x1 stride-1 convolutions as one sgemm) unless a test or a
/// benchmark chooses the reference path.
public enum ConvolutionBackend: String, Sendable {
    case oneDNN, reference

    public func kernels(for g: ConvolutionGeometry) -> any ConvolutionKernels {
        switch self {
        case .oneDNN: PointwiseConvolution.handles(g) ? PointwiseConvolution() : DNNLConvolution.shared
        case .reference: ReferenceConvolution()
        }
    }
}
