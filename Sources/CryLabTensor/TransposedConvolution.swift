
/// Keras's transposed convolution (`Conv2DTranspose`, output_padding None): square kernels and strides
/// of any size, 'valid' or 'same' padding. Every input pixel adds its kernel-sized patch, stride apart:
///
///     x:      [batch, height, width, inputChannels]
///     kernel: [kernelSize, kernelSize, outputChannels, inputChannels]      (Keras layout)
///     full[b, h*stride+i, w*stride+j, o] += Σ_c x[b, h, w, c] * kernel[i, j, o, c]
///     y:      [batch, outputHeight, outputWidth, outputChannels]
///             y[b, r, s, o] = full[b, r + crop, s + crop, o] + bias[o]   (full is zero past its end)
///     'valid': outputHeight = height*stride + max(k - stride, 0), crop = 0
///              (= (height-1)*stride + k for k >= stride; Keras keeps stride - k zero rows at the end for k < stride)
///     'same':  outputHeight = height*stride, crop = max(k - stride, 0) / 2 (the odd row/column is cropped
///              at the bottom/right, as TensorFlow's conv2d_transpose does)
///
/// Kernel == stride (the U-Net's 2x2, stride-2 upsampling): windows never overlap and 'same' crops
/// nothing, so each input pixel paints its own k x k patch and the whole pass is one sgemm plus a
/// copy. In `ConvolutionPrecision.bf16` that path runs its products on bfloat16 operands with fp32
/// accumulation (`MatrixKernels.bfloat16Multiply`); the scatter, gather and bias stay fp32.
/// In `.fast` it does so if its forward product timed faster in bf16 than in fp32 on this machine.
/// Every other kernel/stride pair runs in fp32 whatever the precision: an sgemm, then a scatter-add
/// of overlapping patches (col2im); backward gathers dy into patches (im2col), then two sgemms.
public struct TransposedConvolutionGeometry: Hashable, Sendable {
    public let batch: Int, height: Int, width: Int, inputChannels: Int, outputChannels: Int, kernelSize: Int
    public let stride: Int
    public let padding: Padding

    /// Kernel == stride, 'valid' padding (the U-Net's upsampling).
    public init(batch: Int, height: Int, width: Int, inputChannels: Int, outputChannels: Int, kernelSize: Int) {
        self.init(batch: batch, height: height, width: width, inputChannels: inputChannels, outputChannels: outputChannels,
                  kernelSize: kernelSize, stride: kernelSize, padding: .valid)
    }

    public init(batch: Int, height: Int, width: Int, inputChannels: Int, outputChannels: Int, kernelSize: Int,
                stride: Int, padding: Padding) {
        precondition(kernelSize >= 1 && stride >= 1, "transposed convolution: kernel \(kernelSize), stride \(stride)")
        self.batch = batch
        self.height = height
        self.width = width
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
    }

    /// Keras's deconv_output_length: 'valid' length * stride + max(kernelSize - stride, 0); 'same' length * stride.
    func outputLength(_ length: Int) -> Int {
        padding == .same ? length * stride : length * stride + max(kernelSize - stride, 0)
    }
    public var outputHeight: Int { outputLength(height) }
    public var outputWidth: Int { outputLength(width) }
    public var outputShape: [Int] { [batch, outputHeight, outputWidth, outputChannels] }
    /// Rows/columns cropped from the top/left of the full output ('same' only).
    public var paddingBefore: Int { padding == .same ? max(kernelSize - stride, 0) / 2 : 0 }
    /// Patches do not overlap and nothing is cropped: the fast path.
    var isKernelEqualToStride: Bool { kernelSize == stride }
    var pixels: Int { batch * height * width }
    var outputPixels: Int { batch * outputHeight * outputWidth }
    /// Columns of the patch matrix: [kernelSize, kernelSize, outputChannels].
    var patchLength: Int { kernelSize * kernelSize * outputChannels }
    public var forwardFlops: Double { 2 * Double(pixels) * Double(patchLength * inputChannels) }
}

