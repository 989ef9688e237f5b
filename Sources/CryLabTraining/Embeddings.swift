import CryLabCore
import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import Foundation

public enum EmbeddingPool: String, Sendable, CaseIterable {
    case none, mean, meanStd = "mean-std"
}

/// Encoder outputs for every clip of a feature store.
public struct Embeddings {
    /// [clips, ...]: pooled [clips, channels] or [clips, 2 * channels], or [clips, height, width, channels].
    public var values: [Float]
    public var shape: [Int]
    public var store: FeatureStore

    public init(encoder: EncoderFile, store: FeatureStore, pool: EmbeddingPool) throws {
        if let frontEnd = encoder.frontEnd, frontEnd != store.frontEnd {
            throw RecipeError(file: "data", message: "was made with another front end than the encoder's (\(describeDifference(store.frontEnd, frontEnd)))")
        }
        let frames = encoder.configuration.inputShape[1]
        guard store.frames >= frames else {
            throw RecipeError(file: "data", message: "clips are \(store.frames) frames wide, the encoder takes \(frames)")
        }
        let batcher = SpectrogramBatcher(store: store, frames: frames, mean: encoder.normalization?.mean ?? 0,
                                         std: encoder.normalization?.std ?? 1)
        var values: [Float] = []
        var perClip: [Int] = []
        for start in stride(from: 0, to: store.count, by: 32) {
            let batch = Array(start..<min(start + 32, store.count))
            var noCrop: SeededGenerator? = nil
            let output = encoder.model.predict(batcher.inputs(batch, random: &noCrop))
            // output: [batch, height, width, channels]
            let (cells, channels) = (output.shape[1] * output.shape[2], output.shape[3])
            perClip = Array(output.shape.dropFirst())
            for b in 0..<batch.count {
                let slice = output.values[(b * cells * channels)..<((b + 1) * cells * channels)]
                switch pool {
                case .none:
                    values.append(contentsOf: slice)
                case .mean, .meanStd:
                    var sums = [Double](repeating: 0, count: channels), squares = sums
                    for (offset, value) in slice.enumerated() {
                        sums[offset % channels] += Double(value)
                        squares[offset % channels] += Double(value) * Double(value)
                    }
                    let means = sums.map { $0 / Double(cells) }
                    values.append(contentsOf: means.map(Float.init))
                    if pool == .meanStd {
                        values.append(contentsOf: (0..<channels).map { Float(max(0, squares[$0] / Double(cells) - means[$0] * means[$0]).squareRoot()) })
                    }
                }
            }
            if pool != .none { perClip = [pool == .meanStd ? 2 * channels : channels] }
        }
        self.values = values
        self.shape = [store.count] + perClip
        self.store = store
    }

    public func write(to path: String) throws {
        try FeatureStore.writeTable(to: path, values: values, shape: shape, name: "embedding", like: store)
    }
}
