/// Batch normalisation over the channel axis, split across the compute threads by rows.
///
///     x, xhat, y, dy, dx: [rows, channels]  (rows = batch * height * width, or batch for 1-D)
///     mean, inverseDeviation, gamma, beta: [channels]
///
/// Sums run in Double, per chunk of rows, and the chunks' partials are added in chunk order, so
/// results depend on the thread count (through the split) but not on scheduling.

/// Mean and biased variance of each channel, from Σ x and Σ x² in one pass: in Double the
/// subtraction E[x²] - mean² loses about 1e-16 * mean² / variance, nothing at activation scales.
public func batchNormStatistics(_ x: UnsafePointer<Float>, rows: Int, channels: Int) -> (mean: [Double], variance: [Double]) {
    let sums = channelSums(rows: rows, channels: 2 * channels) { r, sums in
        let row = x + r * channels
        for c in 0..<channels {
            let value = Double(row[c])
            sums[c] += value
            sums[channels + c] += value * value
        }
    }
    let n = Double(rows)
    let mean = (0..<channels).map { sums[$0] / n }
    return (mean, (0..<channels).map { max(sums[channels + $0] / n - mean[$0] * mean[$0], 0) })
}

/// xhat = (x - mean) * inverseDeviation and y = xhat * gamma + beta, in one pass.
public func batchNormApply(_ x: UnsafePointer<Float>, rows: Int, channels: Int, mean: [Float], inverseDeviation: [Float],
                           gamma: [Float], beta: [Float], normalized: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>) {
    parallelChunks(rows, minimumChunk: max(1, 16_384 / channels)) { range in
        mean.withUnsafeBufferPointer { m in
            inverseDeviation.withUnsafeBufferPointer { inverse in
                gamma.withUnsafeBufferPointer { g in
                    beta.withUnsafeBufferPointer { b in
                        for r in range {
                            let (row, xhat, y) = (x + r * channels, normalized + r * channels, output + r * channels)
                            for c in 0..<channels {
                                let value = (row[c] - m[c]) * inverse[c]
                                xhat[c] = value
                                y[c] = value * g[c] + b[c]
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Σ dy and Σ dy * xhat per channel (the gradients of beta and gamma).
public func batchNormGradientSums(_ dy: UnsafePointer<Float>, normalized xhat: UnsafePointer<Float>,
                                  rows: Int, channels: Int) -> (sumGradient: [Double], sumGradientNormalized: [Double]) {
    let both = channelSums(rows: rows, channels: 2 * channels) { r, sums in
        let (d, n) = (dy + r * channels, xhat + r * channels)
        for c in 0..<channels {
            sums[c] += Double(d[c])
            sums[channels + c] += Double(d[c]) * Double(n[c])
        }
    }
    return (Array(both[..<channels]), Array(both[channels...]))
}

/// dx = scale * (dy - meanGradient - xhat * meanGradientNormalized) per channel; with batch
/// statistics scale = gamma * inverseDeviation and the means are Σ dy / rows and Σ dy * xhat / rows;
/// with moving statistics the means are zero.
public func batchNormInputGradient(_ dy: UnsafePointer<Float>, normalized xhat: UnsafePointer<Float>, rows: Int, channels: Int,
                                   scale: [Float], meanGradient: [Float], meanGradientNormalized: [Float],
                                   into dx: UnsafeMutablePointer<Float>) {
    parallelChunks(rows, minimumChunk: max(1, 16_384 / channels)) { range in
        scale.withUnsafeBufferPointer { s in
            meanGradient.withUnsafeBufferPointer { md in
                meanGradientNormalized.withUnsafeBufferPointer { mn in
                    for r in range {
                        let (d, n, out) = (dy + r * channels, xhat + r * channels, dx + r * channels)
                        for c in 0..<channels { out[c] = s[c] * (d[c] - md[c] - n[c] * mn[c]) }
                    }
                }
            }
        }
    }
}

/// Per-channel Double sums of `add(row, sums)` over all rows, in chunk order.
private func channelSums(rows: Int, channels: Int, _ add: (Int, UnsafeMutablePointer<Double>) -> Void) -> [Double] {
    let chunks = chunkCount(rows * channels, minimumChunk: 1 << 16)
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: chunks * channels)
    defer { partial.deallocate() }
    partial.initialize(repeating: 0, count: chunks * channels)
    parallelChunks(rows, chunks: chunks) { chunk, range in
        for r in range { add(r, partial + chunk * channels) }
    }
    return (0..<channels).map { c in
        var total = 0.0
        for chunk in 0..<chunks { total += partial[chunk * channels + c] }
        return total
    }
}