/// Kernel == stride: patches [pixels, k*k*out] <-> y [batch, height*k, width*k, out]; `gather` reads y into
/// patches. Scattering adds `bias` [out] on the way, if given, then applies ReLU if `relu`; gathering
/// applies ReLU's backward from `reluOutput`, if given (the output laid out as y, or its mask).
/// With `biasGradient`, gathering also adds the sum of what it gathered per output channel there
/// (dBias [out] += Σ dy over pixels), in Float per input row, then in Double per chunk of rows,
/// the chunks in order. Input rows are split across the compute threads.
private func movePatches(_ g: TransposedConvolutionGeometry, patches: UnsafeMutablePointer<Float>,
                         image: UnsafeMutablePointer<Float>, gather: Bool, bias: UnsafePointer<Float>? = nil,
                         relu: Bool = false, reluOutput: ReLUOutput? = nil,
                         biasGradient: UnsafeMutablePointer<Float>? = nil, threads: Int) {
    let k = g.kernelSize, o = g.outputChannels
    let outputWidth = g.width * k
    let rows = g.batch * g.height
    let chunks = chunkCount(rows, minimumChunk: 8, threads: threads)
    // The bias repeated for the k pixels of a run, [k*out].
    let tiledBias = bias.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: k * o) }
    if let bias, let tiledBias { for c in 0..<(k * o) { tiledBias[c] = bias[c % o] } }
    // Per chunk: the Double sums per patch column [k*k*out], then one row's Float sums [k*k*out].
    let columnSums = biasGradient.map { _ in UnsafeMutablePointer<Double>.allocate(capacity: chunks * g.patchLength) }
    let rowSums = biasGradient.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: chunks * g.patchLength) }
    columnSums?.initialize(repeating: 0, count: chunks * g.patchLength)
    defer {
        tiledBias?.deallocate()
        columnSums?.deallocate()
        rowSums?.deallocate()
    }
    parallelChunks(rows, chunks: chunks) { chunk, inputRows in
        let rowSum = rowSums.map { $0 + chunk * g.patchLength }
        for inputRow in inputRows {
            rowSum?.initialize(repeating: 0, count: g.patchLength)
            let (b, h) = inputRow.quotientAndRemainder(dividingBy: g.height)
            for w in 0..<g.width {
                let patch = patches + ((b * g.height + h) * g.width + w) * g.patchLength
                for i in 0..<k {
                    let offset = ((b * g.height * k + h * k + i) * outputWidth + w * k) * o
                    let row = image + offset
                    let run = patch + i * k * o
                    if gather {
                        let sums = rowSum.map { $0 + i * k * o }
                        // offset is a multiple of out, a multiple of 16 where a mask is given (Conv2DTranspose).
                        switch reluOutput {
                        case nil:
                            gatherRun(from: row, into: run, count: k * o, sums: sums, zeroes: { _ in nil }, zeroesValue: { _ in false })
                        case let .values(output):
                            let y = output + offset
                            gatherRun(from: row, into: run, count: k * o, sums: sums,
                                      zeroes: { UnsafeRawPointer(y).loadUnaligned(fromByteOffset: $0, as: SIMD16<Float>.self) .<= 0 },
                                      zeroesValue: { y[$0] <= 0 })
                        case let .mask(bits):
                            let words = bits + offset / 16
                            gatherRun(from: row, into: run, count: k * o, sums: sums, zeroes: { reluMaskZeros(words[$0 / 64]) },
                                      zeroesValue: { words[$0 / 16] & (1 << ($0 % 16)) == 0 })
                        }
                    } else {
                        scatterRun(run, bias: tiledBias, relu: relu, into: row, count: k * o)
                    }
                }
            }
            if let rowSum, let columnSums {
                let sums = columnSums + chunk * g.patchLength
                for c in 0..<g.patchLength { sums[c] += Double(rowSum[c]) }
            }
        }
    }
    if let biasGradient, let columnSums {
        // Column (i, j, channel) of the patches belongs to output channel `channel`.
        for c in 0..<o {
            var total = 0.0
            for chunk in 0..<chunks {
                for position in 0..<(k * k) { total += columnSums[chunk * g.patchLength + position * o + c] }
            }
            biasGradient[c] += Float(total)
        }
    }
}

