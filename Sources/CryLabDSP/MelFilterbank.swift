// Mel scales and the triangular mel filterbank, librosa 0.11 compatible
// (librosa.filters.mel, librosa.hz_to_mel, librosa.mel_to_hz, librosa.mel_frequencies).
import Foundation

/// Which Hz ↔ mel mapping places the filter centres.
public enum MelScale: String, Codable, Sendable, CaseIterable {
    /// Slaney's Auditory Toolbox scale: linear below 1 kHz (200/3 Hz per mel), logarithmic
    /// above (librosa's default, `htk=False`).
    case slaney
    /// HTK's `2595 log10(1 + f / 700)` (librosa's `htk=True`).
    case htk
}

/// How each triangular filter is scaled.
public enum MelNorm: String, Codable, Sendable, CaseIterable {
    /// Divide each triangle by its width in Hz (times 2), so every band has about the same
    /// area (librosa's default `norm="slaney"`).
    case slaney
    /// Leave the triangles with a peak of 1 (librosa's `norm=None`).
    case none
}

/// Hz → mel on `scale`.
public func hzToMel(_ frequency: Double, scale: MelScale = .slaney) -> Double {
    switch scale {
    case .htk:
        return 2595.0 * log10(1.0 + frequency / 700.0)
    case .slaney:
        if frequency >= SlaneyScale.minLogHz {
            return SlaneyScale.minLogMel + log(frequency / SlaneyScale.minLogHz) / SlaneyScale.logStep
        }
        return frequency / SlaneyScale.hzPerMel
    }
}

/// Mel → Hz on `scale` (the inverse of `hzToMel`).
public func melToHz(_ mel: Double, scale: MelScale = .slaney) -> Double {
    switch scale {
    case .htk:
        return 700.0 * (pow(10.0, mel / 2595.0) - 1.0)
    case .slaney:
        if mel >= SlaneyScale.minLogMel {
            return SlaneyScale.minLogHz * exp(SlaneyScale.logStep * (mel - SlaneyScale.minLogMel))
        }
        return SlaneyScale.hzPerMel * mel
    }
}

/// `count` frequencies in Hz, evenly spaced on the mel scale from `fMin` to `fMax` inclusive
/// (librosa's `mel_frequencies`).
public func melFrequencies(count: Int, fMin: Double, fMax: Double, scale: MelScale = .slaney) -> [Double] {
    let low = hzToMel(fMin, scale: scale), high = hzToMel(fMax, scale: scale)
    // numpy.linspace: start + i * step, with the last point exactly `high`.
    let step = count > 1 ? (high - low) / Double(count - 1) : 0
    return (0..<count).map { i in
        melToHz(i == count - 1 && count > 1 ? high : low + Double(i) * step, scale: scale)
    }
}

private enum SlaneyScale {
    static let hzPerMel = 200.0 / 3.0
    static let minLogHz = 1000.0
    static let minLogMel = minLogHz / hzPerMel
    static let logStep = log(6.4) / 27.0
}

/// A bank of `nMels` triangular filters over the `nFFT / 2 + 1` bins of an STFT, built as
/// `librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=, htk=, norm=)` (in double
/// precision, stored as float32 like librosa's default dtype).
///
/// Filterbanks are immutable and cached by parameters: use `MelFilterbank.shared(...)`.
public final class MelFilterbank: Sendable {
    public let sampleRate: Int
    public let nFFT: Int
    public let nMels: Int
    public let fMin: Double
    public let fMax: Double
    public let scale: MelScale
    public let norm: MelNorm
    /// Dense weights, row-major `[nMels, nFFT / 2 + 1]` (librosa's `(n_mels, 1 + n_fft // 2)`).
    public let weights: [Float]
    /// Each band's nonzero bins, `band[m]` = `firstBin ..< endBin`; the projection touches only
    /// these (about 2 bins per FFT bin in total instead of `nMels` per bin).
    private let bandRanges: [Range<Int>]

    public var bins: Int { nFFT / 2 + 1 }

    private struct Key: Hashable {
        var sampleRate: Int, nFFT: Int, nMels: Int, fMin: Double, fMax: Double, scale: MelScale, norm: MelNorm
    }
    private static let cache = LockedCache<Key, MelFilterbank>()

    /// The cached filterbank for these parameters (built on first use, then shared).
    /// `fMax` defaults to `sampleRate / 2`. Throws if the parameters are out of range.
    public static func shared(sampleRate: Int, nFFT: Int, nMels: Int = 128, fMin: Double = 0, fMax: Double? = nil,
                              scale: MelScale = .slaney, norm: MelNorm = .slaney) throws -> MelFilterbank {
        let fMax = fMax ?? Double(sampleRate) / 2
        let key = Key(sampleRate: sampleRate, nFFT: nFFT, nMels: nMels, fMin: fMin, fMax: fMax, scale: scale, norm: norm)
        return try cache.value(for: key) {
            try MelFilterbank(sampleRate: sampleRate, nFFT: nFFT, nMels: nMels, fMin: fMin, fMax: fMax, scale: scale, norm: norm)
        }
    }

