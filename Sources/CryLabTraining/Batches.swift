import CryLabCore
import CryLabFeatures
import CryLabNN
import Foundation

/// Turns stored spectrograms into model batches: crop to the model's width, normalise, and
/// (for self-supervised objectives) hide time and frequency bands.
///
/// Tensors are channels-last, as everywhere in CryLab: `[batch, mels, frames, 1]`.
public struct SpectrogramBatcher: Sendable {
    public let store: FeatureStore
    /// Model input width in frames (at most the stored width).
    public let frames: Int
    /// Normalisation applied to every value: (x - mean) / std.
    public let mean: Float
    public let std: Float

    public init(store: FeatureStore, frames: Int, mean: Float, std: Float) {
        precondition(frames <= store.frames, "model width \(frames) exceeds stored width \(store.frames)")
        self.store = store
        self.frames = frames
        self.mean = mean
        self.std = std
    }

    /// Mean and standard deviation over the clips at `indices` (computed in Double).
    public static func statistics(of store: FeatureStore, indices: [Int]) -> (mean: Float, std: Float) {
        var sums = (sum: 0.0, squares: 0.0)
        accumulate(store.features, clips: indices, size: store.mels * store.frames, into: &sums)
        return statistics(sums, values: indices.count * store.mels * store.frames)
    }

    /// Σ x and Σ x² over the clips `indices` of an open store, read `chunk` clips at a time, in
    /// order (one rank's part of the statistics).
    public static func sums(reading reader: FeatureStoreReader, indices: [Int], chunk: Int = 256) throws -> (sum: Double, squares: Double) {
        var sums = (sum: 0.0, squares: 0.0)
        for start in stride(from: 0, to: indices.count, by: chunk) {
            let count = min(chunk, indices.count - start)
            accumulate(try reader.features(of: Array(indices[start..<(start + count)])), clips: Array(0..<count),
                       size: reader.mels * reader.frames, into: &sums)
        }
        return sums
    }

    /// Adds the values of `clips` (clip-major, `size` values each) and their squares, in order.
    private static func accumulate(_ features: [Float], clips: [Int], size: Int, into sums: inout (sum: Double, squares: Double)) {
        features.withUnsafeBufferPointer { values in
            for clip in clips {
                for i in (clip * size)..<((clip + 1) * size) {
                    let v = Double(values[i])
                    sums.sum += v
                    sums.squares += v * v
                }
            }
        }
    }

    /// Mean and standard deviation from Σ x and Σ x² over `values` values.
    public static func statistics(_ sums: (sum: Double, squares: Double), values: Int) -> (mean: Float, std: Float) {
        let count = Double(max(1, values))
        let mean = sums.sum / count
        return (Float(mean), Float(max(sums.squares / count - mean * mean, 1e-12).squareRoot()))
    }

    /// One clip's crop start: uniform in training (`generator` given), centred otherwise.
    func cropStart(using generator: inout SeededGenerator?) -> Int {
        let slack = store.frames - frames
        guard slack > 0 else { return 0 }
        if generator != nil { return Int.random(in: 0...slack, using: &generator!) }
        return slack / 2
    }

    /// The normalised input of the clips at `indices`: [count, mels, frames, 1].
    public func inputs(_ indices: [Int], random generator: inout SeededGenerator?) -> Tensor {
        let mels = store.mels, stored = store.frames, width = frames
        let inverse = 1 / std
        return Tensor(shape: [indices.count, mels, width, 1]) { out in
            store.features.withUnsafeBufferPointer { values in
                for (b, index) in indices.enumerated() {
                    let start = cropStart(using: &generator)
                    for m in 0..<mels {
                        let source = (index * mels + m) * stored + start
                        let target = (b * mels + m) * width
                        for t in 0..<width { out[target + t] = (values[source + t] - mean) * inverse }
                    }
                }
            }
        }
    }

    /// Hides bands of `input` in place (set to 0, the normalised mean) and returns the mask of
    /// hidden cells (1 hidden, 0 visible), shaped like the input.
    public static func applyMasks(_ input: inout Tensor, objective: ObjectiveRecipe, using generator: inout SeededGenerator) -> Tensor {
        let (batch, mels, frames) = (input.shape[0], input.shape[1], input.shape[2])
        var mask = Tensor(zeros: input.shape)
        for b in 0..<batch {
            for _ in 0..<objective.timeMasks.count {
                let width = Int.random(in: 0...min(objective.timeMasks.width, frames), using: &generator)
                let start = Int.random(in: 0...(frames - width), using: &generator)
                for m in 0..<mels { for t in start..<(start + width) { mask.values[(b * mels + m) * frames + t] = 1 } }
            }
            for _ in 0..<objective.frequencyMasks.count {
                let width = Int.random(in: 0...min(objective.frequencyMasks.width, mels), using: &generator)
                let start = Int.random(in: 0...(mels - width), using: &generator)
                for m in start..<(start + width) { for t in 0..<frames { mask.values[(b * mels + m) * frames + t] = 1 } }
            }
        }
        let patches = objective.patches
        if patches.ratio > 0 {
            // Non-overlapping patches from the top-left corner; edge patches are cut to fit.
            for b in 0..<batch {
                for top in stride(from: 0, to: mels, by: patches.mels) {
                    for left in stride(from: 0, to: frames, by: patches.frames)
                    where Double.random(in: 0..<1, using: &generator) < patches.ratio {
                        for m in top..<min(top + patches.mels, mels) {
                            for t in left..<min(left + patches.frames, frames) { mask.values[(b * mels + m) * frames + t] = 1 }
                        }
                    }
                }
            }
        }
        for i in 0..<input.values.count where mask.values[i] != 0 { input.values[i] = 0 }
        return mask
    }

