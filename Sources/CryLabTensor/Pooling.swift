/// Max pooling over windows of `pool` x `pool` pixels, moving `stride` pixels.
///
///     x: [batch, height, width, channels] -> y: [batch, outputHeight, outputWidth, channels]
///
/// Also returns, for every output value, the flat index into `x` of the maximum it copied; the
/// backward pass routes each gradient there (empty when `recordingArgmax` is false: inference, where
/// the common 2x2 case then skips writing them). Padding pixels never win (they count as -infinity).
public func maxPool2DForward(_ x: Tensor, pool: Int, stride: Int, padding: Padding,
                             recordingArgmax: Bool = true, threads: Int) -> (output: Tensor, argmax: [Int32]) {
    precondition(x.shape.count == 4, "max pooling expects [batch, height, width, channels], got \(x.shape)")
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let g = ConvolutionGeometry(batch: n, inputHeight: h, inputWidth: w, inputChannels: c, outputChannels: c,
                                kernelHeight: pool, kernelWidth: pool, stride: stride, padding: padding)
    if isPlain2x2(g) {
        return maxPool2x2Forward(x, g, recordArgmax: recordingArgmax, threads: threads)
    }
    var argmax = [Int32](repeating: 0, count: n * g.outputHeight * g.outputWidth * c)
    let output = Tensor(shape: g.outputShape) { y in
        x.values.withUnsafeBufferPointer { input in
            argmax.withUnsafeMutableBufferPointer { best in
                var o = 0
                for b in 0..<n {
                    for oy in 0..<g.outputHeight {
                        for ox in 0..<g.outputWidth {
                            // Visit the window pixel by pixel; channels are contiguous, so the inner
                            // loop runs over all channels at once. The first pixel seen wins ties.
                            var first = true
                            for ky in 0..<pool {
                                let iy = oy * stride + ky - g.padTop
                                guard iy >= 0 && iy < h else { continue }
                                for kx in 0..<pool {
                                    let ix = ox * stride + kx - g.padLeft
                                    guard ix >= 0 && ix < w else { continue }
                                    let pixel = ((b * h + iy) * w + ix) * c
                                    if first {
                                        for channel in 0..<c {
                                            y[o + channel] = input[pixel + channel]
                                            best[o + channel] = Int32(pixel + channel)
                                        }
                                        first = false
                                    } else {
                                        for channel in 0..<c where input[pixel + channel] > y[o + channel] {
                                            y[o + channel] = input[pixel + channel]
                                            best[o + channel] = Int32(pixel + channel)
                                        }
                                    }
                                }
                            }
                            o += c
                        }
                    }
                }
            }
        }
    }
    return (output, recordingArgmax ? argmax : [])
}

