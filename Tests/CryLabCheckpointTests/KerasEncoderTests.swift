import CryLabCheckpoint
import CryLabHDF5
import CryLabNN
import Foundation
import Testing

/// A Keras-saved encoder fixture (Scripts/keras/checkpoint_fixtures.py make / encoder-bn), its
/// input and Keras's outputs on it.
struct KerasEncoderFixture: CustomStringConvertible, Sendable {
    var file: String
    var input: String
    var output: String
    var configuration: UNetConfiguration
    var levels: Int

    var path: String { kerasFixtures.appendingPathComponent(file).path }
    var description: String { file }

    /// Encoder, ReLU convolutions, 16 x 16, the names Keras gives a fresh session.
    static let plain = KerasEncoderFixture(file: "encoder.h5", input: "input.f32", output: "encoder-output.f32",
                                           configuration: UNetConfiguration(inputShape: [16, 16, 1], widths: [4, 8]), levels: 2)
    /// BatchNormalization, ReLU and Dropout, 16 mels x 24 frames, names offset (conv2d_1, ...).
    static let batchNormalized = KerasEncoderFixture(
        file: "encoder-bn.h5", input: "encoder-bn-input.f32", output: "encoder-bn-output.f32",
        configuration: UNetConfiguration(inputShape: [16, 24, 1], widths: [4, 8], batchNormalization: true, dropoutRate: 0.1), levels: 2)

    func inputTensor() throws -> Tensor {
        let shape = [2] + configuration.inputShape
        return Tensor(shape: shape, values: try readFloats(kerasFixtures.appendingPathComponent(input)))
    }

    func kerasOutput() throws -> [Float] { try readFloats(kerasFixtures.appendingPathComponent(output)) }
}

/// A Keras full-model file with encoder.h5's model_config changed by `edit` (the JSON object),
/// and the weights of the same architecture, written fresh in `folder`.
func editedKerasFile(in folder: URL, _ edit: (inout [String: Any]) -> Void) throws -> String {
    let original = try HDF5File.open(KerasEncoderFixture.plain.path).root.stringAttribute("model_config")
    var object = try JSONSerialization.jsonObject(with: Data(original.utf8)) as! [String: Any]
    edit(&object)
    let json = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    let path = folder.appendingPathComponent("edited-encoder.h5").path
    try HDF5File.writeAtomically(to: path) { file in
        let root = try file.root
        try root.setAttribute("model_config", .string(json))
        try KerasWeights.write(try Model.encoder(FixtureModels.uNet, levels: 2), into: try root.createGroup("model_weights"))
    }
    return path
}

/// The layer dictionaries of a model_config object, for editing.
func editLayers(_ object: inout [String: Any], _ edit: (inout [[String: Any]]) -> Void) {
    var config = object["config"] as! [String: Any]
    var layers = config["layers"] as! [[String: Any]]
    edit(&layers)
    config["layers"] = layers
    object["config"] = config
}

@Suite("Keras-saved encoders")
struct KerasEncoderTests {
    @Test("a Keras model.save encoder is rebuilt from its model_config and gives Keras's outputs",
          arguments: [KerasEncoderFixture.plain, .batchNormalized])
    func rebuildsAndMatchesKeras(fixture: KerasEncoderFixture) throws {
        let encoder = try #require(try KerasEncoder.load(fixture.path))
        #expect(encoder.configuration == fixture.configuration)
        #expect(encoder.levels == fixture.levels)
        let output = encoder.model.predict(try fixture.inputTensor())
        let expected = try fixture.kerasOutput()
        #expect(output.count == expected.count, "output \(output.shape)")
        let difference = largestRelativeDifference(output.values, expected)
        print("\(fixture.file): largest relative difference to Keras \(difference)")
        #expect(difference <= 1e-4)
    }

    @Test("layers are paired by position: Keras's offset names map onto CryLab's")
    func offsetNames() throws {
        let encoder = try #require(try KerasEncoder.load(KerasEncoderFixture.batchNormalized.path))
        #expect(Array(encoder.kerasNames.prefix(4)) == ["conv2d_1", "batch_normalization_1", "re_lu_1", "conv2d_2"])
        #expect(Array(encoder.model.layers.prefix(4).map(\.name)) == ["conv2d", "batch_normalization", "re_lu", "conv2d_1"])
        let stored = try KerasWeights.read(from: try HDF5File.open(KerasEncoderFixture.batchNormalized.path).root.openGroup("model_weights"))
        let kerasMean = try #require(stored.first { $0.name == "batch_normalization_3" }?.weights.first { $0.name == "moving_mean" }?.value)
        let ours = try #require(encoder.model.layer(named: "batch_normalization_2")?.weights.first { $0.name == "moving_mean" })
        #expect(ours.value == kerasMean)
    }

