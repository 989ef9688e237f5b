// Short-time Fourier transform, librosa 0.11 compatible: periodic Hann window zero-padded
// (centred) to nFFT, `center=True` with constant (zero) padding of nFFT / 2 on both sides.
import Foundation

/// Number of STFT frames for `sampleCount` samples with `center=True`:
/// `1 + (sampleCount + 2 * (nFFT / 2) - nFFT) / hopLength`, i.e. `1 + sampleCount / hopLength`
/// for an even `nFFT`. A clip shorter than `nFFT` still gets at least one frame.
public func stftFrameCount(sampleCount: Int, nFFT: Int, hopLength: Int) -> Int {
    1 + (sampleCount + 2 * (nFFT / 2) - nFFT) / hopLength
}

/// The periodic ("fftbins") Hann window of `length`: `0.5 - 0.5 cos(2πn / length)`,
/// as `scipy.signal.get_window("hann", length, fftbins=True)`.
public func hannWindow(length: Int) -> [Float] {
    (0..<length).map { n in Float(0.5 - 0.5 * cos(2.0 * Double.pi * Double(n) / Double(length))) }
}

/// The `nFFT`-point analysis window: a periodic Hann window of `winLength` placed in the
/// middle of `nFFT` zeros (starting at `(nFFT - winLength) / 2`), as librosa's `pad_center`.
public func analysisWindow(nFFT: Int, winLength: Int) -> [Float] {
    precondition(winLength > 0 && winLength <= nFFT, "winLength must be in 1...nFFT")
    var window = [Float](repeating: 0, count: nFFT)
    let start = (nFFT - winLength) / 2
    for (offset, value) in hannWindow(length: winLength).enumerated() { window[start + offset] = value }
    return window
}

/// `|STFT(samples)| ^ power`: `power = 1` gives librosa's `np.abs(librosa.stft(y))`,
/// `power = 2` the power spectrogram.
///
/// - Parameters:
///   - samples: mono signal, any rate (the STFT itself does not need it).
///   - nFFT: FFT size in samples, > 0 (default 2048). Any size works; FFTW is fastest on
///     products of small primes.
///   - hopLength: samples between frame starts, > 0 (default `winLength / 4`, as librosa).
///   - winLength: Hann window length in samples, `1...nFFT` (default `nFFT`).
///   - power: exponent applied to the magnitude, > 0 (default 1: magnitude).
/// - Returns: `[nFFT / 2 + 1, stftFrameCount(...)]`, row-major.
public func spectrogram(samples: [Float], nFFT: Int = 2048, hopLength: Int? = nil,
                        winLength: Int? = nil, power: Float = 1) throws -> Spectrogram {
    let analysis = try STFTAnalysis(nFFT: nFFT, hopLength: hopLength, winLength: winLength, power: power)
    guard !samples.isEmpty else { throw DSPError.emptySignal }
    let bins = analysis.bins
    let frames = stftFrameCount(sampleCount: samples.count, nFFT: nFFT, hopLength: analysis.hopLength)
    var values = [Float](repeating: 0, count: bins * frames)
    values.withUnsafeMutableBufferPointer { out in
        analysis.forEachFrame(samples: samples, frames: 0..<frames) { frame, column in
            for bin in 0..<bins { out[bin * frames + frame] = column[bin] }
        }
    }
    return Spectrogram(rows: bins, frames: frames, values: values)
}

/// Validated STFT parameters plus the shared FFT plan and window; turns a signal into
/// `|X|^power` columns one frame at a time, so callers can consume each column while it is
/// still in cache (the mel projection does) instead of materialising the full spectrogram.
struct STFTAnalysis {
    let nFFT: Int
    let hopLength: Int
    let winLength: Int
    let power: Float
    let window: [Float]
    let fft: RealFFT

    var bins: Int { nFFT / 2 + 1 }

    private static let windows = LockedCache<WindowKey, [Float]>()
    private struct WindowKey: Hashable { var nFFT: Int; var winLength: Int }

    init(nFFT: Int, hopLength: Int?, winLength: Int?, power: Float) throws {
        guard nFFT > 0 else {
            throw DSPError.invalidParameter(name: "nFFT", value: "\(nFFT)", expected: "a positive FFT size in samples, e.g. 2048")
        }
        let winLength = winLength ?? nFFT
        guard winLength > 0 && winLength <= nFFT else {
            throw DSPError.invalidParameter(name: "winLength", value: "\(winLength)",
                                            expected: "1...nFFT (\(nFFT)); raise nFFT or shorten the window")
        }
        let hopLength = hopLength ?? winLength / 4
        guard hopLength > 0 else {
            throw DSPError.invalidParameter(name: "hopLength", value: "\(hopLength)",
                                            expected: "a positive number of samples between frames (default winLength / 4 needs winLength >= 4)")
        }
        guard power > 0 && power.isFinite else {
            throw DSPError.invalidParameter(name: "power", value: "\(power)",
                                            expected: "a positive exponent: 1 for magnitude, 2 for power")
        }
        self.nFFT = nFFT
        self.hopLength = hopLength
        self.winLength = winLength
        self.power = power
        self.window = Self.windows.value(for: WindowKey(nFFT: nFFT, winLength: winLength)) {
            analysisWindow(nFFT: nFFT, winLength: winLength)
        }
        self.fft = RealFFT.plan(size: nFFT)
    }

    /// Calls `body(frame, column)` for each frame in `frames` (in order), where `column` holds
    /// the `bins` values `|X[k]|^power` of that frame. `column` is only valid inside `body`.
    ///
    /// Frame `t` covers samples `t * hopLength - nFFT / 2 ..< t * hopLength - nFFT / 2 + nFFT`
    /// of the signal; samples outside the signal are zero (librosa's `center=True`,
    /// `pad_mode="constant"`).
    func forEachFrame(samples: [Float], frames: Range<Int>,
                      _ body: (Int, UnsafeBufferPointer<Float>) -> Void) {
        let buffers = RealFFT.Buffers(size: nFFT)
        var column = [Float](repeating: 0, count: bins)
        let nFFT = nFFT, bins = bins, power = power, count = samples.count
        samples.withUnsafeBufferPointer { signal in
            window.withUnsafeBufferPointer { window in
                column.withUnsafeMutableBufferPointer { column in
                    let input = buffers.input, output = buffers.output
                    for frame in frames {
                        let start = frame * hopLength - nFFT / 2
                        if start >= 0 && start + nFFT <= count {
                            for i in 0..<nFFT { input[i] = signal[start + i] * window[i] }
                        } else {
                            // Edge frame: only part of it overlaps the signal.
                            let first = max(0, -start), end = min(nFFT, count - start)
                            for i in 0..<nFFT { input[i] = 0 }
                            if first < end {
                                for i in first..<end { input[i] = signal[start + i] * window[i] }
                            }
                        }
                        fft.execute(buffers)
                        for k in 0..<bins {
                            let re = output[2 * k], im = output[2 * k + 1]
                            column[k] = re * re + im * im
                        }
                        if power == 1 {
                            for k in 0..<bins { column[k] = column[k].squareRoot() }
                        } else if power != 2 {
                            let exponent = power / 2
                            for k in 0..<bins { column[k] = Float(pow(Double(column[k]), Double(exponent))) }
                        }
                        body(frame, UnsafeBufferPointer(column))
                    }
                }
            }
        }
        withExtendedLifetime(buffers) {}  // `input` and `output` point into it
    }
}
