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
        let (rows, outputShape) = batcher.predict(encoder.model, indices: Array(0..<store.count))
        // rows: one [height * width * channels] map per clip
        var values: [Float] = []
        for row in rows {
            switch pool {
            case .none:
                values.append(contentsOf: row)
            case .mean, .meanStd:
                let (means, stds) = channelMeansAndStds(row, channels: outputShape.last!)
                values.append(contentsOf: means.map(Float.init))
                if pool == .meanStd { values.append(contentsOf: stds.map(Float.init)) }
            }
        }
        let channels = outputShape.last!
        let perClip = pool == .none ? outputShape : [pool == .meanStd ? 2 * channels : channels]
        self.values = values
        self.shape = [store.count] + perClip
        self.store = store
    }

    public func write(to path: String) throws {
        try FeatureStore.writeTable(to: path, values: values, shape: shape, name: "embedding", like: store)
    }
}
