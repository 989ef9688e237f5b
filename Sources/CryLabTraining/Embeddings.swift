import CryLabCore
import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import Foundation

/// How an encoder's output map [height (mel bands), width (frames), channels] becomes one
/// vector per clip.
public enum EmbeddingPool: String, Codable, Sendable, CaseIterable {
    /// The whole map, unpooled.
    case none
    /// Each channel's mean over time and frequency: `channels` values.
    case mean
    /// Each channel's mean and standard deviation over time and frequency: 2 x `channels`.
    case meanStd = "mean-std"
    /// Each channel's mean and standard deviation over time, for each row of mel bands the
    /// map keeps: 2 x `height` x `channels`. Keeps where in frequency a pattern sits, which
    /// pooling over frequency throws away.
    case bandMeanStd = "band-mean-std"

    /// Values per clip for an output map of `shape` [height, width, channels].
    public func size(of shape: [Int]) -> [Int] {
        let channels = shape.last!
        switch self {
        case .none: return shape
        case .mean: return [channels]
        case .meanStd: return [2 * channels]
        case .bandMeanStd: return [2 * shape[0] * channels]
        }
    }

    /// Pools one clip's map, `values` laid out [height, width, channels]. For `.bandMeanStd`
    /// the means of every row come first, then the standard deviations.
    public func pool(_ values: [Float], shape: [Int]) -> [Double] {
        switch self {
        case .none:
            return values.map(Double.init)
        case .mean:
            return channelMeansAndStds(values, channels: shape.last!).means
        case .meanStd:
            let (means, stds) = channelMeansAndStds(values, channels: shape.last!)
            return means + stds
        case .bandMeanStd:
            let rows = shape[0], rowSize = values.count / rows
            var means: [Double] = [], stds: [Double] = []
            for row in 0..<rows {
                let (m, s) = channelMeansAndStds(Array(values[(row * rowSize)..<((row + 1) * rowSize)]), channels: shape.last!)
                means += m
                stds += s
            }
            return means + stds
        }
    }
}

/// Encoder outputs for every clip of a feature store.
public struct Embeddings {
    /// [clips, ...]: pooled [clips, features] (see `EmbeddingPool`), or [clips, height, width, channels].
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
            if pool == .none {
                values.append(contentsOf: row)
            } else {
                values.append(contentsOf: pool.pool(row, shape: outputShape).map(Float.init))
            }
        }
        self.values = values
        self.shape = [store.count] + pool.size(of: outputShape)
        self.store = store
    }

    public func write(to path: String) throws {
        try FeatureStore.writeTable(to: path, values: values, shape: shape, name: "embedding", like: store)
    }
}
