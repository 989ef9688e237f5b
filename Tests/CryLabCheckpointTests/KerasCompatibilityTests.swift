import CryLabCheckpoint
import CryLabHDF5
import CryLabNN
import Foundation
import Testing

/// Files Keras 3.15 saved (Scripts/keras/checkpoint_fixtures.py make) of the models below.
let kerasFixtures = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/keras")

/// CryLab's builders for the architecture the fixture script builds in Keras.
enum FixtureModels {
    static let uNet = UNetConfiguration(inputShape: [16, 16, 1], widths: [4, 8, 16])
    static let classifier = ClassifierConfiguration(
        encoder: uNet, encoderLevels: 2,
        head: HeadConfiguration(pooling: .globalAverage, hidden: [.init(units: 8, activation: .relu, batchNormalization: true)]),
        classes: 3)

    static func build(_ kind: String) throws -> Model {
        switch kind {
        case "unet": return try Model.uNet(uNet)
        case "encoder": return try Model.encoder(uNet, levels: 2)
        default: return try Model.classifier(classifier)
        }
    }
}

func readFloats(_ url: URL) throws -> [Float] {
    let data = try Data(contentsOf: url)
    return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
}

func largestRelativeDifference(_ a: [Float], _ b: [Float]) -> Float {
    let scale = max(b.map { abs($0) }.max() ?? 0, 1e-12)
    return zip(a, b).map { abs($0 - $1) }.max()! / scale
}

@Suite("Keras compatibility")
struct KerasCompatibilityTests {
    @Test("a Keras-saved file loads into the matching CryLab model and gives Keras's outputs",
          arguments: ["unet", "encoder", "classifier"])
    func kerasToCryLab(kind: String) throws {
        let model = try FixtureModels.build(kind)
        let report = try Checkpoint.loadWeights(into: model, from: kerasFixtures.appendingPathComponent("\(kind).h5").path)
        #expect(report.missingLayers.isEmpty && report.unexpectedLayers.isEmpty)
        let input = Tensor(shape: [2, 16, 16, 1], values: try readFloats(kerasFixtures.appendingPathComponent("input.f32")))
        let expected = try readFloats(kerasFixtures.appendingPathComponent("\(kind)-output.f32"))
        let output = model.predict(input)
        #expect(output.count == expected.count)
        let difference = largestRelativeDifference(output.values, expected)
        print("\(kind): largest relative difference to Keras \(difference)")
        #expect(difference <= 1e-4)
    }

