// Per-dataset standardisation: (x - mean) / std with statistics measured on training data.

/// Mean and standard deviation of a set of spectrograms, and their application.
///
/// The global pair (`mean`, `std`) is always present. The per-band pairs (`bandMeans`,
/// `bandStds`, one value per row) are present when computed with `perBand: true`, and are
/// then used instead of the global pair. Standard deviations are population ones (divide by
/// the count). A zero deviation (a constant band) divides by 1: the values are only centred.
///
/// Compute them on the training split only, in the domain the model sees (e.g. after dB).
public struct NormalizationStats: Codable, Sendable, Equatable {
    public var mean: Float
    public var std: Float
    public var bandMeans: [Float]?
    public var bandStds: [Float]?

    public init(mean: Float, std: Float, bandMeans: [Float]? = nil, bandStds: [Float]? = nil) {
        self.mean = mean
        self.std = std
        self.bandMeans = bandMeans
        self.bandStds = bandStds
    }

    /// Measures the statistics over every value of `spectrograms` (all with the same rows).
    public init(computedOver spectrograms: some Sequence<Spectrogram>, perBand: Bool = false) throws {
        var accumulator: NormalizationAccumulator?
        for spectrogram in spectrograms {
            if accumulator == nil { accumulator = NormalizationAccumulator(rows: spectrogram.rows) }
            try accumulator!.add(spectrogram)
        }
        guard let accumulator, accumulator.count > 0 else {
            throw DSPError.invalidParameter(name: "spectrograms", value: "no values",
                                            expected: "at least one non-empty spectrogram to measure mean and std on")
        }
        self = accumulator.stats(perBand: perBand)
    }

    /// `(x - mean) / std`, per band when per-band statistics are present.
    public func normalize(_ spectrogram: Spectrogram) throws -> Spectrogram {
        var result = spectrogram
        try normalizeInPlace(&result)
        return result
    }

    /// `normalize` overwriting its input.
    public func normalizeInPlace(_ spectrogram: inout Spectrogram) throws {
        let rows = spectrogram.rows, frames = spectrogram.frames
        if let bandMeans, let bandStds {
            guard bandMeans.count == rows && bandStds.count == rows else {
                throw DSPError.invalidParameter(
                    name: "spectrogram.rows", value: "\(rows)",
                    expected: "\(bandMeans.count) rows, as the spectrograms these per-band statistics were measured on")
            }
            for row in 0..<rows {
                let mean = bandMeans[row], scale = Self.inverse(bandStds[row])
                for i in (row * frames)..<((row + 1) * frames) {
                    spectrogram.values[i] = (spectrogram.values[i] - mean) * scale
                }
            }
        } else {
            let mean = mean, scale = Self.inverse(std)
            for i in spectrogram.values.indices { spectrogram.values[i] = (spectrogram.values[i] - mean) * scale }
        }
    }

    private static func inverse(_ std: Float) -> Float { std > 0 ? 1 / std : 1 }
}

/// Running sums for `NormalizationStats`, for data that arrives one spectrogram at a time or
/// on several threads (accumulate per thread, then `merge`). Sums are kept in double precision.
public struct NormalizationAccumulator: Sendable, Equatable {
    public let rows: Int
    /// Values seen per band (every band sees the same number: the total frames).
    public private(set) var count: Int = 0
    private var sums: [Double]
    private var squareSums: [Double]

    public init(rows: Int) {
        self.rows = rows
        sums = [Double](repeating: 0, count: rows)
        squareSums = [Double](repeating: 0, count: rows)
    }

    public mutating func add(_ spectrogram: Spectrogram) throws {
        guard spectrogram.rows == rows else {
            throw DSPError.invalidParameter(name: "spectrogram.rows", value: "\(spectrogram.rows)",
                                            expected: "\(rows) rows, like the spectrograms already accumulated")
        }
        for row in 0..<rows {
            var sum = 0.0, squareSum = 0.0
            for i in (row * spectrogram.frames)..<((row + 1) * spectrogram.frames) {
                let value = Double(spectrogram.values[i])
                sum += value
                squareSum += value * value
            }
            sums[row] += sum
            squareSums[row] += squareSum
        }
        count += spectrogram.frames
    }

    public mutating func merge(_ other: NormalizationAccumulator) throws {
        guard other.rows == rows else {
            throw DSPError.invalidParameter(name: "accumulator.rows", value: "\(other.rows)", expected: "\(rows) rows, to merge")
        }
        for row in 0..<rows {
            sums[row] += other.sums[row]
            squareSums[row] += other.squareSums[row]
        }
        count += other.count
    }

    /// The statistics so far (all zero before any value).
    public func stats(perBand: Bool) -> NormalizationStats {
        func meanAndStd(sum: Double, squareSum: Double, count: Int) -> (Float, Float) {
            guard count > 0 else { return (0, 0) }
            let mean = sum / Double(count)
            return (Float(mean), Float(max(0, squareSum / Double(count) - mean * mean).squareRoot()))
        }
        let (mean, std) = meanAndStd(sum: sums.reduce(0, +), squareSum: squareSums.reduce(0, +), count: count * rows)
        guard perBand else { return NormalizationStats(mean: mean, std: std) }
        let bands = (0..<rows).map { meanAndStd(sum: sums[$0], squareSum: squareSums[$0], count: count) }
        return NormalizationStats(mean: mean, std: std, bandMeans: bands.map(\.0), bandStds: bands.map(\.1))
    }
}