/// What ReLU's backward reads of a forward pass's output (laid out as y): the output itself, or
/// its `reluMask` (one bit per value, 16 to a word).
public enum ReLUOutput {
    case values(UnsafePointer<Float>)
    case mask(UnsafePointer<UInt16>)

    /// gradient [count] through ReLU's backward, in place.
    public func backward(gradient: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
        switch self {
        case let .values(output): reluBackwardInPlace(gradient: gradient, output: output, count: count, threads: threads)
        case let .mask(bits): reluBackwardInPlace(gradient: gradient, mask: bits, count: count, threads: threads)
        }
    }
}

/// One run of `movePatches`'s gather: run = row, or 0 where ReLU's backward zeroes it (the lanes
/// `zeroes(byteOffset)` gives, nil for none; value by value, `zeroesValue(index)`); sums += run.
/// 16 lanes at a time, then one value at a time for the rest: the same operations per value either
/// way. Inlined into each caller, so that no lane block pays for a call or a test of the mask's kind.
@inline(__always)
private func gatherRun(from row: UnsafePointer<Float>, into run: UnsafeMutablePointer<Float>, count: Int,
                       sums: UnsafeMutablePointer<Float>?, zeroes: (Int) -> SIMDMask<SIMD16<Int32>>?,
                       zeroesValue: (Int) -> Bool) {
    typealias Vector = SIMD16<Float>
    let (from, to) = (UnsafeRawPointer(row), UnsafeMutableRawPointer(run))
    let vectorEnd = count - count % Vector.scalarCount
    for offset in stride(from: 0, to: vectorEnd * 4, by: 64) {
        var v = from.loadUnaligned(fromByteOffset: offset, as: Vector.self)
        if let lanes = zeroes(offset) { v.replace(with: 0, where: lanes) }
        to.storeBytes(of: v, toByteOffset: offset, as: Vector.self)
        if let sums {
            let total = UnsafeMutableRawPointer(sums)
            total.storeBytes(of: total.loadUnaligned(fromByteOffset: offset, as: Vector.self) + v, toByteOffset: offset, as: Vector.self)
        }
    }
    for c in vectorEnd..<count {
        run[c] = zeroesValue(c) ? 0 : row[c]
        sums?[c] += run[c]
    }
}

/// One run of `movePatches`'s scatter: row = run + bias (`bias` tiled to the run), then max(·, 0)
/// if `relu` (0 where not above 0, NaN kept: as Swift's max). 16 lanes at a time, then one value at
/// a time for the rest: the same operations per value either way.
private func scatterRun(_ run: UnsafePointer<Float>, bias: UnsafePointer<Float>?, relu: Bool, into row: UnsafeMutablePointer<Float>,
                        count: Int) {
    typealias Vector = SIMD16<Float>
    let (from, to) = (UnsafeRawPointer(run), UnsafeMutableRawPointer(row))
    let vectorEnd = count - count % Vector.scalarCount
    for offset in stride(from: 0, to: vectorEnd * 4, by: 64) {
        var v = from.loadUnaligned(fromByteOffset: offset, as: Vector.self)
        if let bias { v += UnsafeRawPointer(bias).loadUnaligned(fromByteOffset: offset, as: Vector.self) }
        if relu { v.replace(with: 0, where: v .<= 0) }
        to.storeBytes(of: v, toByteOffset: offset, as: Vector.self)
    }
    for c in vectorEnd..<count {
        var v = run[c]
        if let bias { v += bias[c] }
        row[c] = relu ? max(v, 0) : v
    }
}

