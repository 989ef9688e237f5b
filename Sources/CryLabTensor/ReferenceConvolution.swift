/// Portable convolution: im2col followed by one OpenBLAS sgemm per image. Slow (it copies every
/// input pixel kernelHeight*kernelWidth times) but short enough to read, so tests use it to
/// cross-check the oneDNN path.
public struct ReferenceConvolution: ConvolutionKernels {
    /// Threads for OpenBLAS and the bias gradient's column sums.
    public let threads: Int

    public init(threads: Int) {
        self.threads = threads
    }

    /// columns: [outputHeight * outputWidth, kernelHeight * kernelWidth * inputChannels] of one image,
    /// zero where the window hangs over the padding. Column order matches the kernel's
    /// [kernelHeight, kernelWidth, inputChannels] rows, so the product is one sgemm.
    private func im2col(_ g: ConvolutionGeometry, image: UnsafePointer<Float>, columns: UnsafeMutablePointer<Float>) {
        let c = g.inputChannels
        let rowLength = g.kernelHeight * g.kernelWidth * c
        for oy in 0..<g.outputHeight {
            for ox in 0..<g.outputWidth {
                let row = columns + (oy * g.outputWidth + ox) * rowLength
                for ky in 0..<g.kernelHeight {
                    let iy = oy * g.stride + ky - g.padTop
                    for kx in 0..<g.kernelWidth {
                        let ix = ox * g.stride + kx - g.padLeft
                        let destination = row + (ky * g.kernelWidth + kx) * c
                        if iy < 0 || iy >= g.inputHeight || ix < 0 || ix >= g.inputWidth {
                            destination.update(repeating: 0, count: c)
                        } else {
                            destination.update(from: image + (iy * g.inputWidth + ix) * c, count: c)
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of im2col: adds every column entry back onto the pixel it came from.
    private func col2im(_ g: ConvolutionGeometry, columns: UnsafePointer<Float>, image: UnsafeMutablePointer<Float>) {
        let c = g.inputChannels
        let rowLength = g.kernelHeight * g.kernelWidth * c
        image.update(repeating: 0, count: g.inputHeight * g.inputWidth * c)
        for oy in 0..<g.outputHeight {
            for ox in 0..<g.outputWidth {
                let row = columns + (oy * g.outputWidth + ox) * rowLength
                for ky in 0..<g.kernelHeight {
                    let iy = oy * g.stride + ky - g.padTop
                    guard iy >= 0 && iy < g.inputHeight else { continue }
                    for kx in 0..<g.kernelWidth {
                        let ix = ox * g.stride + kx - g.padLeft
                        guard ix >= 0 && ix < g.inputWidth else { continue }
                        let source = row + (ky * g.kernelWidth + kx) * c
                        let destination = image + (iy * g.inputWidth + ix) * c
                        for channel in 0..<c { destination[channel] += source[channel] }
                    }
                }
            }
        }
    }


    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, fuseReLU: Bool, output: UnsafeMutablePointer<Float>) {
        let pixels = g.outputHeight * g.outputWidth
        let rowLength = g.kernelHeight * g.kernelWidth * g.inputChannels
        let columns = UnsafeMutablePointer<Float>.allocate(capacity: pixels * rowLength)
        defer { columns.deallocate() }
        let inputImage = g.inputHeight * g.inputWidth * g.inputChannels
        let outputImage = pixels * g.outputChannels
        for n in 0..<g.batch {
            im2col(g, image: input + n * inputImage, columns: columns)
            // output[n]: [pixels, outputChannels] = columns [pixels, rowLength] * kernel [rowLength, outputChannels]
            openBLASMatrixMultiply(threads: threads, m: pixels, n: g.outputChannels, k: rowLength,
                           a: columns, b: kernel, c: output + n * outputImage)
        }
        let total = g.batch * outputImage
        for i in 0..<total {
            var value = output[i]
            if let bias { value += bias[i % g.outputChannels] }
            output[i] = fuseReLU ? max(value, 0) : value
        }
    }

    public func backwardData(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                             kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>) {
        let pixels = g.outputHeight * g.outputWidth
        let rowLength = g.kernelHeight * g.kernelWidth * g.inputChannels
        let columns = UnsafeMutablePointer<Float>.allocate(capacity: pixels * rowLength)
        defer { columns.deallocate() }
        for n in 0..<g.batch {
            // columns [pixels, rowLength] = dOutput [pixels, outputChannels] * kernel^T [outputChannels, rowLength]
            openBLASMatrixMultiply(threads: threads, m: pixels, n: rowLength, k: g.outputChannels,
                           a: outputGradient + n * pixels * g.outputChannels,
                           b: kernel, transposeB: true, c: columns)
            col2im(g, columns: columns, image: inputGradient + n * g.inputHeight * g.inputWidth * g.inputChannels)
        }
    }

    public func backwardWeights(_ g: ConvolutionGeometry, input: UnsafePointer<Float>,
                                outputGradient: UnsafePointer<Float>,
                                kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?) {
        let pixels = g.outputHeight * g.outputWidth
        let rowLength = g.kernelHeight * g.kernelWidth * g.inputChannels
        let columns = UnsafeMutablePointer<Float>.allocate(capacity: pixels * rowLength)
        defer { columns.deallocate() }
        for n in 0..<g.batch {
            im2col(g, image: input + n * g.inputHeight * g.inputWidth * g.inputChannels, columns: columns)
            // dKernel [rowLength, outputChannels] += columns^T [rowLength, pixels] * dOutput [pixels, outputChannels]
            openBLASMatrixMultiply(threads: threads, m: rowLength, n: g.outputChannels, k: pixels,
                           a: columns, transposeA: true,
                           b: outputGradient + n * pixels * g.outputChannels, c: kernelGradient, beta: 1)
        }
        if let biasGradient {
            addColumnSums(outputGradient, rows: g.batch * pixels, columns: g.outputChannels, into: biasGradient, threads: threads)
        }
    }
}

/// sums[c] += Σ_r matrix[r, c] for a row-major [rows, columns] matrix (bias gradients).
/// Rows are split across the compute threads, each summing its own in Double; the partial sums are
/// then added in chunk order, so a thread count always gives the same result.
public func addColumnSums(_ matrix: UnsafePointer<Float>, rows: Int, columns: Int, into sums: UnsafeMutablePointer<Float>, threads: Int) {
    // Accumulate in Double so the order of a long sum barely matters.
    let totals = channelSums(ChannelRows(rows: rows, channels: columns, threads: threads), width: columns) { r, _, t in
        let row = matrix + r * columns
        for c in 0..<columns { t[c] += Double(row[c]) }
    }
    for c in 0..<columns { sums[c] += Float(totals[c]) }
}