/// The U-Net's 2x2 stride-2 pooling, written so the channel loop vectorises (selects, no branches).
private func maxPool2x2Forward(_ x: Tensor, _ g: ConvolutionGeometry, recordArgmax: Bool, threads: Int) -> (output: Tensor, argmax: [Int32]) {
    let (h, w, c) = (g.inputHeight, g.inputWidth, g.inputChannels)
    // Every position is written below: no need to zero them first.
    let count = recordArgmax ? g.batch * g.outputHeight * g.outputWidth * c : 0
    var argmax = [Int32](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    let output = Tensor(shape: g.outputShape) { y in
        x.values.withUnsafeBufferPointer { inputBuffer in
            argmax.withUnsafeMutableBufferPointer { bestBuffer in
                let input = inputBuffer.baseAddress!, out = y.baseAddress!, best = bestBuffer.baseAddress
                // Output rows are independent: one chunk of them per thread.
                parallelChunks(g.batch * g.outputHeight, minimumChunk: 8, threads: threads) { rows in
                    for row in rows {
                        let b = row / g.outputHeight, oy = row % g.outputHeight
                        var o = row * g.outputWidth * c
                        guard recordArgmax, let best else {
                            // Inference: the maximum only, no positions to remember for a backward pass.
                            for ox in 0..<g.outputWidth {
                                let i0 = ((b * h + 2 * oy) * w + 2 * ox) * c
                                let i1 = i0 + c, i2 = i0 + w * c, i3 = i2 + c
                                for channel in 0..<c {  // the same comparisons as below, so the same result
                                    var m = input[i0 + channel]
                                    let v1 = input[i1 + channel], v2 = input[i2 + channel], v3 = input[i3 + channel]
                                    m = v1 > m ? v1 : m
                                    m = v2 > m ? v2 : m
                                    m = v3 > m ? v3 : m
                                    out[o + channel] = m
                                }
                                o += c
                            }
                            continue
                        }
                        if c % 16 == 0 {
                            maxPool2x2Row(input, row: (b, oy), g, into: out + o, argmax: best + o)
                            continue
                        }
                        for ox in 0..<g.outputWidth {
                            let i0 = ((b * h + 2 * oy) * w + 2 * ox) * c
                            let i1 = i0 + c, i2 = i0 + w * c, i3 = i2 + c
                            // Int32 index arithmetic without overflow traps, selects instead of
                            // branches: lets the compiler vectorise over channels.
                            let (j0, j1) = (Int32(truncatingIfNeeded: i0), Int32(truncatingIfNeeded: i1))
                            let (j2, j3) = (Int32(truncatingIfNeeded: i2), Int32(truncatingIfNeeded: i3))
                            for channel in 0..<c {
                                let k = Int32(truncatingIfNeeded: channel)
                                var m = input[i0 + channel], at = j0 &+ k
                                let v1 = input[i1 + channel], v2 = input[i2 + channel], v3 = input[i3 + channel]
                                at = v1 > m ? j1 &+ k : at; m = v1 > m ? v1 : m
                                at = v2 > m ? j2 &+ k : at; m = v2 > m ? v2 : m
                                at = v3 > m ? j3 &+ k : at; m = v3 > m ? v3 : m
                                out[o + channel] = m
                                best[o + channel] = at
                            }
                            o += c
                        }
                    }
                }
            }
        }
    }
    return (output, argmax)
}

/// One output row of `maxPool2x2Forward` with argmax, 16 channels at a time (channels a multiple
/// of 16): the same comparisons in the same order, so the same maxima and positions.
private func maxPool2x2Row(_ input: UnsafePointer<Float>, row: (batch: Int, y: Int), _ g: ConvolutionGeometry,
                           into out: UnsafeMutablePointer<Float>, argmax best: UnsafeMutablePointer<Int32>) {
    let (h, w, c) = (g.inputHeight, g.inputWidth, g.inputChannels)
    let lanes = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    let (from, to, positions) = (UnsafeRawPointer(input), UnsafeMutableRawPointer(out), UnsafeMutableRawPointer(best))
    for ox in 0..<g.outputWidth {
        let i0 = ((row.batch * h + 2 * row.y) * w + 2 * ox) * c
        for channel in stride(from: 0, to: c, by: 16) {
            let first = i0 + channel
            var m = from.loadUnaligned(fromByteOffset: first * 4, as: SIMD16<Float>.self)
            var at = lanes &+ Int32(truncatingIfNeeded: first)
            for corner in 1..<4 {  // right, below, below right
                let position = first + (corner & 1) * c + (corner >> 1) * w * c
                let v = from.loadUnaligned(fromByteOffset: position * 4, as: SIMD16<Float>.self)
                let greater = v .> m
                at.replace(with: lanes &+ Int32(truncatingIfNeeded: position), where: greater)
                m.replace(with: v, where: greater)
            }
            let o = (ox * c + channel) * 4
            to.storeBytes(of: m, toByteOffset: o, as: SIMD16<Float>.self)
            positions.storeBytes(of: at, toByteOffset: o, as: SIMD16<Int32>.self)
        }
    }
}

/// 2x2 windows at stride 2 that all lie inside the input (no padding pixels): the U-Net's pooling.
private func isPlain2x2(_ g: ConvolutionGeometry) -> Bool {
    g.kernelHeight == 2 && g.stride == 2 && g.padTop == 0 && g.padLeft == 0 && g.padBottom == 0 && g.padRight == 0
}

/// Max pooling's backward: gradient[argmax[i]] += dy[i], into zeros or into a gradient that
/// already holds another reader's share. With `windowsOverlap` false (pool size <= stride), no two
/// outputs share a maximum, and the outputs are split across the compute threads.
///     dy: [batch, outputHeight, outputWidth, channels], argmax: offsets into gradient's values
public func maxPool2DScatterAdd(_ dy: Tensor, argmax: [Int32], into gradient: inout Tensor, windowsOverlap: Bool = true, threads: Int) {
    precondition(argmax.count == dy.count, "max pooling recorded \(argmax.count) positions for \(dy.count) gradients")
    guard dy.count > 0 else { return }
    gradient.values.withUnsafeMutableBufferPointer { d in
        dy.values.withUnsafeBufferPointer { g in
            argmax.withUnsafeBufferPointer { a in
                let (d, g, a) = (d.baseAddress!, g.baseAddress!, a.baseAddress!)
                parallelChunks(dy.count, chunks: windowsOverlap ? 1 : chunkCount(dy.count, minimumChunk: 1 << 16, threads: threads)) { _, range in
                    for i in range { d[Int(a[i])] += g[i] }
                }
            }
        }
    }
}

/// Nearest-neighbour upsampling: every pixel repeated `factor` x `factor` times.
///     x: [batch, height, width, channels] -> y: [batch, height*factor, width*factor, channels]
public func upsampleNearestForward(_ x: Tensor, factor: Int) -> Tensor {
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    return Tensor(shape: [n, h * factor, w * factor, c]) { y in
        x.values.withUnsafeBufferPointer { input in
            var o = 0
            for b in 0..<n {
                for oy in 0..<(h * factor) {
                    for ox in 0..<(w * factor) {
                        let source = ((b * h + oy / factor) * w + ox / factor) * c
                        for channel in 0..<c { y[o + channel] = input[source + channel] }
                        o += c
                    }
                }
            }
        }
    }
}

/// The adjoint: each input pixel's gradient is the sum over its factor x factor copies.
public func upsampleNearestBackward(_ dy: Tensor, factor: Int) -> Tensor {
    let (n, oh, ow, c) = (dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3])
    let (h, w) = (oh / factor, ow / factor)
    var dx = Tensor(zeros: [n, h, w, c])
    dx.values.withUnsafeMutableBufferPointer { d in
        dy.values.withUnsafeBufferPointer { g in
            var o = 0
            for b in 0..<n {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        let target = ((b * h + oy / factor) * w + ox / factor) * c
                        for channel in 0..<c { d[target + channel] += g[o + channel] }
                        o += c
                    }
                }
            }
        }
    }
    return dx
}

