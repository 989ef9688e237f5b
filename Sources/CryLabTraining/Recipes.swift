import CryLabDSP
import CryLabNN
import Foundation

/// Optimiser settings shared by both recipes.
public struct OptimizerRecipe: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case adam, adamw, sgd
        public init(from decoder: Decoder) throws { self = try decodeChoice(Kind.self, from: decoder) }
    }
    public enum Schedule: String, Codable, Sendable, CaseIterable {
        case constant, step, cosine
        public init(from decoder: Decoder) throws { self = try decodeChoice(Schedule.self, from: decoder) }
    }
    /// adam (default), adamw or sgd.
    public var kind: Kind = .adam
    /// Peak learning rate (default 1e-3, Keras's Adam default).
    public var learningRate: Float = 1e-3
    /// Decoupled weight decay for adamw (default 0.004, Keras's AdamW default).
    public var weightDecay: Float = 0.004
    /// Momentum for sgd (default 0.9).
    public var momentum: Float = 0.9
    /// constant (default), step (x0.1 every `stepEpochs`) or cosine (to 0, after warm-up).
    public var schedule: Schedule = .constant
    public var warmupEpochs: Int = 0
    public var stepEpochs: Int = 10
    /// Clip gradients to this global L2 norm; none by default.
    public var clipNorm: Float?

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind, learningRate, weightDecay, momentum, schedule, warmupEpochs, stepEpochs, clipNorm
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decodeIfPresent(Kind.self, forKey: .kind) ?? kind
        learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? learningRate
        weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? weightDecay
        momentum = try c.decodeIfPresent(Float.self, forKey: .momentum) ?? momentum
        schedule = try c.decodeIfPresent(Schedule.self, forKey: .schedule) ?? schedule
        warmupEpochs = try c.decodeIfPresent(Int.self, forKey: .warmupEpochs) ?? warmupEpochs
        stepEpochs = try c.decodeIfPresent(Int.self, forKey: .stepEpochs) ?? stepEpochs
        clipNorm = try c.decodeIfPresent(Float.self, forKey: .clipNorm)
        guard learningRate > 0 else {
            throw DecodingError.dataCorruptedError(forKey: .learningRate, in: c, debugDescription: "must be positive, got \(learningRate)")
        }
    }

    /// The engine's optimiser for a run of `stepsPerEpoch * epochs` steps; `multiplier` scales the rate.
    public func makeOptimizer(stepsPerEpoch: Int, epochs: Int, multiplier: Float = 1) -> any Optimizer {
        let rate = learningRate * multiplier
        let schedule: LearningRateSchedule
        switch self.schedule {
        case .constant: schedule = .constant(rate)
        case .step: schedule = .step(initial: rate, factor: 0.1, every: max(1, stepEpochs * stepsPerEpoch))
        case .cosine: schedule = .cosine(peak: rate, warmupSteps: warmupEpochs * stepsPerEpoch,
                                         totalSteps: max(1, epochs * stepsPerEpoch), minimum: 0)
        }
        switch kind {
        case .adam: return Adam(schedule: schedule)
        case .adamw: return Adam.adamW(schedule: schedule, weightDecay: weightDecay)
        case .sgd: return SGD(schedule: schedule, momentum: momentum)
        }
    }
}

/// The loop settings shared by both recipes.
public struct TrainingRecipe: Codable, Sendable, Equatable {
    public var epochs: Int = 25
    public var batchSize: Int = 32
    public var optimizer = OptimizerRecipe()
    /// Share of recording sources held out for validation (default 0.1).
    public var validationFraction: Double = 0.1
    /// Stop when the validation loss has not improved for this many epochs; off by default.
    public var earlyStoppingPatience: Int?
    /// Seed for shuffling, augmentation, dropout and initial weights.
    public var seed: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case epochs, batchSize, optimizer, validationFraction, earlyStoppingPatience, seed
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? epochs
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        optimizer = try c.decodeIfPresent(OptimizerRecipe.self, forKey: .optimizer) ?? optimizer
        validationFraction = try c.decodeIfPresent(Double.self, forKey: .validationFraction) ?? validationFraction
        earlyStoppingPatience = try c.decodeIfPresent(Int.self, forKey: .earlyStoppingPatience)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
        guard epochs >= 1 else { throw DecodingError.dataCorruptedError(forKey: .epochs, in: c, debugDescription: "must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw DecodingError.dataCorruptedError(forKey: .batchSize, in: c, debugDescription: "must be at least 1, got \(batchSize)") }
        guard (0..<1).contains(validationFraction) else {
            throw DecodingError.dataCorruptedError(forKey: .validationFraction, in: c, debugDescription: "must be in [0, 1), got \(validationFraction)")
        }
    }
}

/// SpecAugment-style masks: `count` bands of up to `width` frames (time) or mel bins (frequency).
public struct MaskRecipe: Codable, Sendable, Equatable {
    public var count: Int = 0
    public var width: Int = 0
    public init(count: Int = 0, width: Int = 0) { self.count = count; self.width = width }

