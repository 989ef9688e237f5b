/// Batch normalisation over the channel axis, split across the compute threads by rows.
///
///     x, xhat, y, dy, dx: [rows, channels]  (rows = batch * height * width, or batch for 1-D)
///     mean, inverseDeviation, gamma, beta: [channels]
///
/// or, for `ActivationLayout.blocked16` activations, rows of 16 channels (`ChannelRows`).
/// Sums run in Double, per chunk of rows, and the chunks' partials are added in chunk order, so
/// results depend on the thread count (through the split) but not on scheduling.

/// How an activation's values split into rows of contiguous channels: NHWC rows hold all
/// `channels`; blocked16 rows hold 16, those of block (row / pixels) % (channels / 16).
public struct ChannelRows: Sendable {
    public let channels: Int
    /// Values per row, and rows in all.
    let width: Int, count: Int
    let pixels: Int
    /// Threads the rows are split across.
    public let threads: Int

    /// An NHWC activation of `rows` x `channels` values.
    public init(rows: Int, channels: Int, threads: Int) {
        (self.channels, width, count, pixels, self.threads) = (channels, channels, rows, rows, threads)
    }

    /// A blocked16 activation of shape [batch, height, width, channels].
    public init(blocked shape: [Int], threads: Int) {
        precondition(shape.count == 4 && shape[3] % 16 == 0, "blocked16 activations are [batch, height, width, channels / 16 * 16], got \(shape)")
        (channels, width, count, pixels, self.threads) = (shape[3], 16, shape[0] * shape[1] * shape[2] * shape[3] / 16, shape[1] * shape[2], threads)
    }

    /// The first channel of row `row`.
    @inline(__always) func firstChannel(_ row: Int) -> Int {
        width == channels ? 0 : (row / pixels) % (channels / 16) * 16
    }

    /// Calls body(start, firstChannel) for every row (its first value's offset and channel), the
    /// rows split across the compute threads. For element-wise passes, where any split will do.
    @inline(__always) func forEachRowInParallel(_ body: (Int, Int) -> Void) {
        parallelChunks(count, minimumChunk: max(1, 16_384 / width), threads: threads) { range in
            for r in range { body(r * width, firstChannel(r)) }
        }
    }

    /// Rows of NHWC values, pixels of blocked ones: batch * height * width.
    public var logicalRows: Int { count * width / channels }

    /// Calls body(row, firstChannel) for the rows holding the values of logical rows `range`, each
    /// channel's values in increasing logical order, as NHWC would visit them: so per-channel sums
    /// split by logical rows come out bit for bit the same in both layouts.
    @inline(__always) func forEachRow(_ range: Range<Int>, _ body: (Int, Int) -> Void) {
        guard width != channels, !range.isEmpty else {
            for r in range { body(r, 0) }
            return
        }
        let blocks = channels / 16
        for n in (range.lowerBound / pixels)...((range.upperBound - 1) / pixels) {
            let pixelRange = max(range.lowerBound - n * pixels, 0)..<min(range.upperBound - n * pixels, pixels)
            for block in 0..<blocks {
                let base = (n * blocks + block) * pixels
                for p in pixelRange { body(base + p, block * 16) }
            }
        }
    }
}

/// Mean and biased variance of each channel, from Σ x and Σ x² in one pass: in Double the
/// subtraction E[x²] - mean² loses about 1e-16 * mean² / variance, nothing at activation scales.
public func batchNormStatistics(_ x: UnsafePointer<Float>, _ rows: ChannelRows) -> (mean: [Double], variance: [Double]) {
    batchNormStatistics(sums: batchNormSums(x, rows), count: Double(rows.logicalRows))
}

/// Σ x of each channel, then Σ x² of each channel (2 * channels values), over the rows.
public func batchNormSums(_ x: UnsafePointer<Float>, _ rows: ChannelRows) -> [Double] {
    let channels = rows.channels
    return channelSums(rows, width: 2 * channels) { r, first, sums in
        let row = x + r * rows.width
        for c in 0..<rows.width {
            let value = Double(row[c])
            sums[first + c] += value
            sums[channels + first + c] += value * value
        }
    }
}