    @Test("a Keras U-Net gives its encoder without the bottleneck; a classifier its encoder levels",
          arguments: [("unet.h5", [4, 8, 16]), ("classifier.h5", [4, 8])])
    func encoderOfLargerModels(file: String, widths: [Int]) throws {
        let path = kerasFixtures.appendingPathComponent(file).path
        let encoder = try #require(try KerasEncoder.load(path))
        #expect(encoder.levels == 2)
        #expect(encoder.configuration.widths == widths)
        #expect(encoder.model.layers.map(\.name) == ["conv2d", "conv2d_1", "max_pooling2d", "conv2d_2", "conv2d_3"])
        let stored = try KerasWeights.read(from: try HDF5File.open(path).root.openGroup("model_weights"))
        for name in ["conv2d", "conv2d_3"] {
            let kernel = try #require(stored.first { $0.name == name }?.weights.first { $0.name == "kernel" }?.value)
            #expect(encoder.model.layer(named: name)?.weights.first { $0.name == "kernel" }?.value == kernel, "\(file) \(name)")
        }
    }

    @Test("a weights-only file has no model_config: nil, so the caller supplies the architecture")
    func weightsOnly() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("weights.h5").path
        try HDF5File.writeAtomically(to: path) { file in
            try KerasWeights.write(try Model.encoder(FixtureModels.uNet, levels: 2), into: try file.root)
        }
        #expect(try KerasEncoder.load(path) == nil)
    }

    @Test("a model that is not CryLab's encoder is refused, naming the file, the layer and the setting",
          arguments: [
            ("padding", "'conv2d_2' (Conv2D) has padding 'valid'"),
            ("dilation", "'conv2d_1' (Conv2D) has dilation_rate [2, 2]"),
            ("free input size", "input shape [None, None, 1]"),
            ("branch", "'conv2d_3' (Conv2D) takes its input from 'conv2d_1'"),
            ("ends with pooling", "the encoder ends with pooling ('max_pooling2d_1')"),
          ])
    func refused(change: String, expectedText: String) throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // Unchanged, the file written this way loads: the refusal below is the change's.
        #expect(try KerasEncoder.load(try editedKerasFile(in: folder) { _ in })?.levels == 2)
        let path = try editedKerasFile(in: folder) { object in
            editLayers(&object) { layers in
                func setConfig(_ name: String, _ key: String, _ value: Any) {
                    let index = layers.firstIndex { ($0["name"] as? String) == name }!
                    var config = layers[index]["config"] as! [String: Any]
                    config[key] = value
                    layers[index]["config"] = config
                }
                switch change {
                case "padding": setConfig("conv2d_2", "padding", "valid")
                case "dilation": setConfig("conv2d_1", "dilation_rate", [2, 2])
                case "free input size": setConfig("input_layer", "batch_shape", [NSNull(), NSNull(), NSNull(), 1])
                case "branch":
                    // conv2d_3 reads conv2d_1's output instead of conv2d_2's: no longer a chain.
                    let index = layers.firstIndex { ($0["name"] as? String) == "conv2d_3" }!
                    let text = String(decoding: try! JSONSerialization.data(withJSONObject: layers[index]["inbound_nodes"]!), as: UTF8.self)
                    layers[index]["inbound_nodes"] = try! JSONSerialization.jsonObject(
                        with: Data(text.replacingOccurrences(of: "\"conv2d_2\"", with: "\"conv2d_1\"").utf8))
                default:
                    layers.append(["class_name": "MaxPooling2D", "name": "max_pooling2d_1",
                                   "config": ["name": "max_pooling2d_1", "pool_size": [2, 2], "strides": [2, 2], "padding": "valid"],
                                   "inbound_nodes": [] as [Any]])
                }
            }
        }
        do {
            _ = try KerasEncoder.load(path)
            Issue.record("\(change): the edited file was accepted")
        } catch let error as CheckpointError {
            let text = error.description
            #expect(text.hasPrefix(path + ": "), "\(text)")
            #expect(text.contains(expectedText), "\(text)")
            #expect(text.contains("crylab export-encoder"), "the error says what CryLab reads: \(text)")
        }
    }
}