    enum CodingKeys: String, CodingKey, CaseIterable { case count, width }

    public init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        count = try c.decodeIfPresent(Int.self, forKey: .count) ?? 0
        width = try c.decodeIfPresent(Int.self, forKey: .width) ?? 0
    }
}

/// A recipe that remembers where it was read from, so that what is found wrong with it later
/// (against the data) names the file as a decoding error does.
public protocol LoadableRecipe: Decodable {
    /// The file, or the name given to `loadRecipeText`.
    var path: String { get set }
}

/// Loads a recipe from YAML text: decoded into typed structures and validated once.
public func loadRecipeText<R: LoadableRecipe>(_ type: R.Type, text: String, file: String) throws -> R {
    var recipe = try decodeRecipe(R.self, yaml: text, file: file)
    recipe.path = file
    return recipe
}

/// Loads a recipe file; returns the recipe and its text (stored in every checkpoint).
public func loadRecipeFile<R: LoadableRecipe>(_ type: R.Type, path: String) throws -> (recipe: R, text: String) {
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw RecipeError(file: path, message: "cannot read the recipe (\(error.localizedDescription)); check the path: the shipped recipes are in Recipes/")
    }
    return (try loadRecipeText(R.self, text: text, file: path), text)
}

/// `frontEnd:` in a recipe: a preset (`preset: seed`, default `recommended`) plus overrides of
/// any of its parameters, by the names `FrontEnd` uses.
struct FrontEndRecipe: Decodable {
    var value: FrontEnd

    enum CodingKeys: String, CodingKey, CaseIterable {
        case preset, sampleRate, duration, nFFT, hopLength, winLength, nMels, fMin, fMax, power, melScale, melNorm
        case toDB, dbReference, amin, topDB, frames, fit
    }

    init(from decoder: Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let presetName = try c.decodeIfPresent(String.self, forKey: .preset) ?? "recommended"
        guard var f = FrontEnd.named(presetName) else {
            throw DecodingError.dataCorruptedError(forKey: .preset, in: c,
                debugDescription: "'\(presetName)' is not a preset; use one of: \(FrontEnd.presetNames.joined(separator: ", "))")
        }
        if let v = try c.decodeIfPresent(Int.self, forKey: .sampleRate) { f.sampleRate = v }
        if let v = try c.decodeIfPresent(Double.self, forKey: .duration) { f.duration = v }
        if let v = try c.decodeIfPresent(Int.self, forKey: .nFFT) { f.nFFT = v }
        if let v = try c.decodeIfPresent(Int.self, forKey: .hopLength) { f.hopLength = v }
        if let v = try c.decodeIfPresent(Int.self, forKey: .winLength) { f.winLength = v }
        if let v = try c.decodeIfPresent(Int.self, forKey: .nMels) { f.nMels = v }
        if let v = try c.decodeIfPresent(Double.self, forKey: .fMin) { f.fMin = v }
        if let v = try c.decodeIfPresent(Double.self, forKey: .fMax) { f.fMax = v }
        if let v = try c.decodeIfPresent(Float.self, forKey: .power) { f.power = v }
        if let v = try c.decodeIfPresent(MelScale.self, forKey: .melScale) { f.melScale = v }
        if let v = try c.decodeIfPresent(MelNorm.self, forKey: .melNorm) { f.melNorm = v }
        if let v = try c.decodeIfPresent(Bool.self, forKey: .toDB) { f.toDB = v }
        if let v = try c.decodeIfPresent(DecibelReference.self, forKey: .dbReference) { f.dbReference = v }
        if let v = try c.decodeIfPresent(Float.self, forKey: .amin) { f.amin = v }
        if c.contains(.topDB) { f.topDB = try c.decodeIfPresent(Float.self, forKey: .topDB) }
        if let v = try c.decodeIfPresent(Int.self, forKey: .frames) { f.frames = v }
        if let v = try c.decodeIfPresent(FrameFit.self, forKey: .fit) { f.fit = v }
        value = f
    }
}

extension FrontEnd {
    public static let presetNames = ["seed", "recommended", "librosa"]

    public static func named(_ name: String) -> FrontEnd? {
        switch name {
        case "seed": return .seed
        case "recommended": return .recommended
        case "librosa": return .librosa
        default: return nil
        }
    }
}
