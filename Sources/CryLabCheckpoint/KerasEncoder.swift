import CryLabHDF5
import CryLabNN
import Foundation

/// The encoder in a Keras full-model file (`model.save("x.h5")`), read from its `model_config`.
///
/// The model must be the encoder `crylab export-encoder` writes, or a U-Net or classifier that
/// starts with one: per level, `convolutionsPerLevel` Conv2D ('same', stride 1; ReLU, or linear
/// followed by BatchNormalization and ReLU), then MaxPooling2D 2 (and Dropout) between levels.
/// The architecture is inferred from the layers, CryLab builds it, and every layer CryLab built
/// is compared with Keras's, setting by setting, before any weight is read.
///
/// Layers are paired by position, not by name: a model built in a Keras session that had made
/// other layers first calls its layers `conv2d_4`, `batch_normalization_2`, ...
public struct KerasEncoder {
    public let model: Model
    public let configuration: UNetConfiguration
    public let levels: Int
    /// The Keras name of each layer of `model`, in order.
    public let kerasNames: [String]

    /// The encoder `path` holds, with its weights; nil when the file has no `model_config`
    /// (weights only: the architecture has to come from elsewhere).
    public static func load(_ path: String) throws -> KerasEncoder? {
        let root = try HDF5File.open(path).root
        guard root.hasAttribute("model_config") else { return nil }
        let layers = try KerasLayer.list(modelConfig: try root.stringAttribute("model_config"), file: path)
        let (configuration, levels) = try architecture(of: layers, file: path)
        let model = try Model.encoder(configuration, levels: levels)
        let theirs = Array(layers.dropFirst())  // after the input
        guard theirs.count >= model.layers.count else {
            throw CheckpointError.unsupportedKerasModel(file: path, detail: "\(theirs.count) layers, CryLab's encoder of this architecture has \(model.layers.count)")
        }
        let kerasNames = theirs.prefix(model.layers.count).map(\.name)
        for (index, (ours, keras)) in zip(model.layers, theirs).enumerated() {
            try keras.check(against: ours, previous: index == 0 ? layers[0].name : kerasNames[index - 1], file: path)
        }
        // Weights by position: each Keras layer's weights under the name of CryLab's layer.
        let ourName = Dictionary(zip(kerasNames, model.layers.map(\.name)), uniquingKeysWith: { first, _ in first })
        let stored = try KerasWeights.read(from: try Checkpoint.weightsGroup(root)).compactMap { layer in
            ourName[layer.name].map { KerasWeights.StoredLayer(name: $0, weights: layer.weights) }
        }
        try model.load(stored, file: path)
        return KerasEncoder(model: model, configuration: configuration, levels: levels, kerasNames: kerasNames)
    }

    /// Layer classes an encoder level is made of.
    static let encoderClasses: Set<String> = ["Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D", "Dropout"]

