import CryLabDSP
import CryLabFeatures
import CryLabTraining
import Foundation
import Testing

let recipesFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Recipes")

@Suite("Recipes")
struct RecipeTests {
    @Test("the seed pretraining recipe reproduces the story")
    func seedPretrain() throws {
        let (recipe, text) = try PretrainRecipe.load(recipesFolder.appendingPathComponent("pretrain-seed.yaml").path)
        #expect(text.contains("preset: seed"))
        #expect(recipe.frontEnd == .seed)
        #expect(recipe.model.widths == [32, 64, 128, 256, 512])
        #expect(recipe.objective.loss == .all && !recipe.objective.masks)
        #expect(recipe.training.epochs == 25 && recipe.training.batchSize == 32)
        #expect(recipe.training.optimizer.kind == .adam && recipe.training.optimizer.learningRate == 0.001)
        let configuration = try recipe.modelConfiguration(mels: 128, frames: 128)
        #expect(configuration.inputShape == [128, 128, 1])
    }

    @Test("an empty recipe takes every default")
    func defaults() throws {
        let recipe = try loadRecipeText(PretrainRecipe.self, text: "", file: "empty.yaml")
        var defaults = PretrainRecipe()
        defaults.path = "empty.yaml"
        #expect(recipe == defaults)
    }

    @Test("front-end overrides apply on top of the preset")
    func overrides() throws {
        let recipe = try loadRecipeText(PretrainRecipe.self, text: "frontEnd:\n  preset: seed\n  nMels: 64\n  toDB: true\n", file: "x.yaml")
        var expected = FrontEnd.seed
        expected.nMels = 64
        expected.toDB = true
        #expect(recipe.frontEnd == expected)
    }

    @Test("a recipe that does not fit the data: the error names the recipe's file and key")
    func dataMismatchNamesFileAndKey() throws {
        func message(_ body: () throws -> Void) -> String {
            do { try body() } catch { return "\(error)" }
            return "no error"
        }
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (pretrain, text) = try tinyRecipe(epochs: 1)
        var otherHop = syntheticStore()
        otherHop.frontEnd.hopLength = 64
        var oddFrames = pretrain
        oddFrames.model.frames = 31
        var finetune = try loadRecipeText(FinetuneRecipe.self, text: FinetuneResumeTests.recipeText, file: "tiny-finetune.yaml")
        finetune.encoder.frames = 31
        let frontEnd = message { _ = try Pretrainer(recipe: pretrain, recipeText: text, store: otherHop, options: PretrainOptions(output: folder)) }
        let model = message {
            _ = try Pretrainer(recipe: oddFrames, recipeText: text, store: syntheticStore(), options: PretrainOptions(output: folder), log: { _ in }).run()
        }
        let encoder = message {
            _ = try Finetuner(recipe: finetune, recipeText: FinetuneResumeTests.recipeText, store: syntheticStore(labeled: true),
                              options: FinetuneOptions(output: folder), log: { _ in })
        }
        #expect(frontEnd.hasPrefix("tiny.yaml: key 'frontEnd': "), "\(frontEnd)")
        #expect(model.hasPrefix("tiny.yaml: key 'model': "), "\(model)")
        #expect(encoder.hasPrefix("tiny-finetune.yaml: key 'encoder': "), "\(encoder)")
    }

    @Test("errors name the key path and the allowed values", arguments: [
        ("training:\n  epochz: 3\n", "training.epochz"),
        ("training:\n  optimizer:\n    kind: adagrad\n", "adam, adamw, sgd"),
        ("training:\n  batchSize: many\n", "training.batchSize"),
        ("frontEnd:\n  preset: fancy\n", "frontEnd.preset"),
        ("frontEnd:\n  nmels: 3\n", "frontEnd.nmels"),
        ("objective:\n  loss: masked\n", "objective.loss"),
        ("model:\n  kernelSize: 4\n", "model.kernelSize"),
        ("model:\n  syncBatchNorm: true\n", "model.syncBatchNorm': the model has no BatchNormalization"),
        ("- just\n- a list\n", "mapping"),
    ])
    func errors(text: String, expected: String) {
        do {
            _ = try loadRecipeText(PretrainRecipe.self, text: text, file: "bad.yaml")
            Issue.record("'\(text)' should be rejected")
        } catch let error as RecipeError {
            #expect(error.description.contains(expected), "\(error)")
            #expect(error.description.hasPrefix("bad.yaml: "))
        } catch {
            Issue.record("unexpected error type \(type(of: error)): \(error)")
        }
    }

    @Test("fine-tuning refuses syncBatchNorm: its ranks train whole folds")
    func fineTuningRefusesSyncBatchNorm() {
        #expect(throws: RecipeError.self) {
            _ = try loadRecipeText(FinetuneRecipe.self, text: "encoder:\n  batchNormalization: true\n  syncBatchNorm: true\n", file: "bad.yaml")
        }
        #expect(throws: Never.self) {
            _ = try loadRecipeText(FinetuneRecipe.self, text: "encoder:\n  batchNormalization: true\n", file: "good.yaml")
        }
    }
}
