import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabHDF5
import CryLabNN
import Foundation
import Testing

/// `crylab embed`, `probe`, `finetune`, `label-curve` and `evaluate` with a file Keras saved
/// (Fixtures/keras/encoder-bn.h5: 16 mels x 24 frames, BatchNormalization, names offset).
@Suite("Keras encoders in commands")
struct KerasEncoderCommandTests {
    let fixture = KerasEncoderFixture.batchNormalized

    /// The fixture's two input clips as a store whose values are 2 x input + 3 and whose
    /// normalisation is mean 3, std 2: normalised, the encoder sees exactly Keras's input.
    func kerasInputStore() throws -> FeatureStore {
        var store = labeledStore(clips: 2)
        store.features = try fixture.inputTensor().values.map { 2 * $0 + 3 }
        store.normalization = NormalizationStats(mean: 3, std: 2)
        return store
    }

    /// The same weights in CryLab's own file, with `store`'s front end and normalisation.
    func cryLabCopy(of store: FeatureStore, in workspace: Workspace) throws -> String {
        let encoder = try #require(try KerasEncoder.load(fixture.path))
        try Checkpoint.save(encoder.model, metadata: CheckpointMetadata(frontEnd: store.frontEnd, normalization: store.normalization),
                            to: workspace.path("crylab-encoder.h5"))
        return workspace.path("crylab-encoder.h5")
    }