    /// The U-Net configuration and level count whose encoder the layers begin with. The layers
    /// of the encoder classes at the start are cut into levels at each MaxPooling2D; a last group
    /// followed by an up-sampling layer is a U-Net's bottleneck (a width, not an encoder level).
    static func architecture(of layers: [KerasLayer], file: String) throws -> (UNetConfiguration, levels: Int) {
        let input = try inputShape(of: layers, file: file)
        var groups: [[KerasLayer]] = [[]]  // each level's layers before its pooling
        var end = 1
        while end < layers.count, encoderClasses.contains(layers[end].className) {
            let layer = layers[end]
            if layer.className == "MaxPooling2D" { groups.append([]) } else { groups[groups.count - 1].append(layer) }
            end += 1
        }
        let next = end < layers.count ? layers[end] : nil
        if groups.count > 1, !groups.last!.contains(where: { $0.className == "Conv2D" }) {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: """
                the encoder ends with pooling ('\(layers[end - 1].name)'\(next.map { ", then \($0.className) '\($0.name)'" } ?? "")), \
                CryLab's encoders end with their last level's convolutions
                """)
        }
        var widths: [Int] = []
        for (level, group) in groups.enumerated() {
            guard let first = group.first(where: { $0.className == "Conv2D" }), let width = first.int("filters"), width >= 1 else {
                let found = next.map { "\($0.className) '\($0.name)'" } ?? "the end of the model"
                throw CheckpointError.unsupportedKerasModel(file: file, detail: "level \(level + 1) has no Conv2D with a positive whole number of filters (found \(found))")
            }
            widths.append(width)
        }
        let isBottleneck = next.map { ["Conv2DTranspose", "UpSampling2D"].contains($0.className) } ?? false
        let levels = groups.count - (isBottleneck ? 1 : 0)
        guard levels >= 1 else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "no encoder level before '\(next?.name ?? "the output")'")
        }
        let firstConvolution = groups[0].first { $0.className == "Conv2D" }!
        guard let kernel = firstConvolution.ints("kernel_size")?.first, kernel >= 1 else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "layer '\(firstConvolution.name)': kernel_size is not a list of integers")
        }
        let prefix = layers[1..<end]
        let configuration = UNetConfiguration(
            inputShape: input, widths: widths, kernelSize: kernel,
            convolutionsPerLevel: groups[0].filter { $0.className == "Conv2D" }.count,
            batchNormalization: prefix.contains { $0.className == "BatchNormalization" },
            dropoutRate: Float(prefix.first { $0.className == "Dropout" }?.number("rate") ?? 0))
        guard configuration.dropoutRate >= 0 && configuration.dropoutRate < 1 else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "Dropout rate \(configuration.dropoutRate) is outside [0, 1)")
        }
        // Building the model allocates every weight: sizes no file could hold are refused first.
        var parameters = 0.0, channels = Double(input[2])
        for width in widths.prefix(levels).map(Double.init) {
            for _ in 0..<configuration.convolutionsPerLevel {
                parameters += Double(kernel) * Double(kernel) * channels * width + width
                channels = width
            }
        }
        guard parameters <= Double(1 << 28) else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "its encoder claims \(String(format: "%.3g", parameters)) weights (widths \(widths), kernel \(kernel)); the limit is \(1 << 28)")
        }
        return (configuration, levels)
    }

    /// [mels, frames, 1] from the InputLayer (Keras 3 `batch_shape`, tf.keras `batch_input_shape`).
    static func inputShape(of layers: [KerasLayer], file: String) throws -> [Int] {
        guard let input = layers.first, input.className == "InputLayer" else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "model_config does not start with an InputLayer")
        }
        guard let shape = (input.config["batch_shape"] ?? input.config["batch_input_shape"]) as? [Any], shape.count == 4 else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "InputLayer '\(input.name)' has no batch_shape of rank 4 (batch, mels, frames, channels)")
        }
        let sizes = shape.dropFirst().map { KerasLayer.integer($0) }
        guard sizes.allSatisfy({ ($0 ?? 0) >= 1 }) else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: """
                InputLayer '\(input.name)' has input shape [\(sizes.map { $0.map { String($0) } ?? "None" }.joined(separator: ", "))]; \
                CryLab needs a fixed size: build the model on keras.Input((mels, frames, 1))
                """)
        }
        guard sizes[2] == 1 else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "InputLayer '\(input.name)' takes \(sizes[2]!) channels; spectrograms have 1")
        }
        return sizes.map { $0! }
    }
}

/// One layer of a Keras `model_config`, as tf.keras 2 and Keras 3 describe it.
struct KerasLayer {
    var className: String
    var name: String
    var config: [String: Any]
    /// Names of the layers whose outputs this layer takes (empty in a Sequential model).
    var inputs: [String]

