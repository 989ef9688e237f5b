// Fixed-size inputs: make every spectrogram exactly `frames` wide.

/// How a spectrogram is brought to a fixed number of frames.
///
/// In every mode a spectrogram that is too short is padded at the end with `padding`
/// (zeros by default: silence, for a power spectrogram).
public enum FrameFit: String, Codable, Sendable, CaseIterable {
    /// Keep the first `frames` frames (truncate at the end): the seed recipe's behaviour.
    case padTruncate
    /// Keep a window of `frames` frames starting at a uniformly random frame (training).
    /// Where no generator is given (evaluation), it falls back to `centerCrop`.
    case randomCrop
    /// Keep the middle `frames` frames, starting at `(available - frames) / 2` (evaluation).
    case centerCrop
}

/// The frames to keep out of `available`: a range of at most `frames` frames.
/// `randomStart(maxStart)` picks the start in `0...maxStart` of a `.randomCrop`: a uniform
/// draw in training, `centreStart` in evaluation.
func frameWindow(available: Int, frames: Int, mode: FrameFit, randomStart: (Int) -> Int) -> Range<Int> {
    guard available > frames else { return 0..<available }
    let maxStart = available - frames
    let start: Int
    switch mode {
    case .padTruncate: start = 0
    case .centerCrop: start = centreStart(maxStart)
    case .randomCrop: start = randomStart(maxStart)
    }
    return start..<(start + frames)
}

/// The centre crop's start: `(available - frames) / 2`, rounded down.
func centreStart(_ maxStart: Int) -> Int { maxStart / 2 }

/// Brings `spectrogram` to exactly `frames` frames with `mode` (random crops draw from
/// `generator`); short spectrograms are padded at the end with `padding`.
public func fitFrames(_ spectrogram: Spectrogram, frames: Int, mode: FrameFit, padding: Float = 0,
                      using generator: inout some RandomNumberGenerator) throws -> Spectrogram {
    try fitFrames(spectrogram, frames: frames, mode: mode, padding: padding,
                  randomStart: { Int.random(in: 0...$0, using: &generator) })
}

/// Brings `spectrogram` to exactly `frames` frames with `mode`, the evaluation way:
/// `.randomCrop` becomes a centre crop. Short spectrograms are padded at the end with `padding`.
public func fitFrames(_ spectrogram: Spectrogram, frames: Int, mode: FrameFit, padding: Float = 0) throws -> Spectrogram {
    try fitFrames(spectrogram, frames: frames, mode: mode, padding: padding, randomStart: centreStart)
}

private func fitFrames(_ spectrogram: Spectrogram, frames: Int, mode: FrameFit, padding: Float,
                       randomStart: (Int) -> Int) throws -> Spectrogram {
    guard frames > 0 else {
        throw DSPError.invalidParameter(name: "frames", value: "\(frames)", expected: "a positive number of frames, e.g. 128")
    }
    let kept = frameWindow(available: spectrogram.frames, frames: frames, mode: mode, randomStart: randomStart)
    var output = Spectrogram(rows: spectrogram.rows, frames: frames,
                             values: [Float](repeating: padding, count: spectrogram.rows * frames))
    for row in 0..<spectrogram.rows {
        let source = row * spectrogram.frames + kept.lowerBound
        output.values[(row * frames)..<(row * frames + kept.count)] = spectrogram.values[source..<(source + kept.count)]
    }
    return output
}
