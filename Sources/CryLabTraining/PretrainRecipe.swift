import CryLabDSP
import CryLabNN
import Foundation

/// The U-Net's shape, without its input size (which follows from the front end and `frames`).
public struct UNetRecipe: Codable, Sendable, Equatable {
    /// Channels per level; the last is the bottleneck (default the story's 32, 64, 128, 256, 512).
    public var widths: [Int] = [32, 64, 128, 256, 512]
    public var kernelSize: Int = 3
    public var convolutionsPerLevel: Int = 2
    /// Skip connection per encoder level, top first; default all on (the story's U-Net).
    public var skipConnections: [Bool]?
    public var batchNormalization: Bool = false
    /// Under mpirun, BatchNormalization takes its batch statistics over the whole global batch
    /// (summed over the ranks), as one process would; by default each rank uses its own share's,
    /// as PyTorch's DistributedDataParallel does. No effect in one process.
    public var syncBatchNorm: Bool = false
    public var dropoutRate: Float = 0
    /// Width of the model input in frames (a crop of the stored spectrogram); default: all of it.
    public var frames: Int?

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case widths, kernelSize, convolutionsPerLevel, skipConnections, batchNormalization, syncBatchNorm, dropoutRate, frames
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        widths = try c.decodeIfPresent([Int].self, forKey: .widths) ?? widths
        kernelSize = try c.decodeIfPresent(Int.self, forKey: .kernelSize) ?? kernelSize
        convolutionsPerLevel = try c.decodeIfPresent(Int.self, forKey: .convolutionsPerLevel) ?? convolutionsPerLevel
        skipConnections = try c.decodeIfPresent([Bool].self, forKey: .skipConnections)
        batchNormalization = try c.decodeIfPresent(Bool.self, forKey: .batchNormalization) ?? batchNormalization
        syncBatchNorm = try c.decodeIfPresent(Bool.self, forKey: .syncBatchNorm) ?? syncBatchNorm
        if syncBatchNorm && !batchNormalization {
            throw DecodingError.dataCorruptedError(forKey: .syncBatchNorm, in: c, debugDescription: "the model has no BatchNormalization to synchronise; set batchNormalization: true or drop syncBatchNorm")
        }
        dropoutRate = try c.decodeIfPresent(Float.self, forKey: .dropoutRate) ?? dropoutRate
        frames = try c.decodeIfPresent(Int.self, forKey: .frames)
        guard widths.count >= 2, widths.allSatisfy({ $0 > 0 }) else {
            throw DecodingError.dataCorruptedError(forKey: .widths, in: c, debugDescription: "needs at least two positive widths (levels + bottleneck), got \(widths)")
        }
        guard kernelSize % 2 == 1 else {
            throw DecodingError.dataCorruptedError(forKey: .kernelSize, in: c, debugDescription: "must be odd, got \(kernelSize)")
        }
        if let skipConnections, skipConnections.count != widths.count - 1 {
            throw DecodingError.dataCorruptedError(forKey: .skipConnections, in: c,
                debugDescription: "needs one entry per encoder level (\(widths.count - 1)), got \(skipConnections.count)")
        }
    }

    /// The engine's configuration for inputs of `mels` x `frames`; an error names `file` and
    /// the key this shape stands under in it.
    func configuration(mels: Int, frames: Int, seed: UInt64, file: String, key: String) throws -> UNetConfiguration {
        let factor = 1 << (widths.count - 1)
        guard mels % factor == 0, frames % factor == 0 else {
            throw RecipeError(file: file, message: "key '\(key)': an input of \(mels) mels x \(frames) frames cannot be pooled \(widths.count - 1) times; both must be multiples of \(factor) (set \(key).frames or frontEnd.nMels)")
        }
        return UNetConfiguration(inputShape: [mels, frames, 1], widths: widths, kernelSize: kernelSize,
                                 convolutionsPerLevel: convolutionsPerLevel, skipConnections: skipConnections,
                                 batchNormalization: batchNormalization, dropoutRate: dropoutRate, seed: seed)
    }
}