    /// The layers of a Functional or Sequential model, in order.
    static func list(modelConfig json: String, file: String) throws -> [KerasLayer] {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: Data(json.utf8)) } catch {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "the root attribute model_config is not valid JSON (\(error.localizedDescription))")
        }
        guard let root = object as? [String: Any], let config = root["config"] as? [String: Any],
              let layers = config["layers"] as? [[String: Any]] else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "the root attribute model_config has no config.layers list")
        }
        var result: [KerasLayer] = []
        for (index, layer) in layers.enumerated() {
            let layerConfig = layer["config"] as? [String: Any] ?? [:]
            guard let className = layer["class_name"] as? String,
                  let name = layer["name"] as? String ?? layerConfig["name"] as? String else {
                throw CheckpointError.unsupportedKerasModel(file: file, detail: "model_config layer \(index) has no class_name or name")
            }
            var inputs: [String] = []
            collectInputs(layer["inbound_nodes"] as Any, into: &inputs)
            result.append(KerasLayer(className: className, name: name, config: layerConfig, inputs: inputs))
        }
        if root["class_name"] as? String == "Sequential", result.first?.className != "InputLayer",
           let shape = result.first?.config["batch_input_shape"] ?? result.first?.config["batch_shape"] {
            // tf.keras 2 puts a Sequential model's input shape on its first layer.
            result.insert(KerasLayer(className: "InputLayer", name: "input", config: ["batch_shape": shape], inputs: []), at: 0)
        }
        return result
    }

    /// Layer names an inbound-nodes description refers to: Keras 3 tensors carry
    /// `keras_history: [layer, node, tensor]`; tf.keras 2 nodes are `[layer, node, tensor, kwargs]`.
    private static func collectInputs(_ value: Any, into names: inout [String]) {
        if let dictionary = value as? [String: Any] {
            if let history = dictionary["keras_history"] as? [Any], let name = history.first as? String {
                names.append(name)
                return
            }
            for (_, inner) in dictionary.sorted(by: { $0.key < $1.key }) { collectInputs(inner, into: &names) }
        } else if let array = value as? [Any] {
            if array.count >= 3, let name = array[0] as? String, integer(array[1]) != nil {
                names.append(name)
                return
            }
            for inner in array { collectInputs(inner, into: &names) }
        }
    }

    // MARK: Settings

    /// A JSON number or boolean (as JSONSerialization or CryLab's own dictionaries hold it).
    static func number(_ value: Any?) -> Double? {
        guard let value, !(value is String), !(value is NSNull) else { return nil }
        if type(of: value) == Bool.self { return (value as! Bool) ? 1 : 0 }
        if let number = value as? NSNumber { return number.doubleValue }
        if let int = value as? Int { return Double(int) }
        if let double = value as? Double { return double }
        return (value as? Float).map(Double.init)
    }

    static func integer(_ value: Any?) -> Int? {
        guard let number = number(value), number == number.rounded(), abs(number) < 1e15 else { return nil }
        return Int(number)
    }

    func number(_ key: String) -> Double? { Self.number(config[key]) }
    func int(_ key: String) -> Int? { Self.integer(config[key]) }
    func ints(_ key: String) -> [Int]? {
        guard let list = config[key] as? [Any] else { return int(key).map { [$0] } }
        let values = list.compactMap(Self.integer)
        return values.count == list.count ? values : nil
    }

    /// Whether a Keras setting equals CryLab's: numbers within rounding (CryLab keeps Float),
    /// lists element by element, strings exactly.
    static func same(_ ours: Any, _ theirs: Any?) -> Bool {
        if let list = ours as? [Any] {
            guard let other = theirs as? [Any], other.count == list.count else { return false }
            return zip(list, other).allSatisfy { same($0, $1) }
        }
        if let string = ours as? String { return theirs as? String == string }
        guard let a = number(ours), let b = number(theirs) else { return false }
        return abs(a - b) <= 1e-6 * max(1, abs(a))
    }

    static func show(_ value: Any?) -> String {
        guard let value, !(value is NSNull) else { return "none" }
        if let string = value as? String { return "'\(string)'" }
        if let list = value as? [Any] { return "[" + list.map { show($0) }.joined(separator: ", ") + "]" }
        return number(value).map { $0 == $0.rounded() && abs($0) < 1e15 ? String(Int($0)) : String($0) } ?? "\(value)"
    }

    /// Throws unless this layer is `ours` in Keras, fed by the layer named `previous`: same
    /// class, every setting CryLab writes for it equal, and no setting CryLab lacks in use.
    func check(against ours: any Layer, previous: String, file: String) throws {
        func mismatch(_ detail: String) -> CheckpointError {
            .unsupportedKerasModel(file: file, detail: "layer '\(name)' (\(className)) \(detail)")
        }
        guard className == ours.kerasClass else {
            throw CheckpointError.unsupportedKerasModel(file: file, detail: "layer '\(name)' is a \(className) where CryLab's encoder has a \(ours.kerasClass)")
        }
        if !inputs.isEmpty, inputs != [previous] {  // a Sequential model lists no inputs
            throw mismatch("takes its input from \(inputs.map { "'\($0)'" }.joined(separator: ", ")); CryLab's encoder feeds it '\(previous)' alone")
        }
        var expected = KerasModelConfig.layerConfig(ours) ?? [:]
        expected["momentum"] = nil  // steers training only
        if config["data_format"] == nil || config["data_format"] is NSNull {
            expected["data_format"] = nil  // left out: Keras's default, channels_last
        }
        if className == "MaxPooling2D", config["strides"] == nil || config["strides"] is NSNull {
            expected["strides"] = nil  // None: strides equal to pool_size
        }
        if className == "BatchNormalization" {
            expected["axis"] = nil
            let axis = config["axis"] as? [Any] ?? [config["axis"] as Any]
            guard axis.count == 1, let value = Self.integer(axis[0]), value == -1 || value == 3 else {
                throw mismatch("normalises over axis \(Self.show(config["axis"])); CryLab normalises the channels (-1)")
            }
        }
        for (key, value) in expected.sorted(by: { $0.key < $1.key }) where !Self.same(value, config[key]) {
            throw mismatch("has \(key) \(Self.show(config[key])); CryLab's encoder has \(Self.show(value)) there")
        }
        // Settings CryLab's layers do not have, allowed only at the value that does nothing.
        let neutral: [String: Any?] = switch className {
        case "Conv2D": ["dilation_rate": [1, 1], "groups": 1]
        case "ReLU": ["max_value": nil, "negative_slope": 0, "threshold": 0]
        case "Dropout": ["noise_shape": nil]
        default: [:]
        }
        for (key, allowed) in neutral.sorted(by: { $0.key < $1.key }) {
            guard let value = config[key], !(value is NSNull) else { continue }
            let isNeutral = allowed.map { Self.same($0, value) || (key == "dilation_rate" && Self.integer(value) == 1) } ?? false
            if !isNeutral { throw mismatch("has \(key) \(Self.show(value)), which CryLab's layers do not support") }
        }
    }
}