    /// Builds a filterbank (uncached; prefer `shared`). `fMax` defaults to `sampleRate / 2`.
    public init(sampleRate: Int, nFFT: Int, nMels: Int = 128, fMin: Double = 0, fMax: Double? = nil,
                scale: MelScale = .slaney, norm: MelNorm = .slaney) throws {
        let nyquist = Double(sampleRate) / 2
        let fMax = fMax ?? nyquist
        guard sampleRate > 0 else {
            throw DSPError.invalidParameter(name: "sampleRate", value: "\(sampleRate)", expected: "a positive rate in Hz, e.g. 16000")
        }
        guard nFFT > 0 else {
            throw DSPError.invalidParameter(name: "nFFT", value: "\(nFFT)", expected: "a positive FFT size in samples, e.g. 2048")
        }
        guard nMels > 0 else {
            throw DSPError.invalidParameter(name: "nMels", value: "\(nMels)", expected: "a positive number of mel bands, e.g. 128")
        }
        guard fMin >= 0 && fMin.isFinite else {
            throw DSPError.invalidParameter(name: "fMin", value: "\(fMin)", expected: "0 <= fMin < fMax, in Hz")
        }
        guard fMax > fMin && fMax <= nyquist else {
            throw DSPError.invalidParameter(
                name: "fMax", value: "\(fMax)",
                expected: "fMin (\(fMin)) < fMax <= sampleRate / 2 (\(nyquist)) Hz; lower fMax or raise the sample rate")
        }
        self.sampleRate = sampleRate
        self.nFFT = nFFT
        self.nMels = nMels
        self.fMin = fMin
        self.fMax = fMax
        self.scale = scale
        self.norm = norm

        let bins = nFFT / 2 + 1
        // Centre frequency of each FFT bin (numpy.fft.rfftfreq).
        let binSpacing = 1.0 / (Double(nFFT) * (1.0 / Double(sampleRate)))
        let binHz = (0..<bins).map { Double($0) * binSpacing }
        // Band edges: nMels + 2 points evenly spaced in mel; band m rises from edge m,
        // peaks at edge m + 1 and falls to edge m + 2.
        let edges = melFrequencies(count: nMels + 2, fMin: fMin, fMax: fMax, scale: scale)
        var weights = [Float](repeating: 0, count: nMels * bins)
        var ranges: [Range<Int>] = []
        for m in 0..<nMels {
            let rise = edges[m + 1] - edges[m], fall = edges[m + 2] - edges[m + 1]
            let areaScale = norm == .slaney ? 2.0 / (edges[m + 2] - edges[m]) : 1.0
            var first = bins, end = 0
            for k in 0..<bins {
                let lower = (binHz[k] - edges[m]) / rise
                let upper = (edges[m + 2] - binHz[k]) / fall
                // Rounded to float32 before normalising, as librosa fills a float32 array first.
                var w = Float(max(0, min(lower, upper)))
                if norm == .slaney { w = Float(Double(w) * areaScale) }
                weights[m * bins + k] = w
                if w != 0 { first = min(first, k); end = k + 1 }
            }
            ranges.append(first < end ? first..<end : 0..<0)
        }
        self.weights = weights
        self.bandRanges = ranges
    }

    /// Projects an STFT spectrogram `[nFFT / 2 + 1, frames]` onto the mel bands:
    /// `[nMels, frames]` = weights `[nMels, bins]` × spectrogram.
    public func apply(to spectrogram: Spectrogram) throws -> Spectrogram {
        guard spectrogram.rows == bins else {
            throw DSPError.invalidParameter(
                name: "spectrogram.rows", value: "\(spectrogram.rows)",
                expected: "nFFT / 2 + 1 = \(bins) FFT bins for this filterbank (nFFT \(nFFT)); build the filterbank with the STFT's nFFT")
        }
        let frames = spectrogram.frames
        var output = Spectrogram(rows: nMels, frames: frames)
        var column = [Float](repeating: 0, count: bins)
        output.values.withUnsafeMutableBufferPointer { out in
            column.withUnsafeMutableBufferPointer { column in
                for t in 0..<frames {
                    for k in 0..<bins { column[k] = spectrogram.values[k * frames + t] }
                    project(column: UnsafeBufferPointer(column), into: out, frame: t, frameCount: frames)
                }
            }
        }
        return output
    }

    /// `out[m * frameCount + frame] = Σ_k weights[m, k] * column[k]` for every band m.
    /// column: [bins]; out: [nMels, frameCount].
    func project(column: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>,
                 frame: Int, frameCount: Int) {
        weights.withUnsafeBufferPointer { weights in
            for m in 0..<nMels {
                let row = m * bins
                var sum: Float = 0
                for k in bandRanges[m] { sum += weights[row + k] * column[k] }
                out[m * frameCount + frame] = sum
            }
        }
    }
}