/// Mean and biased variance of each channel from `batchNormSums` over `count` rows (summed over
/// several processes, for synchronised statistics).
public func batchNormStatistics(sums: [Double], count: Double) -> (mean: [Double], variance: [Double]) {
    let channels = sums.count / 2
    let mean = (0..<channels).map { sums[$0] / count }
    return (mean, (0..<channels).map { max(sums[channels + $0] / count - mean[$0] * mean[$0], 0) })
}

/// xhat = (x - mean) * inverseDeviation and y = xhat * gamma + beta, in one pass.
public func batchNormApply(_ x: UnsafePointer<Float>, _ rows: ChannelRows, mean: [Float], inverseDeviation: [Float],
                           gamma: [Float], beta: [Float], normalized: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>) {
    mean.withUnsafeBufferPointer { m in
        inverseDeviation.withUnsafeBufferPointer { inverse in
            gamma.withUnsafeBufferPointer { g in
                beta.withUnsafeBufferPointer { b in
                    rows.forEachRowInParallel { start, first in
                        let (row, xhat, y) = (x + start, normalized + start, output + start)
                        for c in 0..<rows.width {
                            let value = (row[c] - m[first + c]) * inverse[first + c]
                            xhat[c] = value
                            y[c] = value * g[first + c] + b[first + c]
                        }
                    }
                }
            }
        }
    }
}

/// Σ dy and Σ dy * xhat per channel (the gradients of beta and gamma).
public func batchNormGradientSums(_ dy: UnsafePointer<Float>, normalized xhat: UnsafePointer<Float>,
                                  _ rows: ChannelRows) -> (sumGradient: [Double], sumGradientNormalized: [Double]) {
    let channels = rows.channels
    let both = channelSums(rows, width: 2 * channels) { r, first, sums in
        let (d, n) = (dy + r * rows.width, xhat + r * rows.width)
        for c in 0..<rows.width {
            sums[first + c] += Double(d[c])
            sums[channels + first + c] += Double(d[c]) * Double(n[c])
        }
    }
    return (Array(both[..<channels]), Array(both[channels...]))
}

/// dx = scale * (dy - meanGradient - xhat * meanGradientNormalized) per channel; with batch
/// statistics scale = gamma * inverseDeviation and the means are Σ dy / rows and Σ dy * xhat / rows;
/// with moving statistics the means are zero.
public func batchNormInputGradient(_ dy: UnsafePointer<Float>, normalized xhat: UnsafePointer<Float>, _ rows: ChannelRows,
                                   scale: [Float], meanGradient: [Float], meanGradientNormalized: [Float],
                                   into dx: UnsafeMutablePointer<Float>) {
    scale.withUnsafeBufferPointer { s in
        meanGradient.withUnsafeBufferPointer { md in
            meanGradientNormalized.withUnsafeBufferPointer { mn in
                rows.forEachRowInParallel { start, first in
                    let (d, n, out) = (dy + start, xhat + start, dx + start)
                    for c in 0..<rows.width {
                        out[c] = s[first + c] * (d[c] - md[first + c] - n[c] * mn[first + c])
                    }
                }
            }
        }
    }
}

/// Per-channel Double sums of `add(row, firstChannel, sums)` over all rows (`width` sums per
/// chunk), in chunk order: the same in NHWC and blocked16 for a given thread count. Also the
/// column sums of bias gradients (`addColumnSums`).
func channelSums(_ rows: ChannelRows, width: Int, _ add: (Int, Int, UnsafeMutablePointer<Double>) -> Void) -> [Double] {
    // Split by logical rows (pixels), so both layouts add each channel's values in the same chunks.
    let chunks = chunkCount(rows.logicalRows * rows.channels, minimumChunk: 1 << 16, threads: rows.threads)
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: chunks * width)
    defer { partial.deallocate() }
    partial.initialize(repeating: 0, count: chunks * width)
    parallelChunks(rows.logicalRows, chunks: chunks) { chunk, range in
        rows.forEachRow(range) { r, first in add(r, first, partial + chunk * width) }
    }
    return (0..<width).map { c in
        var total = 0.0
        for chunk in 0..<chunks { total += partial[chunk * width + c] }
        return total
    }
}
