import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation
import Testing

/// `syntheticStore` with Donate-a-Cry file names whose age follows each clip's pitch and whose
/// gender alternates between families.
func donateACryNamedStore() -> FeatureStore {
    var store = syntheticStore(labeled: true)
    let ages = ["04", "48", "26", "72"]
    store.paths = store.paths.indices.map { clip in
        let family = store.groups[clip]
        return "/data/\(family)-0c8f14a9-6999-485b-97a2-\(1_431_028_888 + clip)-1.7-\(clip % 8 < 4 ? "m" : "f")-\(ages[clip % 4])-hu.3gp"
    }
    return store
}

/// The labeled Donate-a-Cry clips beside the project, when present.
let labeledCorpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("../shared/data/donateacry/labeled").standardizedFileURL

@Suite("Probe targets")
struct ProbeTargetTests {
    @Test("age and gender are read from Donate-a-Cry file names, in their natural order")
    func labelsFromNames() throws {
        let store = donateACryNamedStore()
        let age = try LabeledSet(store: store, source: .age, classes: nil)
        #expect(age.classNames == ["04", "48", "26", "72"], "22 does not occur and is left out")
        #expect(age.labels == store.paths.indices.map { $0 % 4 })
        #expect(age.groups == store.groups)
        let gender = try LabeledSet(store: store, source: .gender, classes: nil)
        #expect(gender.classNames == ["m", "f"])
        #expect(gender.labels == store.paths.indices.map { $0 % 8 < 4 ? 0 : 1 })
        let twoAges = try LabeledSet(store: store, source: .age, classes: ["72", "04"])
        #expect(twoAges.classNames == ["72", "04"])
        #expect(twoAges.indices == store.paths.indices.filter { $0 % 4 == 0 || $0 % 4 == 3 })
        #expect(twoAges.labels == twoAges.indices.map { $0 % 4 == 3 ? 0 : 1 })
        let folder = try LabeledSet(store: store, source: .folder, classes: nil)
        #expect(folder.classNames == ["a", "b", "c", "d"], "folder labels are the store's")
    }

    @Test("a name without the field, or a class that does not exist, is an error naming it")
    func badNames() throws {
        var store = donateACryNamedStore()
        store.paths[5] = "/data/cries/clip5.wav"
        do {
            _ = try LabeledSet(store: store, source: .age, classes: nil)
            Issue.record("a name without an age was accepted")
        } catch {
            let message = "\(error)"
            #expect(message.contains("clip5.wav") && message.contains("04, 48, 26, 72, 22"), "\(message)")
        }
        do {
            _ = try LabeledSet(store: donateACryNamedStore(), source: .gender, classes: ["x"])
            Issue.record("an unknown gender class was accepted")
        } catch {
            #expect("\(error)".contains("'x' is not among the gender classes m, f"), "\(error)")
        }
    }

    @Test("the probe predicts the chosen target and reports it")
    func probeOnAge() throws {
        let store = donateACryNamedStore()
        let set = try LabeledSet(store: store, source: .age, classes: nil)
        let configuration = try tinyRecipe(epochs: 1).0.modelConfiguration(mels: store.mels, frames: 32)
        let result = linearProbe(encoder: try Model.encoder(configuration, levels: 1), randomWeights: try Model.encoder(configuration, levels: 1),
                                 store: store, set: set, source: .age, frames: 32, normalization: (0, 1), folds: 4, seed: 3)
        #expect(result.target == .age && result.classes == ["04", "48", "26", "72"])
        #expect(result.pretrained.perClass.map(\.name) == ["04", "48", "26", "72"])
        #expect(result.pretrained.balancedAccuracy > 0.5, "age follows pitch here: \(result.text)")
        // The answers kept for comparing encoders are the ones the report scored.
        let rescored = ClassificationReport(truth: set.labels, predicted: result.pretrainedAnswers, classNames: set.classNames)
        #expect(result.pretrainedAnswers.count == set.count && rescored.balancedAccuracy == result.pretrained.balancedAccuracy)
        #expect(result.pretrainedVersusRandom.balancedAccuracyDifference == 0, "the same weights twice: no difference")
    }

    @Test("every labeled Donate-a-Cry clip has an age and a gender in its name",
          .enabled(if: FileManager.default.fileExists(atPath: labeledCorpus.path),
                   "the Donate-a-Cry corpus is not at ../shared/data/donateacry; skipping the real-data test"))
    func realNames() throws {
        let labeled = labeledCorpus
        let classes = try FileManager.default.contentsOfDirectory(atPath: labeled.path)
        var ages: [String: Int] = [:], genders: [String: Int] = [:]
        for name in classes where !name.contains(".") {
            for file in try FileManager.default.contentsOfDirectory(atPath: labeled.appendingPathComponent(name).path) where file.hasSuffix(".wav") {
                ages[try LabelSource.age.label(ofPath: file), default: 0] += 1
                genders[try LabelSource.gender.label(ofPath: file), default: 0] += 1
            }
        }
        #expect(ages == ["04": 149, "48": 55, "26": 162, "72": 81, "22": 10])
        #expect(genders == ["m": 276, "f": 181])
    }
}