/// Any kernel and stride: patches [pixels, k*k*out] <-> y [batch, outputHeight, outputWidth, out].
/// Scattering (col2im) adds every patch into y, which must hold zeros, and drops what 'same' crops;
/// gathering (im2col) copies y into the patches, with zeros where a patch reaches past y.
private func moveOverlappingPatches(_ g: TransposedConvolutionGeometry, patches: UnsafeMutablePointer<Float>,
                                    image: UnsafeMutablePointer<Float>, gather: Bool) {
    let (k, stride, o, crop) = (g.kernelSize, g.stride, g.outputChannels, g.paddingBefore)
    let (outputHeight, outputWidth) = (g.outputHeight, g.outputWidth)
    for b in 0..<g.batch {
        for h in 0..<g.height {
            for w in 0..<g.width {
                // patch: [k, k, out], the contribution of input pixel x[b, h, w, :]
                let patch = patches + ((b * g.height + h) * g.width + w) * g.patchLength
                for i in 0..<k {
                    let row = h * stride + i - crop  // output row of kernel row i
                    for j in 0..<k {
                        let column = w * stride + j - crop
                        let run = patch + (i * k + j) * o  // [out]
                        guard row >= 0 && row < outputHeight && column >= 0 && column < outputWidth else {
                            if gather { run.update(repeating: 0, count: o) }
                            continue
                        }
                        // pixel: y[b, row, column, :], [out]
                        let pixel = image + ((b * outputHeight + row) * outputWidth + column) * o
                        if gather {
                            run.update(from: pixel, count: o)
                        } else {
                            for c in 0..<o { pixel[c] += run[c] }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `g`'s products run on bfloat16 operands at the context's precision (kernel == stride only).
func usesBFloat16Products(_ g: TransposedConvolutionGeometry, context: ComputeContext) -> Bool {
    guard g.isKernelEqualToStride else { return false }
    switch context.precision {
    case .fp32, .winograd: return false
    case .bf16: return true
    case .fast: return context.matrices.fastModePrefersBFloat16Product(m: g.pixels, n: g.patchLength, k: g.inputChannels)
    }
}

public func transposedConvolutionForward(_ g: TransposedConvolutionGeometry, input: UnsafePointer<Float>,
                                         kernel: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                         output: UnsafeMutablePointer<Float>, fuseReLU: Bool = false,
                                         context: ComputeContext) {
    let matrices = context.matrices
    let patches = UnsafeMutablePointer<Float>.allocate(capacity: g.pixels * g.patchLength)
    defer { patches.deallocate() }
    // patches [pixels, k*k*out] = x [pixels, in] * kernel^T [in, k*k*out]   (kernel: [k*k*out, in])
    if !(usesBFloat16Products(g, context: context) && matrices.bfloat16MatrixMultiply(
        m: g.pixels, n: g.patchLength, k: g.inputChannels, a: .float(input), b: .float(kernel), transposeB: true, c: patches)) {
        matrices.matrixMultiply(m: g.pixels, n: g.patchLength, k: g.inputChannels, a: input, b: kernel, transposeB: true, c: patches)
    }
    if g.isKernelEqualToStride {
        movePatches(g, patches: patches, image: output, gather: false, bias: bias, relu: fuseReLU, threads: context.threads)
        return
    }
    // y: [batch, outputHeight, outputWidth, out], summed into from zero
    output.initialize(repeating: 0, count: g.outputPixels * g.outputChannels)
    moveOverlappingPatches(g, patches: patches, image: output, gather: false)
    if let bias {
        // y: [outputPixels, out] += bias [out]
        let total = g.outputPixels * g.outputChannels
        let o = g.outputChannels
        var i = 0
        while i < total {
            for c in 0..<o { output[i + c] += bias[c] }
            i += o
        }
    }
    if fuseReLU {
        for i in 0..<(g.outputPixels * g.outputChannels) { output[i] = max(output[i], 0) }
    }
}

/// inputGradient (overwritten) and kernel/bias gradients (accumulated) from dy.
///
/// With `reluOutput` (y of a forward pass run with `fuseReLU`), `outputGradient` is the gradient of
/// the ReLU's output and ReLU's backward is applied first; for kernel == stride it is done while
/// gathering the patches.
public func transposedConvolutionBackward(_ g: TransposedConvolutionGeometry, input: UnsafePointer<Float>,
                                          kernel: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                                          inputGradient: UnsafeMutablePointer<Float>?,
                                          kernelGradient: UnsafeMutablePointer<Float>?,
                                          biasGradient: UnsafeMutablePointer<Float>?,
                                          reluOutput: ReLUOutput? = nil, context: ComputeContext) {
    let matrices = context.matrices
    let patches = UnsafeMutablePointer<Float>.allocate(capacity: g.pixels * g.patchLength)
    defer { patches.deallocate() }
    var outputGradient = outputGradient
    var masked: UnsafeMutablePointer<Float>?
    defer { masked?.deallocate() }
    if let reluOutput, !g.isKernelEqualToStride {
        let count = g.outputPixels * g.outputChannels
        masked = .allocate(capacity: count)
        masked!.update(from: outputGradient, count: count)
        reluOutput.backward(gradient: masked!, count: count, threads: context.threads)
        outputGradient = UnsafePointer(masked!)
    }
    // dPatches [pixels, k*k*out] gathered from dy [batch, outputHeight, outputWidth, out]
    if g.isKernelEqualToStride {
        movePatches(g, patches: patches, image: UnsafeMutablePointer(mutating: outputGradient), gather: true,
                    reluOutput: reluOutput, biasGradient: biasGradient, threads: context.threads)
    } else {
        moveOverlappingPatches(g, patches: patches, image: UnsafeMutablePointer(mutating: outputGradient), gather: true)
    }
    /// dBias [out] += Σ dy over pixels (kernel == stride: already added while gathering).
    func addBiasGradient(_ biasGradient: UnsafeMutablePointer<Float>) {
        guard !g.isKernelEqualToStride else { return }
        addColumnSums(outputGradient, rows: g.outputPixels, columns: g.outputChannels, into: biasGradient, threads: context.threads)
    }
    if usesBFloat16Products(g, context: context) {
        // dPatches is read by both products: round it to bf16 once.
        let roundedPatches = MatrixOperand.bfloat16(matrices.bfloat16Copy(patches, count: g.pixels * g.patchLength))
        var done = true
        if let inputGradient {
            done = matrices.bfloat16MatrixMultiply(m: g.pixels, n: g.inputChannels, k: g.patchLength, a: roundedPatches,
                                                   b: .float(kernel), c: inputGradient)
        }
        if done, let kernelGradient {
            done = matrices.bfloat16MatrixMultiply(m: g.patchLength, n: g.inputChannels, k: g.pixels, a: roundedPatches,
                                                   transposeA: true, b: .float(input), c: kernelGradient, accumulate: true)
        }
        if done {
            if let biasGradient { addBiasGradient(biasGradient) }
            return
        }
        // oneDNN has no fast bf16 kernel for a product: redo in fp32 (dx is overwritten, and the
        // accumulating kernel-gradient product only fails before touching dKernel).
    }
    if let inputGradient {
        // dx [pixels, in] = dPatches [pixels, k*k*out] * kernel [k*k*out, in]
        matrices.matrixMultiply(m: g.pixels, n: g.inputChannels, k: g.patchLength, a: patches, b: kernel, c: inputGradient)
    }
    if let kernelGradient {
        // dKernel [k*k*out, in] += dPatches^T [k*k*out, pixels] * x [pixels, in]
        // (oneDNN's matmul primitive: 1.1-1.3x sgemm's speed on the story U-Net's four shapes.)
        matrices.matrixMultiply(m: g.patchLength, n: g.inputChannels, k: g.pixels, a: patches, transposeA: true,
                                b: input, c: kernelGradient, beta: 1, method: .matmul)
    }
    if let biasGradient { addBiasGradient(biasGradient) }
}