/// What the autoencoder is asked to do.
public struct ObjectiveRecipe: Codable, Sendable, Equatable {
    public enum Loss: String, Codable, Sendable, CaseIterable {
        /// Mean squared error over the whole spectrogram (the story's objective).
        case all
        /// Only over the masked time-frequency cells: the model must infer them from context.
        case masked
        public init(from decoder: Decoder) throws { self = try decodeChoice(Loss.self, from: decoder) }
    }
    /// Time masks hiding `count` bands of up to `width` frames from the input.
    public var timeMasks = MaskRecipe()
    /// Frequency masks hiding `count` bands of up to `width` mel bins from the input.
    public var frequencyMasks = MaskRecipe()
    /// Time-frequency patches hidden at random (Audio-MAE style, which hides about 80 %).
    public var patches = PatchMaskRecipe()
    /// Another clip of the batch mixed into the input (in power, at a random level below the
    /// clip's), the clean clip the target: denoising.
    public var mixing = MixingRecipe()
    /// Augmentation of input and target alike: a random level change of up to this many dB.
    public var gainDB: Float = 0
    /// Augmentation of input and target alike: a circular shift in time of up to this many frames.
    public var timeShift: Int = 0
    /// Augmentation of input and target alike: a shift along the mel axis of up to this many
    /// bands either way, the edge band repeated into the gap (a crude vocal-tract-length change).
    public var frequencyShift: Int = 0
    /// Standard deviation of Gaussian noise added to the (normalised) input.
    public var noise: Float = 0
    public var loss: Loss = .all
    /// A second term: two augmented views of each clip should agree on the encoder's pooled
    /// output (contrastive, off by default).
    public var invariance = InvarianceRecipe()

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case timeMasks, frequencyMasks, patches, mixing, gainDB, timeShift, frequencyShift, noise, loss, invariance
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        timeMasks = try c.decodeIfPresent(MaskRecipe.self, forKey: .timeMasks) ?? timeMasks
        frequencyMasks = try c.decodeIfPresent(MaskRecipe.self, forKey: .frequencyMasks) ?? frequencyMasks
        patches = try c.decodeIfPresent(PatchMaskRecipe.self, forKey: .patches) ?? patches
        mixing = try c.decodeIfPresent(MixingRecipe.self, forKey: .mixing) ?? mixing
        gainDB = try c.decodeIfPresent(Float.self, forKey: .gainDB) ?? gainDB
        timeShift = try c.decodeIfPresent(Int.self, forKey: .timeShift) ?? timeShift
        frequencyShift = try c.decodeIfPresent(Int.self, forKey: .frequencyShift) ?? frequencyShift
        invariance = try c.decodeIfPresent(InvarianceRecipe.self, forKey: .invariance) ?? invariance
        noise = try c.decodeIfPresent(Float.self, forKey: .noise) ?? noise
        loss = try c.decodeIfPresent(Loss.self, forKey: .loss) ?? loss
        if loss == .masked && !masks {
            throw DecodingError.dataCorruptedError(forKey: .loss, in: c, debugDescription: "'masked' needs timeMasks, frequencyMasks or patches that hide something (a count or ratio above 0)")
        }
        guard gainDB >= 0, timeShift >= 0, frequencyShift >= 0 else {
            throw DecodingError.dataCorruptedError(forKey: .gainDB, in: c, debugDescription: "gainDB, timeShift and frequencyShift must be 0 or more, got \(gainDB), \(timeShift) and \(frequencyShift)")
        }
    }

    public var masks: Bool { timeMasks.count > 0 || frequencyMasks.count > 0 || patches.ratio > 0 }
}

/// The contrastive invariance term (SimCLR's NT-Xent on two views, as COLA and BYOL-A use views):
/// each clip is augmented twice (the objective's gain, time and frequency shifts, mixing and
/// masks), the encoder's output (the levels an exported encoder keeps) is averaged over time
/// and frequency and centred on the batch, and each view must pick its twin, by cosine
/// similarity over `temperature`, among the other 2 x batch - 1 views. Added to the
/// reconstruction loss times `weight`.
public struct InvarianceRecipe: Codable, Sendable, Equatable {
    /// 0 turns the term off.
    public var weight: Double = 0
    public var temperature: Double = 0.2

    public init(weight: Double = 0, temperature: Double = 0.2) {
        self.weight = weight
        self.temperature = temperature
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case weight, temperature }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        weight = try c.decodeIfPresent(Double.self, forKey: .weight) ?? 0
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature) ?? 0.2
        guard weight >= 0 else { throw DecodingError.dataCorruptedError(forKey: .weight, in: c, debugDescription: "must be 0 or more, got \(weight)") }
        guard temperature > 0 else { throw DecodingError.dataCorruptedError(forKey: .temperature, in: c, debugDescription: "must be above 0, got \(temperature)") }
    }
}