    @Test("embed with a Keras file uses the store's front end and normalisation and gives Keras's outputs, as CryLab's own file does")
    func embed() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let store = try kerasInputStore()
        let storePath = try workspace.write(store)
        let run = try workspace.run(["embed", "--encoder", fixture.path, storePath, "-o", workspace.path("keras.h5"), "--pool", "none", "--threads", "1"])
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.errors.contains("\(fixture.path) has no CryLab front end: using \(storePath)'s front end and normalisation (mean 3, std 2)"),
                "\(run.errors)")
        let (values, shape) = try HDF5File.open(workspace.path("keras.h5")).root.read("embedding", as: Float.self)
        #expect(shape == [2, 8, 12, 8])
        let difference = largestRelativeDifference(values, try fixture.kerasOutput())
        print("embed --encoder \(fixture.file): largest relative difference to Keras \(difference)")
        #expect(difference <= 1e-4)

        let own = try workspace.run(["embed", "--encoder", try cryLabCopy(of: store, in: workspace), storePath, "-o", workspace.path("crylab.h5"),
                                     "--pool", "none", "--threads", "1"])
        #expect(own.status == 0, "\(own.errors)")
        #expect(try HDF5File.open(workspace.path("crylab.h5")).root.read("embedding", as: Float.self).values == values,
                "the Keras file and CryLab's file of the same weights give the same embeddings")
    }

    @Test("a store whose clips do not fit the Keras encoder is an error naming both files and both sizes",
          arguments: [(32, 24), (16, 20)])
    func sizeMismatch(mels: Int, frames: Int) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let storePath = try workspace.write(labeledStore(clips: 4, mels: mels, frames: frames))
        let run = try workspace.run(["embed", "--encoder", fixture.path, storePath, "-o", workspace.path("e.h5")])
        #expect(run.exited && run.status != 0)
        #expect(run.errors.contains("\(fixture.path): takes spectrograms of 16 mels x 24 frames, but \(storePath) holds \(mels) mels x \(frames) frames"),
                "\(run.errors)")
        #expect(run.errors.contains("crylab features --n-mels 16 --frames 24"), "the error says how to fix it: \(run.errors)")
    }

    @Test("audio with a Keras encoder is an error that names the file and says to pass a feature store",
          arguments: ["embed", "probe", "finetune"])
    func audioNeedsAStore(command: String) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let audio = workspace.path("audio")
        try FileManager.default.createDirectory(atPath: audio, withIntermediateDirectories: true)
        let recipe = try workspace.write(Self.finetuneRecipe, as: "finetune.yaml")
        let arguments: [String] = switch command {
        case "embed": ["embed", "--encoder", fixture.path, audio, "-o", workspace.path("e.h5")]
        case "probe": ["probe", "--encoder", fixture.path, audio]
        default: ["finetune", "--recipe", recipe, "--data", audio, "--encoder", fixture.path, "-o", workspace.path("run")]
        }
        let run = try workspace.run(arguments)
        #expect(run.exited && run.status != 0)
        #expect(run.errors.contains("\(fixture.path) has no CryLab front end (a Keras file), so audio cannot be turned into the 16 mels x 24 frames it takes"),
                "\(command): \(run.errors)")
        #expect(run.errors.contains(command == "finetune" ? "pass a feature store made with the front end the encoder was trained with as --data"
                                                          : "pass a feature store (.h5)"), "\(command): \(run.errors)")
    }

    @Test("probe with a Keras file answers as probe with CryLab's file of the same weights")
    func probe() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let store = labeledStore()
        let storePath = try workspace.write(store)
        let run = try workspace.run(["probe", "--encoder", fixture.path, "--encoder", try cryLabCopy(of: store, in: workspace),
                                     storePath, storePath, "--folds", "2", "--json", "--threads", "1"])
        #expect(run.status == 0, "\(run.errors)")
        struct Output: Decodable {
            struct Probe: Decodable { var pretrainedAnswers: [Int] }
            var probes: [Probe]
        }
        let answers = try JSONDecoder().decode(Output.self, from: Data(run.output.utf8)).probes.map(\.pretrainedAnswers)
        #expect(answers.count == 2)
        #expect(answers.first?.count == store.count)
        #expect(answers.first == answers.last, "the same weights and normalisation give the same answers")
    }

    static let finetuneRecipe = """
        name: keras-finetune
        classes: [a, b]
        encoderLevels: 2
        head: {pooling: globalAverage}
        freeze: {blocks: 2}
        training: {epochs: 1, batchSize: 8, validationFraction: 0, seed: 1}
        evaluation: {folds: 2, trainFinalModel: true}
        """

    @Test("finetune --encoder with a Keras file trains on its weights: frozen, they reach classifier.h5 unchanged")
    func finetune() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let store = labeledStore()
        let run = try workspace.run(["finetune", "--recipe", try workspace.write(Self.finetuneRecipe, as: "finetune.yaml"),
                                     "--data", try workspace.write(store), "--encoder", fixture.path,
                                     "-o", workspace.path("run"), "--quiet", "--threads", "1"])
        #expect(run.status == 0, "\(run.errors)")
        let classifier = try Checkpoint.load(workspace.path("run/classifier.h5"))
        #expect(classifier.metadata.frontEnd == store.frontEnd)
        let keras = try KerasWeights.read(from: try HDF5File.open(fixture.path).root.openGroup("model_weights"))
        for (ours, theirs) in [("conv2d", "conv2d_1"), ("batch_normalization_3", "batch_normalization_4")] {
            let stored = try #require(keras.first { $0.name == theirs })
            let layer = try #require(classifier.model.layer(named: ours))
            for weight in layer.weights {
                let value = try #require(stored.weights.first { $0.name == weight.name }?.value)
                #expect(weight.value == value, "\(ours)/\(weight.name) should be Keras's \(theirs)/\(weight.name)")
            }
        }
    }

    @Test("finetune: a Keras encoder with fewer levels than the recipe asks is an error naming the file and the fix")
    func finetuneLevels() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let recipe = Self.finetuneRecipe.replacingOccurrences(of: "encoderLevels: 2", with: "encoderLevels: 3")
        let run = try workspace.run(["finetune", "--recipe", try workspace.write(recipe, as: "finetune.yaml"),
                                     "--data", try workspace.write(labeledStore()), "--encoder", fixture.path,
                                     "-o", workspace.path("run"), "--quiet"])
        #expect(run.exited && run.status != 0)
        #expect(run.errors.contains("\(fixture.path): has 2 encoder levels, the recipe asks for 3; set the recipe's encoderLevels to at most 2"),
                "\(run.errors)")
    }

    static let pretrainRecipe = """
        name: keras-curve
        frontEnd: {preset: recommended, nMels: 16, frames: 24}
        model: {widths: [4, 8, 16]}
        training: {epochs: 1, batchSize: 8}
        """

    @Test("label-curve --encoder with a Keras file runs the frozen rows on it; a store that does not fit is refused first")
    func labelCurve() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let arguments = ["label-curve", "--finetune-recipe", try workspace.write(Self.finetuneRecipe, as: "finetune.yaml"),
                         "--encoder", fixture.path, "--models", "pretrained-frozen,random-frozen", "--k", "2", "--draws", "1",
                         "--fold", "1", "--json", "--quiet", "--threads", "1"]
        let run = try workspace.run(arguments + ["--pretrain-recipe", try workspace.write(Self.pretrainRecipe, as: "pretrain.yaml"),
                                                 "--data", try workspace.write(labeledStore()), "-o", workspace.path("curve")])
        #expect(run.status == 0, "\(run.errors)")
        struct Output: Decodable {
            struct Run: Decodable { var model: String }
            var runs: [Run]
        }
        let runs = try JSONDecoder().decode(Output.self, from: Data(run.output.utf8)).runs
        #expect(Set(runs.map(\.model)) == ["pretrained-frozen", "random-frozen"])

        // 32 mels: the recipe matches the store, the Keras encoder (16 mels) does not.
        let wide = try workspace.write(labeledStore(mels: 32), as: "wide.h5")
        let wideRecipe = Self.pretrainRecipe.replacingOccurrences(of: "nMels: 16", with: "nMels: 32")
        let refused = try workspace.run(arguments + ["--pretrain-recipe", try workspace.write(wideRecipe, as: "wide.yaml"),
                                                     "--data", wide, "-o", workspace.path("curve-wide")])
        #expect(refused.exited && refused.status != 0)
        #expect(refused.errors.contains("\(fixture.path): takes spectrograms of 16 mels x 24 frames, but \(wide) holds 32 mels x 24 frames"),
                "\(refused.errors)")
    }

    @Test("evaluate with a Keras file says it needs classifier.h5 and how to make one from a Keras encoder")
    func evaluate() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let classifier = kerasFixtures.appendingPathComponent("classifier.h5").path
        let run = try workspace.run(["evaluate", "--model", classifier, "--data", try workspace.write(labeledStore())])
        #expect(run.exited && run.status != 0)
        #expect(run.errors.contains("\(classifier): is a Keras file (keras full model)"), "\(run.errors)")
        #expect(run.errors.contains("crylab finetune --encoder \(classifier)"), "\(run.errors)")
    }

    @Test("export-encoder makes a Keras file a CryLab encoder with a store's front end, giving the same embeddings")
    func exportEncoder() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let store = try kerasInputStore()
        let storePath = try workspace.write(store)
        let exported = workspace.path("exported.h5")

        let refused = try workspace.run(["export-encoder", fixture.path, "-o", exported])
        #expect(refused.exited && refused.status != 0)
        #expect(refused.errors.contains("\(fixture.path) is a Keras file and has no CryLab front end; give --front-end-from STORE.h5"),
                "\(refused.errors)")
        #expect(refused.errors.contains("--n-mels 16 --frames 24"), "the error says what store fits: \(refused.errors)")
        #expect(!FileManager.default.fileExists(atPath: exported), "nothing is written when refused")

        let run = try workspace.run(["export-encoder", fixture.path, "--front-end-from", storePath, "-o", exported])
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.output.contains("front end and normalisation from \(storePath)"), "\(run.output)")
        let contents = try Checkpoint.load(exported)
        #expect(contents.metadata.frontEnd == store.frontEnd)
        #expect(contents.metadata.normalization == store.normalization)
        #expect(contents.model.configuration?.kind == .encoder)

        // The exported file embeds the store exactly as the Keras file given the same store does.
        let fromKeras = try workspace.run(["embed", "--encoder", fixture.path, storePath, "-o", workspace.path("keras.h5"),
                                           "--pool", "none", "--threads", "1"])
        let fromExported = try workspace.run(["embed", "--encoder", exported, storePath, "-o", workspace.path("exported-embed.h5"),
                                              "--pool", "none", "--threads", "1"])
        #expect(fromKeras.status == 0 && fromExported.status == 0, "\(fromKeras.errors) \(fromExported.errors)")
        #expect(!fromExported.errors.contains("has no CryLab front end"), "the exported file has its own front end: \(fromExported.errors)")
        let keras = try HDF5File.open(workspace.path("keras.h5")).root.read("embedding", as: Float.self)
        let own = try HDF5File.open(workspace.path("exported-embed.h5")).root.read("embedding", as: Float.self)
        #expect(own.shape == keras.shape && own.values == keras.values)

        let twice = try workspace.run(["export-encoder", exported, "--front-end-from", storePath, "-o", workspace.path("again.h5")])
        #expect(twice.exited && twice.status != 0)
        #expect(twice.errors.contains("\(exported) has a front end of its own"), "\(twice.errors)")
    }
}
