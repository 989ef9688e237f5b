import CryLabCore
import CryLabAudio
import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabNN
import CryLabOneDNN
import Foundation

/// One file's prediction: the mean over its windows, and each window's probabilities.
public struct Prediction: Codable, Sendable {
    public var file: String
    public var predicted: String
    public var probabilities: [Double]
    public var classes: [String]
    /// Start of each window in seconds, and its probabilities.
    public var windows: [Window]

    public struct Window: Codable, Sendable {
        public var start: Double
        public var probabilities: [Double]
    }
}

/// A classifier checkpoint with what it needs to turn audio into probabilities.
public struct LoadedClassifier {
    public let model: Model
    public let frontEnd: FrontEnd
    public let classNames: [String]
    public let mean: Float
    public let std: Float

    /// The classifier in `path`, to run with `context`.
    public init(path: String, context: ComputeContext = .default) throws {
        let format = try Checkpoint.describe(path).format
        guard format.hasPrefix(Checkpoint.formatName) else {
            throw RecipeError(file: path, message: """
                is a Keras file (\(format)) without the class names and front end a classifier needs; use classifier.h5 \
                from `crylab finetune` (a Keras encoder can be fine-tuned into one: `crylab finetune --encoder \(path) --data STORE.h5 ...`)
                """)
        }
        let contents = try Checkpoint.load(path)
        guard contents.model.configuration?.kind == .classifier else {
            throw RecipeError(file: path, message: "is not a classifier (it holds a \(contents.model.configuration?.kind.rawValue ?? "model") ); use classifier.h5 from `crylab finetune`")
        }
        guard let frontEnd = contents.metadata.frontEnd, !contents.metadata.classNames.isEmpty else {
            throw RecipeError(file: path, message: "has no front end or class names in its metadata")
        }
        model = contents.model
        model.context = context
        self.frontEnd = frontEnd
        classNames = contents.metadata.classNames
        mean = contents.metadata.normalization?.mean ?? 0
        std = contents.metadata.normalization?.std ?? 1
    }

    var inputFrames: Int { model.inputShape[1] }

    /// Probabilities for stored clips (centre crops).
    public func predict(store: FeatureStore, indices: [Int]) throws -> [[Double]] {
        guard store.frontEnd == frontEnd else {
            throw RecipeError(file: "data", message: "was made with another front end than the classifier's (\(describeDifference(store.frontEnd, frontEnd)))")
        }
        let batcher = SpectrogramBatcher(store: store, frames: inputFrames, mean: mean, std: std)
        return batcher.predict(model, indices: indices).rows.map { $0.map(Double.init) }
    }

    /// Probabilities for a whole recording: half-overlapping windows of the model's width.
    public func predict(file: URL) throws -> Prediction {
        let clip = try loadAudio(file, sampleRate: frontEnd.sampleRate)
        // Every frame of the recording, padded (as the front end pads) to at least one window.
        var whole = frontEnd
        whole.duration = nil
        whole.fit = .padTruncate
        whole.frames = max(inputFrames, stftFrameCount(sampleCount: clip.samples.count, nFFT: frontEnd.nFFT, hopLength: frontEnd.resolvedHopLength))
        let spectrogram = try features(samples: clip.samples, config: whole)
        let width = inputFrames, mels = spectrogram.rows
        let hop = max(1, width / 2)
        var starts = Array(stride(from: 0, through: max(0, spectrogram.frames - width), by: hop))
        if let last = starts.last, last + width < spectrogram.frames { starts.append(spectrogram.frames - width) }
        var input = Tensor(zeros: [starts.count, mels, width, 1])
        for (b, start) in starts.enumerated() {
            for m in 0..<mels {
                for t in 0..<width {
                    input.values[(b * mels + m) * width + t] = (spectrogram.values[m * spectrogram.frames + start + t] - mean) / std
                }
            }
        }
        let output = model.predict(input)
        let k = classNames.count
        let windows = starts.enumerated().map { b, start in
            Prediction.Window(start: Double(start * frontEnd.resolvedHopLength) / Double(frontEnd.sampleRate),
                              probabilities: (0..<k).map { Double(output.values[b * k + $0]) })
        }
        let mean = (0..<k).map { c in windows.reduce(0) { $0 + $1.probabilities[c] } / Double(windows.count) }
        return Prediction(file: file.path, predicted: classNames[mean.indices.max { mean[$0] < mean[$1] }!],
                          probabilities: mean, classes: classNames, windows: windows)
    }
}