/// Non-overlapping patches of `mels` x `frames` cells, each hidden with probability `ratio`.
public struct PatchMaskRecipe: Codable, Sendable, Equatable {
    public var ratio: Double = 0
    public var mels: Int = 4
    public var frames: Int = 4

    public init(ratio: Double = 0, mels: Int = 4, frames: Int = 4) {
        self.ratio = ratio
        self.mels = mels
        self.frames = frames
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case ratio, mels, frames }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ratio = try c.decodeIfPresent(Double.self, forKey: .ratio) ?? 0
        mels = try c.decodeIfPresent(Int.self, forKey: .mels) ?? 4
        frames = try c.decodeIfPresent(Int.self, forKey: .frames) ?? 4
        guard (0..<1).contains(ratio) else { throw DecodingError.dataCorruptedError(forKey: .ratio, in: c, debugDescription: "must be in [0, 1), got \(ratio)") }
        guard mels >= 1, frames >= 1 else { throw DecodingError.dataCorruptedError(forKey: .mels, in: c, debugDescription: "patch sides must be at least 1, got \(mels) x \(frames)") }
    }
}

/// Denoising by mixing: with `probability`, another clip is added to the input at a level
/// `minimumDB`...`maximumDB` below the clip's own.
public struct MixingRecipe: Codable, Sendable, Equatable {
    public var probability: Double = 0
    public var minimumDB: Float = 3
    public var maximumDB: Float = 15

    public init(probability: Double = 0, minimumDB: Float = 3, maximumDB: Float = 15) {
        self.probability = probability
        self.minimumDB = minimumDB
        self.maximumDB = maximumDB
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case probability, minimumDB, maximumDB }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        probability = try c.decodeIfPresent(Double.self, forKey: .probability) ?? 0
        minimumDB = try c.decodeIfPresent(Float.self, forKey: .minimumDB) ?? 3
        maximumDB = try c.decodeIfPresent(Float.self, forKey: .maximumDB) ?? 15
        guard (0...1).contains(probability) else { throw DecodingError.dataCorruptedError(forKey: .probability, in: c, debugDescription: "must be in [0, 1], got \(probability)") }
        guard minimumDB <= maximumDB else { throw DecodingError.dataCorruptedError(forKey: .maximumDB, in: c, debugDescription: "must be at least minimumDB (\(minimumDB)), got \(maximumDB)") }
    }
}

/// `crylab pretrain`'s recipe. Every field has a default; see `Recipes/pretrain.yaml`.
public struct PretrainRecipe: Codable, Sendable, Equatable, LoadableRecipe {
    /// Where it was read from (not a key).
    public var path = "PretrainRecipe()"
    /// Run name: output goes to `Checkpoints/<name>/` unless --output says otherwise.
    public var name: String = "pretrain"
    /// The audio front end (a preset plus overrides); must match a feature store given as data.
    public var frontEnd: FrontEnd = .recommended
    /// Normalise inputs by the training split's mean and standard deviation (default true).
    public var normalize: Bool = true
    public var model = UNetRecipe()
    public var objective = ObjectiveRecipe()
    public var training = TrainingRecipe()

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case name, frontEnd, normalize, model, objective, training }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? name
        frontEnd = try c.decodeIfPresent(FrontEndRecipe.self, forKey: .frontEnd)?.value ?? frontEnd
        normalize = try c.decodeIfPresent(Bool.self, forKey: .normalize) ?? normalize
        model = try c.decodeIfPresent(UNetRecipe.self, forKey: .model) ?? model
        objective = try c.decodeIfPresent(ObjectiveRecipe.self, forKey: .objective) ?? objective
        training = try c.decodeIfPresent(TrainingRecipe.self, forKey: .training) ?? training
        do { try frontEnd.validate() } catch {
            throw DecodingError.dataCorruptedError(forKey: .frontEnd, in: c, debugDescription: "\(error)")
        }
        guard frontEnd.frames != nil else {
            throw DecodingError.dataCorruptedError(forKey: .frontEnd, in: c, debugDescription: "needs 'frames': a fixed number of frames per clip")
        }
    }

    public static func load(_ path: String) throws -> (recipe: PretrainRecipe, text: String) {
        try loadRecipeFile(PretrainRecipe.self, path: path)
    }

    /// The U-Net for data of `mels` x `frames` (cropped to `model.frames`).
    public func modelConfiguration(mels: Int, frames: Int) throws -> UNetConfiguration {
        try model.configuration(mels: mels, frames: model.frames ?? frames, seed: training.seed, file: path, key: "model")
    }
}
