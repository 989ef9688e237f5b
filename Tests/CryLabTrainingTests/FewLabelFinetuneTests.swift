import CryLabFeatures
import CryLabTraining
import Foundation
import Testing

@Suite("Fine-tuning on few labels and on a test store", .serialized)
struct FewLabelFinetuneTests {
    func recipe() throws -> FinetuneRecipe {
        try loadRecipeText(FinetuneRecipe.self, text: FinetuneResumeTests.recipeText, file: "tiny-finetune.yaml")
    }

    @Test("--labels-per-class trains each draw on K clips per class of every training fold, the baseline on the same clips")
    func fewLabels() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var options = FinetuneOptions(output: folder)
        options.quiet = true
        options.labelsPerClass = 2
        options.draws = 2
        let summary = try Finetuner(recipe: try recipe(), recipeText: FinetuneResumeTests.recipeText,
                                    store: syntheticStore(labeled: true), options: options, log: { _ in }).run()
        let draws = try #require(summary.labelDraws)
        #expect(draws.count == 2)
        #expect(summary.labelsPerClass == 2)
        // 4 classes x 2 labels in every fold.
        for draw in draws { #expect(draw.trainingClips == 8) }
        // Every clip is still tested once: the draw shrinks training, never the test folds.
        #expect(summary.crossValidation.pooled.confusion.joined().reduce(0, +) == 24)
        #expect(summary.protocolDescription.contains("2 labels per class"))
        for draw in 1...2 {
            #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("folds/draw-\(draw)/fold-1.json").path))
        }
    }

    @Test("--test trains on the data and tests on the other store's clips alone, warning about shared groups")
    func testStore() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var test = syntheticStore(clips: 12, labeled: true)
        test.groups = (0..<12).map { $0 == 0 ? "family0" : "other\($0)" }
        var options = FinetuneOptions(output: folder)
        options.quiet = true
        options.test = test
        options.testPath = "test.h5"
        let lines = LockedLines()
        let summary = try Finetuner(recipe: try recipe(), recipeText: FinetuneResumeTests.recipeText,
                                    store: syntheticStore(labeled: true), options: options, log: { lines.append($0) }).run()
        #expect(summary.crossValidation.folds.count == 1)
        #expect(summary.crossValidation.pooled.confusion.joined().reduce(0, +) == 12)
        #expect(summary.protocolDescription.contains("tested on the 12 clips of test.h5"))
        #expect(lines.all.contains { $0.contains("warning: 1 recording sources are in both") })
    }

    @Test("a test store of another front end is refused, naming it")
    func testStoreFrontEnd() throws {
        var test = syntheticStore(clips: 12, labeled: true)
        test.frontEnd.nFFT = 256
        var options = FinetuneOptions(output: FileManager.default.temporaryDirectory.appendingPathComponent("crylab-never-written"))
        options.test = test
        options.testPath = "other.h5"
        #expect {
            _ = try Finetuner(recipe: try recipe(), recipeText: FinetuneResumeTests.recipeText,
                              store: syntheticStore(labeled: true), options: options, log: { _ in })
        } throws: { "\($0)".contains("other.h5") && "\($0)".contains("nFFT") }
    }
}
