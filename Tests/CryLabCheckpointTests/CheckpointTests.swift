import CryLabCheckpoint
import CryLabDSP
import CryLabHDF5
import CryLabNN
import CryLabTensor
import Foundation
import Testing

/// A small U-Net and classifier sharing the U-Net's encoder layout (and so its layer names).
let smallUNet = UNetConfiguration(inputShape: [16, 16, 1], widths: [4, 8, 16], seed: 3)
let smallClassifier = ClassifierConfiguration(encoder: smallUNet, encoderLevels: 2,
                                              head: HeadConfiguration(pooling: .globalAverage, hidden: [.init(units: 8, batchNormalization: true)]),
                                              classes: 3, seed: 5)

func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-ckpt-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

func randomInput(batch: Int, seed: UInt64) -> Tensor {
    var generator = SeededGenerator(seed: seed)
    return Tensor(shape: [batch, 16, 16, 1]) { buffer in
        for i in buffer.indices { buffer[i] = Float.random(in: -1...1, using: &generator) }
    }
}

@Suite("Checkpoints")
struct CheckpointTests {
    @Test("a checkpoint rebuilds its model with identical weights, outputs and metadata")
    func roundTrip() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try Model.uNet(smallUNet)
        let metadata = CheckpointMetadata(frontEnd: .seed, normalization: NormalizationStats(mean: 1, std: 2),
                                          classNames: ["a", "b"], recipe: "epochs: 3\n", epoch: 2, step: 40,
                                          randomState: [1, 2, 3], bestMetric: 0.5, history: ["loss": [3, 2]],
                                          frozenLayers: ["conv2d", "conv2d_1"])
        try model.freeze(layersNamed: ["conv2d", "conv2d_1"])
        let slots = ["m/conv2d_2/kernel": Tensor(shape: [2], values: [1, 2])]
        let path = folder.appendingPathComponent("last.h5").path
        try Checkpoint.save(model, metadata: metadata, optimizer: OptimizerState(kind: "adam", iterations: 40, slots: slots), to: path)

        let loaded = try Checkpoint.load(path)
        #expect(loaded.metadata == metadata)
        #expect(loaded.optimizer == OptimizerState(kind: "adam", iterations: 40, slots: slots))
        #expect(loaded.model.configuration == model.configuration)
        for ((pathA, a), (pathB, b)) in zip(model.namedWeights, loaded.model.namedWeights) {
            #expect(pathA == pathB)
            #expect(a.value == b.value, "\(pathA)")
        }
        let input = randomInput(batch: 2, seed: 9)
        #expect(model.predict(input) == loaded.model.predict(input))
        #expect(loaded.model.layer(named: "conv2d")?.trainable == false)
        #expect(loaded.model.layer(named: "conv2d_2")?.trainable == true)
    }

    @Test("the weights use Keras's layout and names")
    func kerasLayout() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try Model.classifier(smallClassifier)
        let path = folder.appendingPathComponent("c.h5").path
        try Checkpoint.save(model, metadata: CheckpointMetadata(), to: path)
        let weights = try HDF5File.open(path).root.openGroup("model_weights")
        let names = try weights.stringsAttribute("layer_names")
        #expect(names == ["input_layer"] + model.layers.map(\.name))
        #expect(names[1] == "conv2d" && names.contains("max_pooling2d") && names.contains("batch_normalization"))
        #expect(try weights.openGroup("conv2d").stringsAttribute("weight_names") == ["conv2d/kernel:0", "conv2d/bias:0"])
        #expect(try weights.shape(of: "conv2d/conv2d/kernel:0") == [3, 3, 1, 4])
        #expect(try weights.openGroup("batch_normalization").stringsAttribute("weight_names")
                == ["batch_normalization/gamma:0", "batch_normalization/beta:0",
                    "batch_normalization/moving_mean:0", "batch_normalization/moving_variance:0"])
        #expect(try weights.openGroup("max_pooling2d").stringsAttribute("weight_names").isEmpty)
    }

    @Test("strict loading names the layer, both shapes and the fix")
    func strictErrors() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("u.h5").path
        try Checkpoint.save(try Model.uNet(smallUNet), metadata: CheckpointMetadata(), to: path)

        var wider = smallUNet
        wider.widths = [4, 8, 32]
        let other = try Model.uNet(wider)
        do {
            try Checkpoint.loadWeights(into: other, from: path)
            Issue.record("a model with other widths must not load strictly")
        } catch let error as CheckpointError {
            guard case .shapeMismatch(_, let weightPath, let expected, let actual) = error else {
                Issue.record("expected a shape mismatch, got \(error)")
                return
            }
            #expect(weightPath.hasPrefix("conv2d_4/"))
            #expect(expected != actual)
            #expect(error.description.contains("load by name"))
        }

        let classifier = try Model.classifier(smallClassifier)
        #expect(throws: CheckpointError.self) { try Checkpoint.loadWeights(into: classifier, from: path) }
    }

    @Test("an encoder loads into a classifier by name; the head is reported missing")
    func encoderIntoClassifier() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let uNet = try Model.uNet(UNetConfiguration(inputShape: [16, 16, 1], widths: [4, 8, 16], seed: 99))
        let path = folder.appendingPathComponent("u.h5").path
        try Checkpoint.save(uNet, metadata: CheckpointMetadata(), to: path)
        let classifier = try Model.classifier(smallClassifier)
        let report = try Checkpoint.loadWeights(into: classifier, from: path, matching: .byName)
        #expect(report.loadedLayers == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3"])
        #expect(report.missingLayers.contains("dense"))
        #expect(!report.unexpectedLayers.isEmpty, "the decoder's layers are not in the classifier")
        #expect(classifier.layer(named: "conv2d_3")!.weights[0].value == uNet.layer(named: "conv2d_3")!.weights[0].value)
    }

    @Test("damaged checkpoints give errors, never crashes")
    func damaged() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("u.h5").path
        try Checkpoint.save(try Model.uNet(smallUNet), metadata: CheckpointMetadata(epoch: 1), to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var generator = SeededGenerator(seed: 42)
        var rejected = 0
        let variants = 300
        for index in 0..<variants {
            var copy = index < 10 ? bytes.prefix(bytes.count * index / 10) : bytes
            if index >= 10 {
                for _ in 0..<16 {
                    let offset = Int(generator.next() % UInt64(copy.count))
                    copy[offset] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
                }
            }
            let damaged = folder.appendingPathComponent("d\(index).h5").path
            try copy.write(to: URL(fileURLWithPath: damaged))
            do { _ = try Checkpoint.load(damaged) } catch { rejected += 1 }
        }
        #expect(rejected >= 10, "every truncated variant is rejected")
    }
}