    @Test("CryLab writes the layout Keras writes: layer names, weight names and shapes",
          arguments: ["unet", "encoder", "classifier"])
    func sameLayout(kind: String) throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("\(kind).h5").path
        try Checkpoint.save(try FixtureModels.build(kind), metadata: CheckpointMetadata(), to: path)
        let ours = try Checkpoint.describe(path), theirs = try Checkpoint.describe(kerasFixtures.appendingPathComponent("\(kind).h5").path)
        #expect(ours.layers.map(\.name) == theirs.layers.map(\.name))
        for (a, b) in zip(ours.layers, theirs.layers) {
            #expect(a.weights == b.weights, "\(a.name): \(a.weights) vs Keras \(b.weights)")
        }
        #expect(theirs.format == "keras full model")
        // model_config: the same layers, classes and graph edges as Keras describes its own model.
        func graph(_ file: String) throws -> [String] {
            let root = try HDF5File.open(file).root
            let object = try JSONSerialization.jsonObject(with: Data(try root.stringAttribute("model_config").utf8)) as! [String: Any]
            let layers = (object["config"] as! [String: Any])["layers"] as! [[String: Any]]
            return layers.map { layer in
                let sources = "\(layer["inbound_nodes"]!)".components(separatedBy: "keras_history").count - 1
                return "\(layer["class_name"]!) \(layer["name"]!) <- \(sources)"
            }
        }
        #expect(try graph(path) == graph(kerasFixtures.appendingPathComponent("\(kind).h5").path))
    }

    /// The full round trip through the real Keras: set CRYLAB_KERAS_PYTHON to a Python with
    /// tensorflow-cpu and keras (e.g. `$(Scripts/python-env.sh tensorflow-cpu keras h5py)`).
    @Test("Keras loads CryLab-written files and reproduces CryLab's outputs (opt-in)",
          .enabled(if: ProcessInfo.processInfo.environment["CRYLAB_KERAS_PYTHON"] != nil,
                   "set CRYLAB_KERAS_PYTHON to a Python with keras to run the round trip through Keras"),
          arguments: ["unet", "encoder", "classifier"])
    func cryLabToKeras(kind: String) throws {
        let python = ProcessInfo.processInfo.environment["CRYLAB_KERAS_PYTHON"]!
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = FixtureModels.uNet
        configuration.seed = 77
        let model: Model
        switch kind {
        case "unet": model = try Model.uNet(configuration)
        case "encoder": model = try Model.encoder(configuration, levels: 2)
        default:
            var classifier = FixtureModels.classifier
            classifier.encoder = configuration
            classifier.seed = 78
            model = try Model.classifier(classifier)
        }
        let input = randomInput(batch: 2, seed: 5)
        let output = model.predict(input)
        let checkpoint = folder.appendingPathComponent("crylab.h5").path
        try Checkpoint.save(model, metadata: CheckpointMetadata(), to: checkpoint)
        try Data(input.values.withUnsafeBytes { Data($0) }).write(to: folder.appendingPathComponent("input.f32"))
        try Data(output.values.withUnsafeBytes { Data($0) }).write(to: folder.appendingPathComponent("output.f32"))
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/keras/checkpoint_fixtures.py").path
        let files = [folder.appendingPathComponent("input.f32").path, folder.appendingPathComponent("output.f32").path]
        // load_weights into the model built in Keras, then load_model from the file alone.
        for arguments in [["check", checkpoint, kind] + files, ["load", checkpoint] + files] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: python)
            process.arguments = [script] + arguments
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "Keras (\(arguments[0])) differs from CryLab for \(kind)")
        }
    }

    /// Two Conv2DTranspose layers with kernel != stride, 'same' then 'valid' padding.
    static func transposedModel() throws -> Model {
        var b = GraphBuilder(inputShape: [16, 16, 1], seed: 79)
        let same = Conv2DTranspose(name: b.namer.next("conv2d_transpose"), inputChannels: 1, filters: 3, kernelSize: 3,
                                   stride: 2, padding: .same, activation: .relu, generator: &b.generator)
        let valid = Conv2DTranspose(name: b.namer.next("conv2d_transpose"), inputChannels: 3, filters: 2, kernelSize: 4,
                                    stride: 3, generator: &b.generator)
        for layer in [same, valid] { try layer.bias!.assign(Tensor(shape: [layer.filters], repeating: 0.05)) }
        _ = try b.add(valid, inputs: [b.add(same, inputs: [0])])
        return Model(inputShape: [16, 16, 1], nodes: b.nodes)
    }

    @Test("model_config describes a general Conv2DTranspose with its real kernel size, strides and padding")
    func transposedConvolutionConfig() throws {
        let json = try #require(try KerasModelConfig.json(for: try Self.transposedModel()))
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        let layers = ((object["config"] as! [String: Any])["layers"] as! [[String: Any]]).dropFirst()
        let configs = layers.map { $0["config"] as! [String: Any] }
        #expect(layers.map { $0["class_name"] as! String } == ["Conv2DTranspose", "Conv2DTranspose"])
        #expect(configs.map { $0["kernel_size"] as! [Int] } == [[3, 3], [4, 4]])
        #expect(configs.map { $0["strides"] as! [Int] } == [[2, 2], [3, 3]])
        #expect(configs.map { $0["padding"] as! String } == ["same", "valid"])
        #expect(configs.map { $0["filters"] as! Int } == [3, 2])
    }

    /// Keras rebuilds the model above from the file alone (load_model) and reproduces CryLab's output.
    @Test("Keras loads a CryLab file with general Conv2DTranspose layers (opt-in)",
          .enabled(if: ProcessInfo.processInfo.environment["CRYLAB_KERAS_PYTHON"] != nil,
                   "set CRYLAB_KERAS_PYTHON to a Python with keras to run the round trip through Keras"))
    func transposedConvolutionToKeras() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try Self.transposedModel()
        let input = randomInput(batch: 2, seed: 6)
        let output = model.predict(input)
        #expect(output.shape == [2, 3 * 31 + 4, 3 * 31 + 4, 2])  // 16 -> 32 ('same', stride 2) -> 31*3+4 ('valid')
        let checkpoint = folder.appendingPathComponent("crylab.h5").path
        try Checkpoint.save(model, metadata: CheckpointMetadata(), to: checkpoint)
        let files = [folder.appendingPathComponent("input.f32"), folder.appendingPathComponent("output.f32")]
        try Data(input.values.withUnsafeBytes { Data($0) }).write(to: files[0])
        try Data(output.values.withUnsafeBytes { Data($0) }).write(to: files[1])
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/keras/checkpoint_fixtures.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.environment["CRYLAB_KERAS_PYTHON"]!)
        process.arguments = [script, "load", checkpoint] + files.map(\.path)
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "Keras's load_model differs from CryLab for general Conv2DTranspose layers")
    }
}
