// The two values every stage of the front end passes around: a spectrogram and an error.

/// A real-valued time-frequency matrix: an STFT spectrogram or a mel spectrogram.
///
/// Layout: `values` is row-major `[rows, frames]` — row `r` (an FFT bin or a mel band,
/// lowest frequency first) is `values[r * frames ..< (r + 1) * frames]`. This is the layout
/// of librosa's `(n_mels, t)` and `(1 + n_fft // 2, t)` arrays in C order.
public struct Spectrogram: Sendable, Equatable {
    /// Frequency rows: `nFFT / 2 + 1` for an STFT spectrogram, `nMels` for a mel spectrogram.
    public let rows: Int
    /// Time frames (columns).
    public let frames: Int
    /// `rows * frames` values, row-major.
    public var values: [Float]

    /// Wraps `values` (row-major `[rows, frames]`); the count must be `rows * frames`.
    public init(rows: Int, frames: Int, values: [Float]) {
        precondition(rows >= 0 && frames >= 0 && values.count == rows * frames,
                     "Spectrogram(rows: \(rows), frames: \(frames)) needs \(rows * frames) values, got \(values.count)")
        self.rows = rows
        self.frames = frames
        self.values = values
    }

    /// A spectrogram of zeros.
    public init(rows: Int, frames: Int) {
        self.init(rows: rows, frames: frames, values: [Float](repeating: 0, count: rows * frames))
    }

    public subscript(row row: Int, frame frame: Int) -> Float {
        get { values[row * frames + frame] }
        set { values[row * frames + frame] = newValue }
    }

    /// The largest value (0 for an empty spectrogram).
    public var maximum: Float { values.max() ?? 0 }
}

/// A parameter or input the front end cannot work with. The description says what was
/// given, what was expected, and how to fix it.
public enum DSPError: Error, CustomStringConvertible, Equatable {
    /// `name` had `value`; `expected` states the valid range and, where useful, the fix.
    case invalidParameter(name: String, value: String, expected: String)
    /// The signal has no samples; there is nothing to analyse.
    case emptySignal

    public var description: String {
        switch self {
        case let .invalidParameter(name, value, expected):
            return "CryLabDSP: \(name) = \(value) is invalid; expected \(expected)"
        case .emptySignal:
            return "CryLabDSP: the signal has no samples; expected at least one (check that the audio file decoded to a non-empty clip)"
        }
    }
}
