import CryLabCheckpoint
import CryLabFeatures
import CryLabTraining
import Foundation
import Testing

@Suite("The demo, end to end")
struct DemoTests {
    @Test("every artefact of the demo exists and reads back")
    func demoArtefacts() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-demo-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        var demo = DemoPipeline(folder: folder, seed: 3, threads: 2)
        demo.labeledFamilies = 4
        demo.unlabeledFamilies = 5
        demo.quiet = true
        demo.log = { _ in }
        let result = try demo.run()

        let unlabeled = try FeatureStore.read(from: result.unlabeledStore)
        let labeled = try FeatureStore.read(from: result.labeledStore)
        #expect(unlabeled.count == 60 && unlabeled.labels.allSatisfy { $0 == -1 })
        #expect(labeled.count == 48 && labeled.classNames == ["belly_pain", "discomfort", "hungry", "tired"])
        #expect(Set(labeled.groups).count == 16)

        let description = try Checkpoint.describe(result.pretrain.checkpoint!)
        #expect(description.format == "crylab-checkpoint v1")
        #expect(description.metadata?.epoch == 6)
        let encoder = try Checkpoint.load(result.exportedEncoder)
        #expect(encoder.model.configuration?.kind == .encoder)
        #expect(encoder.metadata.frontEnd == labeled.frontEnd)

        let report = result.finetune
        #expect(report.crossValidation.folds.count == 4)
        #expect(report.crossValidation.pooled.perClass.map(\.support).reduce(0, +) == 48)
        #expect(FileManager.default.fileExists(atPath: report.report!))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report.runFolder).appendingPathComponent("report.json"))) as? [String: Any]
        #expect(json?["crossValidation"] != nil && json?["baseline"] != nil)
        let classifier = try Checkpoint.load(report.classifier!)
        #expect(classifier.metadata.classNames == ["hungry", "belly_pain", "discomfort", "tired"])

        #expect(result.evaluation.perClass.count == 4)
        #expect(result.predictions.count == 2)
        for prediction in result.predictions {
            #expect(abs(prediction.probabilities.reduce(0, +) - 1) < 1e-4)
            #expect(!prediction.windows.isEmpty)
        }
        // The generated classes differ in pitch and rhythm: a linear probe must find that.
        #expect(result.pretrain.probe!.pretrained.balancedAccuracy > 0.5)
    }
}
