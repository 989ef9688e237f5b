import CryLabDSP
import CryLabNN
import Foundation

/// One hidden Dense layer of the head.
public struct HiddenLayerRecipe: Codable, Sendable, Equatable {
    public var units: Int
    public var activation: Activation = .relu
    public var batchNormalization = false
    public var dropoutRate: Float = 0

    enum CodingKeys: String, CodingKey, CaseIterable { case units, activation, batchNormalization, dropoutRate }

    public init(units: Int, activation: Activation = .relu, batchNormalization: Bool = false, dropoutRate: Float = 0) {
        self.units = units
        self.activation = activation
        self.batchNormalization = batchNormalization
        self.dropoutRate = dropoutRate
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        units = try c.decode(Int.self, forKey: .units)
        activation = try c.decodeIfPresent(Activation.self, forKey: .activation) ?? .relu
        batchNormalization = try c.decodeIfPresent(Bool.self, forKey: .batchNormalization) ?? false
        dropoutRate = try c.decodeIfPresent(Float.self, forKey: .dropoutRate) ?? 0
        guard units > 0 else { throw DecodingError.dataCorruptedError(forKey: .units, in: c, debugDescription: "must be positive") }
        guard (0..<1).contains(dropoutRate) else { throw DecodingError.dataCorruptedError(forKey: .dropoutRate, in: c, debugDescription: "must be in [0, 1)") }
    }
}

/// The classifier on top of the encoder.
public struct HeadRecipe: Codable, Sendable, Equatable {
    public enum Pooling: String, Codable, Sendable, CaseIterable {
        case flatten, globalAverage
        public init(from decoder: Decoder) throws { self = try decodeChoice(Pooling.self, from: decoder) }
    }
    /// flatten (the story's: 65,536 features into Dense 1024) or globalAverage (default).
    public var pooling: Pooling = .globalAverage
    public var hidden: [HiddenLayerRecipe] = []
    /// Reproduces the story's wiring: its second and third Dropout took the Dense output, so those
    /// two BatchNormalization layers were never in the model. Off by default.
    public var storyDropoutWiring = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case pooling, hidden, storyDropoutWiring }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        pooling = try c.decodeIfPresent(Pooling.self, forKey: .pooling) ?? pooling
        hidden = try c.decodeIfPresent([HiddenLayerRecipe].self, forKey: .hidden) ?? hidden
        storyDropoutWiring = try c.decodeIfPresent(Bool.self, forKey: .storyDropoutWiring) ?? false
    }

    /// The engine's head: with the story's wiring, BatchNormalization stays only on the first layer.
    public var configuration: HeadConfiguration {
        let layers = hidden.enumerated().map { index, layer in
            HeadConfiguration.Hidden(units: layer.units, activation: layer.activation,
                                     batchNormalization: layer.batchNormalization && !(storyDropoutWiring && index > 0),
                                     dropoutRate: layer.dropoutRate)
        }
        return HeadConfiguration(pooling: pooling == .flatten ? .flatten : .globalAverage, hidden: layers)
    }
}

/// Which encoder weights train, and when that changes.
public struct FreezeRecipe: Codable, Sendable, Equatable {
    /// Freeze the first N encoder blocks (the story: 3 of 4); 0 trains everything.
    public var blocks: Int = 0
    /// Further layers to freeze by name (e.g. conv2d_6).
    public var layers: [String] = []
    /// Unfreeze everything at this epoch (1-based), with the learning rate times `unfreezeLearningRateMultiplier`.
    public var unfreezeAtEpoch: Int?
    public var unfreezeLearningRateMultiplier: Float = 0.1

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case blocks, layers, unfreezeAtEpoch, unfreezeLearningRateMultiplier }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        blocks = try c.decodeIfPresent(Int.self, forKey: .blocks) ?? 0
        layers = try c.decodeIfPresent([String].self, forKey: .layers) ?? []
        unfreezeAtEpoch = try c.decodeIfPresent(Int.self, forKey: .unfreezeAtEpoch)
        unfreezeLearningRateMultiplier = try c.decodeIfPresent(Float.self, forKey: .unfreezeLearningRateMultiplier) ?? 0.1
        guard blocks >= 0 else { throw DecodingError.dataCorruptedError(forKey: .blocks, in: c, debugDescription: "must be 0 or more") }
    }
}