/// Mean over all pixels of each channel.  x: [batch, height, width, channels] -> y: [batch, channels]
public func globalAveragePoolForward(_ x: Tensor) -> Tensor {
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let pixels = h * w
    var y = Tensor(zeros: [n, c])
    y.values.withUnsafeMutableBufferPointer { out in
        x.values.withUnsafeBufferPointer { input in
            var sums = [Double](repeating: 0, count: c)
            for b in 0..<n {
                for i in 0..<c { sums[i] = 0 }
                for p in 0..<pixels {
                    let row = (b * pixels + p) * c
                    for i in 0..<c { sums[i] += Double(input[row + i]) }
                }
                for i in 0..<c { out[b * c + i] = Float(sums[i] / Double(pixels)) }
            }
        }
    }
    return y
}

/// dy: [batch, channels] -> dx: [batch, height, width, channels], each pixel gets dy / (height*width).
public func globalAveragePoolBackward(_ dy: Tensor, inputShape: [Int]) -> Tensor {
    let (n, h, w, c) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
    let scale = 1 / Float(h * w)
    return Tensor(shape: inputShape) { d in
        dy.values.withUnsafeBufferPointer { g in
            for b in 0..<n {
                for p in 0..<(h * w) {
                    let row = (b * h * w + p) * c
                    for i in 0..<c { d[row + i] = g[b * c + i] * scale }
                }
            }
        }
    }
}

/// Joins tensors along the last (channel) axis.
///     parts[i]: [..., channels_i] -> y: [..., Σ channels_i]
public func concatenateChannels(_ parts: [Tensor], threads: Int) -> Tensor {
    let leading = Array(parts[0].shape.dropLast())
    for part in parts where Array(part.shape.dropLast()) != leading {
        preconditionFailure("cannot concatenate \(parts.map(\.shape)) along channels: leading dimensions differ")
    }
    let widths = parts.map { $0.shape.last! }
    let total = widths.reduce(0, +)
    let rows = leading.reduce(1, *)
    return Tensor(shape: leading + [total]) { y in
        var offset = 0
        for (part, width) in zip(parts, widths) {
            part.values.withUnsafeBufferPointer { source in
                let (target, from, start) = (y.baseAddress!, source.baseAddress!, offset)
                parallelChunks(rows, minimumChunk: 4096, threads: threads) { range in
                    for r in range { (target + r * total + start).update(from: from + r * width, count: width) }
                }
            }
            offset += width
        }
    }
}

/// The inverse of `concatenateChannels`: cuts dy's channels into pieces of the given widths.
public func splitChannels(_ dy: Tensor, widths: [Int], threads: Int) -> [Tensor] {
    let leading = Array(dy.shape.dropLast())
    let total = dy.shape.last!
    let rows = leading.reduce(1, *)
    var offset = 0
    return widths.map { width in
        defer { offset += width }
        let start = offset
        return Tensor(shape: leading + [width]) { part in
            dy.values.withUnsafeBufferPointer { source in
                let (target, from) = (part.baseAddress!, source.baseAddress!)
                parallelChunks(rows, minimumChunk: 4096, threads: threads) { range in
                    for r in range { (target + r * width).update(from: from + r * total + start, count: width) }
                }
            }
        }
    }
}
