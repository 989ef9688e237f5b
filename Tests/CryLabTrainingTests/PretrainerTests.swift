import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation
import Testing

/// A small store of smooth random "spectrograms": 24 clips of 16 mels x 40 frames in 8 groups.
func syntheticStore(clips: Int = 24, mels: Int = 16, frames: Int = 40, labeled: Bool = false) -> FeatureStore {
    var generator = SeededGenerator(seed: 11)
    var frontEnd = FrontEnd.recommended
    frontEnd.nMels = mels
    frontEnd.frames = frames
    var features: [Float] = []
    for clip in 0..<clips {
        let pitch = Float(clip % 4) * 3 + 2
        for m in 0..<mels {
            for t in 0..<frames {
                let tone = exp(-pow(Float(m) - pitch - Float(t % 5) * 0.3, 2) / 4)
                features.append(tone * 10 + Float.random(in: 0...0.5, using: &generator))
            }
        }
    }
    return FeatureStore(frontEnd: frontEnd, classNames: labeled ? ["a", "b", "c", "d"] : [], features: features, mels: mels,
                        frames: frames, labels: (0..<clips).map { labeled ? Int32($0 % 4) : -1 },
                        paths: (0..<clips).map { "clip\($0).wav" }, groups: (0..<clips).map { "family\($0 % 8)" },
                        durations: Array(repeating: 5, count: clips), sourceRates: Array(repeating: 8000, count: clips),
                        normalization: NormalizationStats(mean: 0, std: 1), skipped: [])
}

func tinyRecipe(epochs: Int, validationFraction: Double = 0.25) throws -> (PretrainRecipe, String) {
    let text = """
    name: tiny
    frontEnd: {preset: recommended, nMels: 16, frames: 40}
    model: {widths: [4, 8], frames: 32}
    objective: {timeMasks: {count: 1, width: 6}, frequencyMasks: {count: 1, width: 3}, loss: masked, noise: 0.05}
    training: {epochs: \(epochs), batchSize: 8, seed: 5, validationFraction: \(validationFraction), optimizer: {learningRate: 0.003}}
    """
    return (try loadRecipeText(PretrainRecipe.self, text: text, file: "tiny.yaml"), text)
}

/// A quiet run of the tiny recipe on the synthetic store into `folder`, with a 4-fold probe on
/// `probe` if given; returns its summary and the recipe text.
func tinyPretraining(epochs: Int, in folder: URL, probe: FeatureStore? = nil,
                     validationFraction: Double = 0.25) throws -> (PretrainSummary, String) {
    let (recipe, text) = try tinyRecipe(epochs: epochs, validationFraction: validationFraction)
    var options = PretrainOptions(output: folder)
    options.quiet = true
    options.probe = probe
    options.probeFolds = 4
    return (try Pretrainer(recipe: recipe, recipeText: text, store: syntheticStore(), options: options, log: { _ in }).run(), text)
}

func runFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite("Pretraining", .serialized)
struct PretrainerTests {
    @Test("a run writes checkpoints, history, encoder and report, and its loss falls")
    func fullRun() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (summary, text) = try tinyPretraining(epochs: 12, in: folder, probe: syntheticStore(labeled: true))
        #expect(summary.epochs == 12 && summary.steps == 12 * 3)
        for name in ["last.h5", "best.h5", "encoder.h5", "history.csv", "history.json", "report.html"] {
            #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path), "\(name)")
        }
        let last = try Checkpoint.load(folder.appendingPathComponent("last.h5").path)
        let losses = last.metadata.history["train_loss"]!
        #expect(losses.count == 12)
        let early: Double = losses.prefix(3).reduce(0, +)
        let late: Double = losses.suffix(3).reduce(0, +)
        #expect(late < 0.8 * early, "\(losses)")
        #expect(last.metadata.recipe == text)
        #expect(last.optimizer?.iterations == 36)
        let encoder = try Checkpoint.load(folder.appendingPathComponent("encoder.h5").path)
        #expect(encoder.model.configuration?.kind == .encoder)
        #expect(encoder.model.layers.map(\.name) == ["conv2d", "conv2d_1"], "one level: two convolutions, no pooling")
        #expect(summary.validationLossWithoutSkips != nil)
        #expect(summary.probe?.pretrained.perClass.count == 4)
    }

    @Test("--max-steps stops early and times the steady steps apart from the first")
    func maxStepsTiming() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (recipe, text) = try tinyRecipe(epochs: 12)
        var options = PretrainOptions(output: folder)
        options.quiet = true
        options.maxSteps = 4
        let summary = try Pretrainer(recipe: recipe, recipeText: text, store: syntheticStore(), options: options, log: { _ in }).run()
        #expect(summary.steps == 4)
        let first = try #require(summary.firstStepSeconds)
        #expect(first > 0 && summary.samplesPerSecond > 0 && summary.samplesPerSecond.isFinite)
    }

    @Test("resuming after an interruption gives bit-identical weights")
    func resumeIsExact() throws {
        let straight = try runFolder(), resumed = try runFolder()
        defer { try? FileManager.default.removeItem(at: straight); try? FileManager.default.removeItem(at: resumed) }
        var options = PretrainOptions(output: straight)
        options.quiet = true
        let (three, text3) = try tinyRecipe(epochs: 3)
        _ = try Pretrainer(recipe: three, recipeText: text3, store: syntheticStore(), options: options, log: { _ in }).run()

        options.output = resumed
        let (two, _) = try tinyRecipe(epochs: 2)
        _ = try Pretrainer(recipe: two, recipeText: text3, store: syntheticStore(), options: options, log: { _ in }).run()
        options.resume = true
        _ = try Pretrainer(recipe: three, recipeText: text3, store: syntheticStore(), options: options, log: { _ in }).run()

        let a = try Checkpoint.load(straight.appendingPathComponent("last.h5").path)
        let b = try Checkpoint.load(resumed.appendingPathComponent("last.h5").path)
        #expect(a.metadata.epoch == 3 && b.metadata.epoch == 3)
        #expect(a.metadata.history["train_loss"] == b.metadata.history["train_loss"])
        for ((path, x), (_, y)) in zip(a.model.namedWeights, b.model.namedWeights) {
            #expect(x.value.values == y.value.values, "\(path) differs after resuming")
        }
        #expect(a.optimizer == b.optimizer)
    }

    @Test("a store made with another front end is refused with the difference named")
    func frontEndMismatch() throws {
        let (recipe, text) = try tinyRecipe(epochs: 1)
        var store = syntheticStore()
        store.frontEnd.hopLength = 64
        #expect(throws: RecipeError.self) {
            try Pretrainer(recipe: recipe, recipeText: text, store: store, options: PretrainOptions(output: URL(fileURLWithPath: "/tmp")))
        }
    }
}