/// How class imbalance is handled.
public struct ImbalanceRecipe: Codable, Sendable, Equatable {
    public enum Weights: String, Codable, Sendable, CaseIterable {
        case none, balanced
        public init(from decoder: Decoder) throws { self = try decodeChoice(Weights.self, from: decoder) }
    }
    public enum Sampling: String, Codable, Sendable, CaseIterable {
        case shuffle, balanced
        public init(from decoder: Decoder) throws { self = try decodeChoice(Sampling.self, from: decoder) }
    }
    /// Loss weight per class: balanced (n / (classes x count), default) or none.
    public var classWeights: Weights = .balanced
    /// Batches drawn by plain shuffling (default) or with every class equally likely.
    public var sampling: Sampling = .shuffle
    public var labelSmoothing: Float = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case classWeights, sampling, labelSmoothing }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        classWeights = try c.decodeIfPresent(Weights.self, forKey: .classWeights) ?? .balanced
        sampling = try c.decodeIfPresent(Sampling.self, forKey: .sampling) ?? .shuffle
        labelSmoothing = try c.decodeIfPresent(Float.self, forKey: .labelSmoothing) ?? 0
    }
}

/// Training-time augmentation of labeled spectrograms.
public struct AugmentRecipe: Codable, Sendable, Equatable {
    public var timeMasks = MaskRecipe()
    public var frequencyMasks = MaskRecipe()
    /// Gaussian noise on the normalised input.
    public var noise: Float = 0
    /// Mixup strength (Beta(alpha, alpha) mixing of pairs); 0 is off.
    public var mixup: Float = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case timeMasks, frequencyMasks, noise, mixup }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        timeMasks = try c.decodeIfPresent(MaskRecipe.self, forKey: .timeMasks) ?? timeMasks
        frequencyMasks = try c.decodeIfPresent(MaskRecipe.self, forKey: .frequencyMasks) ?? frequencyMasks
        noise = try c.decodeIfPresent(Float.self, forKey: .noise) ?? 0
        mixup = try c.decodeIfPresent(Float.self, forKey: .mixup) ?? 0
    }
}

/// How models are judged.
public struct EvaluationRecipe: Codable, Sendable, Equatable {
    public enum Split: String, Codable, Sendable, CaseIterable {
        /// k folds, grouped by recording source and stratified by class (default).
        case groupedKFold
        /// The story's random split of clips: families straddle train and test (optimistic).
        case random
        public init(from decoder: Decoder) throws { self = try decodeChoice(Split.self, from: decoder) }
    }
    public var split: Split = .groupedKFold
    public var folds: Int = 5
    /// Test share of the random split.
    public var testFraction: Double = 0.2
    /// After cross-validation, train one more model on all labeled clips and save it as classifier.h5.
    public var trainFinalModel = true
    /// After training, set every trained BatchNormalization layer's moving statistics to their
    /// average over the training clips (centre crops, no augmentation). Short runs need it: the
    /// momentum-0.99 statistics still hold much of their initial values (default false).
    public var recalibrateBatchNormalization = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case split, folds, testFraction, trainFinalModel, recalibrateBatchNormalization }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        split = try c.decodeIfPresent(Split.self, forKey: .split) ?? .groupedKFold
        folds = try c.decodeIfPresent(Int.self, forKey: .folds) ?? 5
        testFraction = try c.decodeIfPresent(Double.self, forKey: .testFraction) ?? 0.2
        trainFinalModel = try c.decodeIfPresent(Bool.self, forKey: .trainFinalModel) ?? true
        recalibrateBatchNormalization = try c.decodeIfPresent(Bool.self, forKey: .recalibrateBatchNormalization) ?? false
        guard folds >= 2 else { throw DecodingError.dataCorruptedError(forKey: .folds, in: c, debugDescription: "must be at least 2") }
    }
}

