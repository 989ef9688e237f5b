import CryLabCheckpoint
import CryLabCore
import CryLabNN
import CryLabTraining
import Foundation
import Testing

@Suite("View invariance")
struct ViewInvarianceTests {
    /// [2 * 3 views, 2 x 2 positions, 5 channels] of seeded values.
    func features(seed: UInt64) -> Tensor {
        var generator = SeededGenerator(seed: seed)
        return Tensor(shape: [6, 2, 2, 5]) { values in
            for i in 0..<values.count { values[i] = Float.random(in: -1...1, using: &generator) }
        }
    }

    @Test("the contrastive gradient matches central finite differences")
    func gradientCheck() {
        let x = features(seed: 21)
        let (_, gradient) = viewContrastiveLoss(features: x, temperature: 0.3)
        let step: Float = 1e-2
        var largest = 0.0
        for i in 0..<x.count {
            var up = x, down = x
            up.values[i] += step
            down.values[i] -= step
            let numeric = (viewContrastiveLoss(features: up, temperature: 0.3).value
                - viewContrastiveLoss(features: down, temperature: 0.3).value) / Double(2 * step)
            largest = max(largest, abs(numeric - Double(gradient.values[i])))
            #expect(abs(numeric - Double(gradient.values[i])) < 2e-3 + 2e-2 * abs(numeric), "element \(i): numeric \(numeric), analytic \(gradient.values[i])")
        }
        print("view contrast: largest gradient difference \(largest)")
    }

    @Test("twins that agree cost less than twins that do not, and the loss is never below zero")
    func twinsAgreeing() {
        let x = features(seed: 5)
        var agreeing = x
        let half = 3 * 2 * 2 * 5
        for i in 0..<half { agreeing.values[half + i] = x.values[i] + 0.01 * x.values[half + i] }
        let random = viewContrastiveLoss(features: x, temperature: 0.2).value
        let matched = viewContrastiveLoss(features: agreeing, temperature: 0.2).value
        #expect(matched < random - 0.5, "matched \(matched), random \(random)")
        #expect(matched >= 0)
    }

    @Test("a frequency shift moves whole bands and repeats the edge band into the gap")
    func frequencyShift() {
        let (mels, frames) = (6, 4)
        var input = Tensor(shape: [4, mels, frames, 1]) { v in for i in 0..<v.count { v[i] = Float(i / frames % mels) } }
        var generator = SeededGenerator(seed: 2)
        SpectrogramBatcher.shiftClips(&input, gainDB: 0, timeShift: 0, frequencyShift: 2, std: 1, using: &generator)
        var shifts = Set<Int>()
        for b in 0..<4 {
            let rows = (0..<mels).map { m in input.values[(b * mels + m) * frames] }
            for m in 0..<mels { for t in 0..<frames { #expect(input.values[(b * mels + m) * frames + t] == rows[m]) } }
            // Band m now holds band clamp(m - shift): the rows are the original bands, moved.
            let shift = Int(Float(mels / 2) - rows[mels / 2])
            shifts.insert(shift)
            #expect(abs(shift) <= 2)
            for m in 0..<mels { #expect(rows[m] == Float(min(max(m - shift, 0), mels - 1))) }
        }
        #expect(shifts.count > 1, "four clips drew the same shift: \(shifts)")
    }

    @Test("pretraining with the invariance term trains the shared encoder and exports it")
    func pretrainingWithInvariance() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = """
        name: tiny-invariance
        frontEnd: {preset: recommended, nMels: 16, frames: 40}
        model: {widths: [4, 8], frames: 32, batchNormalization: true}
        objective: {timeMasks: {count: 1, width: 6}, loss: masked, frequencyShift: 1, gainDB: 3, invariance: {weight: 1, temperature: 0.5}}
        training: {epochs: 3, batchSize: 8, seed: 5, validationFraction: 0, optimizer: {learningRate: 0.003}}
        """
        let recipe = try loadRecipeText(PretrainRecipe.self, text: text, file: "tiny-invariance.yaml")
        #expect(recipe.objective.invariance == InvarianceRecipe(weight: 1, temperature: 0.5))
        var options = PretrainOptions(output: folder)
        options.quiet = true
        let summary = try Pretrainer(recipe: recipe, recipeText: text, store: syntheticStore(), options: options, log: { _ in }).run()
        let losses = try #require(try Checkpoint.load(folder.appendingPathComponent("last.h5").path).metadata.history["train_loss"])
        // The contrastive term starts near log(2 * 8 - 1) = 2.7 and must fall.
        #expect(losses.first! > 1.5, "\(losses)")
        #expect(losses.last! < losses.first!, "\(losses)")
        let encoder = try Checkpoint.load(try #require(summary.encoder)).model
        #expect(encoder.layers.contains { $0 is Conv2D })

        // The shared encoder is the U-Net's own layers: the same parameters, not copies.
        let configuration = UNetConfiguration(inputShape: [16, 32, 1], widths: [4, 8, 16], batchNormalization: true, seed: 1)
        let uNet = try Model.uNet(configuration)
        let shared = sharedEncoder(of: uNet, configuration: configuration)
        let exported = try Model.encoder(configuration, levels: configuration.depth)
        #expect(shared.layers.map(\.name) == exported.layers.map(\.name))
        #expect(try shared.outputShape(batch: 2) == exported.outputShape(batch: 2))
        for (a, b) in zip(shared.layers, uNet.layers) { #expect(a === b) }
    }

    @Test("the committed FSDD pretraining recipes load, and only the default one has the invariance term")
    func committedRecipes() throws {
        for name in ["fsdd-pretrain", "fsdd-pretrain-masked", "fsdd-pretrain-patches", "fsdd-pretrain-denoise", "fsdd-pretrain-noskip"] {
            let (recipe, _) = try PretrainRecipe.load(recipesFolder.appendingPathComponent("\(name).yaml").path)
            #expect(recipe.name == name)
            #expect((recipe.objective.invariance.weight > 0) == (name == "fsdd-pretrain"), "\(name)")
        }
    }

    @Test("invariance keys are checked")
    func keys() {
        func decode(_ yaml: String) throws -> PretrainRecipe { try loadRecipeText(PretrainRecipe.self, text: yaml, file: "r.yaml") }
        #expect(throws: (any Error).self) { try decode("objective: {invariance: {weight: -1}}") }
        #expect(throws: (any Error).self) { try decode("objective: {invariance: {temperature: 0}}") }
        #expect(throws: (any Error).self) { try decode("objective: {invariance: {weight: 1, projection: 64}}") }
        #expect(throws: (any Error).self) { try decode("objective: {frequencyShift: -2}") }
    }
}