    /// Mixes, with `mixing.probability`, the next clip of the batch (the last takes the first)
    /// into each clip of `input`, in power: the values are normalised dB (`(dB - mean) / std`),
    /// the other clip is lowered by a level drawn from `minimumDB...maximumDB`.
    /// input: [batch, mels, frames, 1]
    public static func mixClips(_ input: inout Tensor, mixing: MixingRecipe, mean: Float, std: Float,
                                using generator: inout SeededGenerator) {
        let batch = input.shape[0]
        guard mixing.probability > 0, batch > 1 else { return }
        let size = input.count / batch
        let clean = input.values
        for b in 0..<batch where Double.random(in: 0..<1, using: &generator) < mixing.probability {
            let other = (b + 1) % batch
            let attenuation = Float.random(in: mixing.minimumDB...mixing.maximumDB, using: &generator)
            for i in 0..<size {
                let own = clean[b * size + i] * std + mean, added = clean[other * size + i] * std + mean - attenuation
                let mixed = 10 * log10(pow(10, own / 10) + pow(10, added / 10))
                input.values[b * size + i] = (mixed - mean) / std
            }
        }
    }

    /// Level, time and frequency augmentation of whole clips (input and target alike): each clip
    /// shifted by up to `gainDB` dB (the values are normalised dB, so by `gain / std`), rolled
    /// circularly by up to `timeShift` frames either way, and moved by up to `frequencyShift` mel
    /// bands either way (the edge band repeated into the gap).
    /// input: [batch, mels, frames, 1]
    public static func shiftClips(_ input: inout Tensor, gainDB: Float, timeShift: Int, frequencyShift: Int = 0, std: Float,
                                  using generator: inout SeededGenerator) {
        guard gainDB > 0 || timeShift > 0 || frequencyShift > 0 else { return }
        let (batch, mels, frames) = (input.shape[0], input.shape[1], input.shape[2])
        let original = input.values
        for b in 0..<batch {
            let gain = gainDB > 0 ? Float.random(in: -gainDB...gainDB, using: &generator) / std : 0
            let shift = timeShift > 0 ? Int.random(in: -min(timeShift, frames - 1)...min(timeShift, frames - 1), using: &generator) : 0
            let bands = frequencyShift > 0 ? Int.random(in: -min(frequencyShift, mels - 1)...min(frequencyShift, mels - 1), using: &generator) : 0
            for m in 0..<mels {
                let row = (b * mels + m) * frames
                let source = (b * mels + min(max(m - bands, 0), mels - 1)) * frames
                for t in 0..<frames { input.values[row + (t + shift + frames) % frames] = original[source + t] + gain }
            }
        }
    }

    /// Adds Gaussian noise of standard deviation `std` (Box-Muller) in place.
    public static func addNoise(_ input: inout Tensor, std: Float, using generator: inout SeededGenerator) {
        guard std > 0 else { return }
        for i in 0..<input.values.count {
            let u1 = max(Double.random(in: 0..<1, using: &generator), 1e-12), u2 = Double.random(in: 0..<1, using: &generator)
            input.values[i] += std * Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
        }
    }
}

extension SpectrogramBatcher {
    /// Runs `model` in inference mode on centre crops of the stored clips `indices`, `batchSize`
    /// at a time. Returns each clip's output flattened (e.g. [classes], or [height * width *
    /// channels] for an encoder) and the per-clip output shape.
    public func predict(_ model: Model, indices: [Int], batchSize: Int = 32) -> (rows: [[Float]], shape: [Int]) {
        var rows: [[Float]] = []
        var shape: [Int] = []
        for start in stride(from: 0, to: indices.count, by: batchSize) {
            let batch = Array(indices[start..<min(start + batchSize, indices.count)])
            var centre: SeededGenerator? = nil
            let output = model.predict(inputs(batch, random: &centre))
            shape = Array(output.shape.dropFirst())
            let size = output.count / batch.count
            for row in 0..<batch.count { rows.append(Array(output.values[(row * size)..<((row + 1) * size)])) }
        }
        return (rows, shape)
    }
}

/// Mean and standard deviation of each channel over every other position of a channels-last
/// map: values [positions * channels] -> (means [channels], stds [channels]).
func channelMeansAndStds(_ values: [Float], channels: Int) -> (means: [Double], stds: [Double]) {
    var sums = [Double](repeating: 0, count: channels), squares = sums
    for (offset, value) in values.enumerated() {
        sums[offset % channels] += Double(value)
        squares[offset % channels] += Double(value) * Double(value)
    }
    let positions = Double(max(1, values.count / channels))
    let means = sums.map { $0 / positions }
    let stds = (0..<channels).map { max(0, squares[$0] / positions - means[$0] * means[$0]).squareRoot() }
    return (means, stds)
}

/// Rows of two batch tensors `[batch, ...]`, one after the other.
func concatenateRows(_ first: Tensor, _ second: Tensor) -> Tensor {
    var shape = first.shape
    shape[0] += second.shape[0]
    return Tensor(shape: shape, values: first.values + second.values)
}

/// The rows `rows` of a batch tensor `[batch, ...]`.
func rows(_ tensor: Tensor, _ rows: Range<Int>) -> Tensor {
    let size = tensor.count / max(tensor.shape[0], 1)
    var shape = tensor.shape
    shape[0] = rows.count
    return Tensor(shape: shape, values: Array(tensor.values[(rows.lowerBound * size)..<(rows.upperBound * size)]))
}