/// `crylab finetune`'s recipe. Every field has a default; see `Recipes/finetune.yaml`.
public struct FinetuneRecipe: Codable, Sendable, Equatable, LoadableRecipe {
    /// Where it was read from (not a key).
    public var path = "FinetuneRecipe()"
    public var name = "finetune"
    /// Front end for audio folders; must match the encoder's (default: the encoder's own).
    public var frontEnd: FrontEnd?
    /// Classes to use, in order (default: every labeled class of the data).
    public var classes: [String]?
    /// Store classes folded into a used class, e.g. {colic: belly_pain}.
    public var merge: [String: String] = [:]
    /// Encoder levels the classifier keeps (the story: 4, up to the second 256-convolution).
    public var encoderLevels: Int = 4
    /// The encoder's shape when training from scratch (ignored with --encoder: the file says).
    public var encoder = UNetRecipe()
    public var head = HeadRecipe()
    public var freeze = FreezeRecipe()
    public var imbalance = ImbalanceRecipe()
    public var augment = AugmentRecipe()
    public var training = TrainingRecipe()
    public var evaluation = EvaluationRecipe()

    public init() { training.epochs = 35 }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, frontEnd, classes, merge, encoderLevels, encoder, head, freeze, imbalance, augment, training, evaluation
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? name
        frontEnd = try c.decodeIfPresent(FrontEndRecipe.self, forKey: .frontEnd)?.value
        classes = try c.decodeIfPresent([String].self, forKey: .classes)
        merge = try c.decodeIfPresent([String: String].self, forKey: .merge) ?? [:]
        encoderLevels = try c.decodeIfPresent(Int.self, forKey: .encoderLevels) ?? 4
        encoder = try c.decodeIfPresent(UNetRecipe.self, forKey: .encoder) ?? UNetRecipe()
        if encoder.syncBatchNorm {
            throw DecodingError.dataCorruptedError(forKey: .encoder, in: c, debugDescription: "'syncBatchNorm' does not apply to fine-tuning: under mpirun each rank trains whole folds, so no batch spans ranks; drop the key")
        }
        head = try c.decodeIfPresent(HeadRecipe.self, forKey: .head) ?? HeadRecipe()
        freeze = try c.decodeIfPresent(FreezeRecipe.self, forKey: .freeze) ?? FreezeRecipe()
        imbalance = try c.decodeIfPresent(ImbalanceRecipe.self, forKey: .imbalance) ?? ImbalanceRecipe()
        augment = try c.decodeIfPresent(AugmentRecipe.self, forKey: .augment) ?? AugmentRecipe()
        var defaultTraining = TrainingRecipe()
        defaultTraining.epochs = 35
        training = try c.decodeIfPresent(TrainingRecipe.self, forKey: .training) ?? defaultTraining
        evaluation = try c.decodeIfPresent(EvaluationRecipe.self, forKey: .evaluation) ?? EvaluationRecipe()
        guard encoderLevels >= 1 else { throw DecodingError.dataCorruptedError(forKey: .encoderLevels, in: c, debugDescription: "must be at least 1") }
        guard freeze.blocks <= encoderLevels else {
            throw DecodingError.dataCorruptedError(forKey: .freeze, in: c, debugDescription: "blocks (\(freeze.blocks)) cannot exceed encoderLevels (\(encoderLevels))")
        }
    }

    public static func load(_ path: String) throws -> (recipe: FinetuneRecipe, text: String) {
        try loadRecipeFile(FinetuneRecipe.self, path: path)
    }

    /// The encoder trained from scratch (or read from a Keras file) for data of `mels` x `frames`
    /// (cropped to `encoder.frames`).
    public func encoderConfiguration(mels: Int, frames: Int) throws -> UNetConfiguration {
        try encoder.configuration(mels: mels, frames: encoder.frames ?? frames, seed: training.seed, file: path, key: "encoder")
    }
}
