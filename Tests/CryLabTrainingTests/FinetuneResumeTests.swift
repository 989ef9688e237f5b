import CryLabTraining
import Foundation
import Testing

@Suite("Resuming fine-tuning")
struct FinetuneResumeTests {
    static let recipeText = """
    name: tiny-finetune
    classes: [a, b, c, d]
    frontEnd: {preset: recommended, nMels: 16, frames: 40}
    encoder: {widths: [4, 8], frames: 32}
    encoderLevels: 2
    head: {pooling: globalAverage, hidden: [{units: 8, dropoutRate: 0.1}]}
    imbalance: {classWeights: balanced}
    augment: {timeMasks: {count: 1, width: 4}, noise: 0.05}
    training: {epochs: 3, batchSize: 8, validationFraction: 0.2, seed: 3, optimizer: {learningRate: 0.003}}
    evaluation: {folds: 3, trainFinalModel: false}
    """

    func run(_ folder: URL, resume: Bool, log: @escaping (String) -> Void = { _ in }) throws -> FinetuneSummary {
        let recipe = try loadRecipeText(FinetuneRecipe.self, text: Self.recipeText, file: "tiny-finetune.yaml")
        var options = FinetuneOptions(output: folder)
        options.quiet = true
        options.resume = resume
        return try Finetuner(recipe: recipe, recipeText: Self.recipeText, store: syntheticStore(labeled: true),
                             options: options, log: log).run()
    }

    @Test("a run that lost its last fold retrains only that fold and ends with the same figures")
    func resumeAfterLostFold() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-finetune-resume-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let complete = try run(folder, resume: false)
        let folds = folder.appendingPathComponent("folds")
        for fold in 1...3 {
            #expect(FileManager.default.fileExists(atPath: folds.appendingPathComponent("fold-\(fold).json").path), "fold \(fold) saved")
        }
        // As if the process died while training fold 3.
        try FileManager.default.removeItem(at: folds.appendingPathComponent("fold-3.json"))
        let lines = LockedLines()
        let resumed = try run(folder, resume: true, log: lines.append)
        let text = lines.all.joined(separator: "\n")
        #expect(text.contains("fold 1/3: finished by the interrupted run"), "fold 1 reused")
        #expect(text.contains("fold 2/3: finished by the interrupted run"), "fold 2 reused")
        #expect(text.contains("fold 3/3: ") && !text.contains("fold 3/3: finished"), "fold 3 trained again")
        let sameProbabilities = resumed.crossValidation.probabilities == complete.crossValidation.probabilities
        #expect(sameProbabilities, "out-of-fold probabilities bit-identical to the uninterrupted run")
        #expect(resumed.crossValidation.pooled == complete.crossValidation.pooled)
        #expect(resumed.bestEpochs == complete.bestEpochs)
        #expect(resumed.histories == complete.histories)
    }

    @Test("saved folds of another recipe are refused with the file named; a fresh run discards them")
    func foreignFoldsRefused() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-finetune-foreign-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try run(folder, resume: false)
        let file = folder.appendingPathComponent("folds/fold-1.json")
        var record = try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as! [String: Any]
        record["identity"] = "name: another-recipe"
        try JSONSerialization.data(withJSONObject: record).write(to: file)
        do {
            _ = try run(folder, resume: true)
            Issue.record("a fold saved by another run was reused")
        } catch let error as RecipeError {
            #expect(error.file == file.path)
            #expect(error.message.contains("another recipe"))
        }
        _ = try run(folder, resume: false)
        let identity = (try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as! [String: Any])["identity"] as? String
        #expect(identity?.hasPrefix("name: tiny-finetune") == true, "without --resume the old folds are replaced")
    }
}

/// Log lines collected from a closure that may be called from any thread.
final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}
