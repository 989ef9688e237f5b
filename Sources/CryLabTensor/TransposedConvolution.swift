/// Transposed convolution whose kernel equals its stride (the U-Net's 2x2, stride-2 upsampling).
/// In `ConvolutionPrecision.bf16` the products run on bfloat16 operands with fp32 accumulation
/// (`DNNLConvolution.bfloat16MatrixMultiply`); the scatter, gather and bias stay fp32.
/// Windows then never overlap, so each input pixel paints its own kernelSize x kernelSize patch
/// and the whole pass is one sgemm plus a scatter:
///
///     x:      [batch, height, width, inputChannels]
///     kernel: [kernelSize, kernelSize, outputChannels, inputChannels]      (Keras layout)
///     y:      [batch, height*kernelSize, width*kernelSize, outputChannels]
///     y[b, h*k+i, w*k+j, o] = Σ_c x[b, h, w, c] * kernel[i, j, o, c] + bias[o]
public struct TransposedConvolutionGeometry: Hashable, Sendable {
    public let batch: Int, height: Int, width: Int, inputChannels: Int, outputChannels: Int, kernelSize: Int

    public init(batch: Int, height: Int, width: Int, inputChannels: Int, outputChannels: Int, kernelSize: Int) {
        self.batch = batch
        self.height = height
        self.width = width
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
    }

    public var outputShape: [Int] { [batch, height * kernelSize, width * kernelSize, outputChannels] }
    var pixels: Int { batch * height * width }
    /// Columns of the patch matrix: [kernelSize, kernelSize, outputChannels].
    var patchLength: Int { kernelSize * kernelSize * outputChannels }
    public var forwardFlops: Double { 2 * Double(pixels) * Double(patchLength * inputChannels) }
}

/// patches [pixels, k*k*out] <-> y [batch, height*k, width*k, out]; `gather` reads y into patches.
private func movePatches(_ g: TransposedConvolutionGeometry, patches: UnsafeMutablePointer<Float>,
                         image: UnsafeMutablePointer<Float>, gather: Bool) {
    let k = g.kernelSize, o = g.outputChannels
    let outputWidth = g.width * k
    for b in 0..<g.batch {
        for h in 0..<g.height {
            for w in 0..<g.width {
                let patch = patches + ((b * g.height + h) * g.width + w) * g.patchLength
                for i in 0..<k {
                    let row = image + ((b * g.height * k + h * k + i) * outputWidth + w * k) * o
                    let run = patch + i * k * o
                    if gather { run.update(from: row, count: k * o) } else { row.update(from: run, count: k * o) }
                }
            }
        }
    }
}

public func transposedConvolutionForward(_ g: TransposedConvolutionGeometry, input: UnsafePointer<Float>,
                                         kernel: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                         output: UnsafeMutablePointer<Float>) {
    let patches = UnsafeMutablePointer<Float>.allocate(capacity: g.pixels * g.patchLength)
    defer { patches.deallocate() }
    // patches [pixels, k*k*out] = x [pixels, in] * kernel^T [in, k*k*out]
    if !(ConvolutionPrecision.current == .bf16 && DNNLConvolution.shared.bfloat16MatrixMultiply(
        m: g.pixels, n: g.patchLength, k: g.inputChannels, a: .float(input), b: .float(kernel), transposeB: true, c: patches)) {
        matrixMultiply(m: g.pixels, n: g.patchLength, k: g.inputChannels, a: input, b: kernel, transposeB: true, c: patches)
    }
    movePatches(g, patches: patches, image: output, gather: false)
    if let bias {
        let total = g.pixels * g.patchLength
        let o = g.outputChannels
        var i = 0
        while i < total {
            for c in 0..<o { output[i + c] += bias[c] }
            i += o
        }
    }
}

/// inputGradient (overwritten) and kernel/bias gradients (accumulated) from dy.
public func transposedConvolutionBackward(_ g: TransposedConvolutionGeometry, input: UnsafePointer<Float>,
                                          kernel: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                                          inputGradient: UnsafeMutablePointer<Float>?,
                                          kernelGradient: UnsafeMutablePointer<Float>?,
                                          biasGradient: UnsafeMutablePointer<Float>?) {
    let patches = UnsafeMutablePointer<Float>.allocate(capacity: g.pixels * g.patchLength)
    defer { patches.deallocate() }
    movePatches(g, patches: patches, image: UnsafeMutablePointer(mutating: outputGradient), gather: true)
    if ConvolutionPrecision.current == .bf16 {
        // dPatches is read by both products: round it to bf16 once.
        let dnnl = DNNLConvolution.shared
        let roundedPatches = MatrixOperand.bfloat16(dnnl.bfloat16Copy(patches, count: g.pixels * g.patchLength))
        var done = true
        if let inputGradient {
            done = dnnl.bfloat16MatrixMultiply(m: g.pixels, n: g.inputChannels, k: g.patchLength, a: roundedPatches,
                                               b: .float(kernel), c: inputGradient)
        }
        if done, let kernelGradient {
            done = dnnl.bfloat16MatrixMultiply(m: g.patchLength, n: g.inputChannels, k: g.pixels, a: roundedPatches,
                                               transposeA: true, b: .float(input), c: kernelGradient, accumulate: true)
        }
        if done {
            if let biasGradient {
                addColumnSums(outputGradient, rows: g.pixels * g.kernelSize * g.kernelSize, columns: g.outputChannels, into: biasGradient)
            }
            return
        }
        // oneDNN has no fast bf16 kernel for a product: redo in fp32 (dx is overwritten, and the
        // accumulating kernel-gradient product only fails before touching dKernel).
    }
    if let inputGradient {
        // dx [pixels, in] = dPatches [pixels, k*k*out] * kernel [k*k*out, in]
        matrixMultiply(m: g.pixels, n: g.inputChannels, k: g.patchLength, a: patches, b: kernel, c: inputGradient)
    }
    if let kernelGradient {
        // dKernel [k*k*out, in] += dPatches^T [k*k*out, pixels] * x [pixels, in]
        matrixMultiply(m: g.patchLength, n: g.inputChannels, k: g.pixels, a: patches, transposeA: true,
                       b: input, c: kernelGradient, beta: 1)
    }
    if let biasGradient {
        addColumnSums(outputGradient, rows: g.pixels * g.kernelSize * g.kernelSize, columns: g.outputChannels, into: biasGradient)
    }
}
