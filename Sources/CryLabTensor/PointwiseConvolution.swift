/// 1x1, stride-1 convolutions are plain matrix products over pixels, run by the backend's `matrices`.
/// (oneDNN's 1x1 backward-data kernel for the U-Net's 32 -> 1 output layer ran at 0.3 GFLOP/s.)
///
///     x: [batch * height * width, inputChannels],  kernel: [inputChannels, outputChannels]
///     y: [batch * height * width, outputChannels]
public struct PointwiseConvolution: ConvolutionKernels {
    public let matrices: any MatrixKernels
    /// Threads for the bias gradient's column sums.
    public let threads: Int

    public init(matrices: any MatrixKernels, threads: Int) {
        self.matrices = matrices
        self.threads = threads
    }

    public static func handles(_ g: ConvolutionGeometry) -> Bool {
        g.kernelHeight == 1 && g.kernelWidth == 1 && g.stride == 1
    }

    private func pixels(_ g: ConvolutionGeometry) -> Int { g.batch * g.inputHeight * g.inputWidth }

    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, fuseReLU: Bool, output: UnsafeMutablePointer<Float>) {
        precondition(Self.handles(g), "pointwise convolution got \(g)")
        let rows = pixels(g), o = g.outputChannels
        matrices.matrixMultiply(m: rows, n: o, k: g.inputChannels, a: input, b: kernel, c: output)
        guard bias != nil || fuseReLU else { return }
        for r in 0..<rows {
            let row = output + r * o
            for c in 0..<o {
                var v = row[c] + (bias?[c] ?? 0)
                if fuseReLU { v = max(v, 0) }
                row[c] = v
            }
        }
    }

    public func backwardData(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                             kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>) {
        // dx [rows, in] = dy [rows, out] * kernel^T [out, in]
        matrices.matrixMultiply(m: pixels(g), n: g.inputChannels, k: g.outputChannels, a: outputGradient,
                                b: kernel, transposeB: true, c: inputGradient)
    }

    public func backwardWeights(_ g: ConvolutionGeometry, input: UnsafePointer<Float>,
                                outputGradient: UnsafePointer<Float>,
                                kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?) {
        // dKernel [in, out] += x^T [in, rows] * dy [rows, out]
        matrices.matrixMultiply(m: g.inputChannels, n: g.outputChannels, k: pixels(g), a: input, transposeA: true,
                                b: outputGradient, c: kernelGradient, beta: 1)
        if let biasGradient {
            addColumnSums(outputGradient, rows: pixels(g), columns: g.outputChannels, into: biasGradient, threads: threads)
        }
    }
}
