import CryLabHDF5
import Foundation

/// What `crylab inspect` shows of any `.h5` CryLab or Keras wrote, read without loading weights.
public struct CheckpointDescription: Codable, Sendable {
    public struct LayerDescription: Codable, Sendable {
        public var name: String
        public var kerasClass: String?
        public var weights: [String: [Int]]
        public var parameters: Int
        public var trainable: Bool
    }

    public var file: String
    /// "crylab-checkpoint v1", "keras full model", "keras weights" or "crylab-features v1".
    public var format: String
    public var kerasVersion: String?
    public var modelKind: String?
    public var layers: [LayerDescription]
    public var parameters: Int
    public var trainableParameters: Int
    public var metadata: CheckpointMetadata?
    public var optimizer: String?
    public var hasKerasModelConfig: Bool

    public var text: String {
        var lines = ["\(file): \(format)" + (kerasVersion.map { ", Keras layout \($0)" } ?? "")]
        if let modelKind { lines.append("model: \(modelKind)") }
        let width = max(12, layers.map(\.name.count).max() ?? 12)
        lines.append("\("layer".padding(toLength: width, withPad: " ", startingAt: 0))  \("class".padding(toLength: 20, withPad: " ", startingAt: 0))  \("parameters".padding(toLength: 11, withPad: " ", startingAt: 0))  trainable  weights")
        for layer in layers {
            let shapes = layer.weights.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append("\(layer.name.padding(toLength: width, withPad: " ", startingAt: 0))  \((layer.kerasClass ?? "?").padding(toLength: 20, withPad: " ", startingAt: 0))  \(String(layer.parameters).padding(toLength: 11, withPad: " ", startingAt: 0))  \((layer.trainable ? "yes" : "frozen").padding(toLength: 9, withPad: " ", startingAt: 0))  \(shapes)")
        }
        lines.append("parameters: \(parameters) (\(trainableParameters) trainable)")
        if let metadata {
            if let frontEnd = metadata.frontEnd {
                lines.append("front end: \(frontEnd.sampleRate) Hz, n_fft \(frontEnd.nFFT), hop \(frontEnd.resolvedHopLength), \(frontEnd.nMels) mels, \(frontEnd.toDB ? "dB" : "power"), \(frontEnd.frames.map { "\($0) frames" } ?? "all frames")")
            }
            if let n = metadata.normalization { lines.append(String(format: "normalisation: mean %.5g, std %.5g", n.mean, n.std)) }
            if !metadata.classNames.isEmpty { lines.append("classes: \(metadata.classNames.joined(separator: ", "))") }
            lines.append("training state: epoch \(metadata.epoch), step \(metadata.step)" + (metadata.bestMetric.map { String(format: ", best metric %.5g", $0) } ?? ""))
            if !metadata.frozenLayers.isEmpty { lines.append("frozen: \(metadata.frozenLayers.joined(separator: ", "))") }
        }
        if let optimizer { lines.append("optimizer: \(optimizer)") }
        return lines.joined(separator: "\n")
    }
}

extension Checkpoint {
    /// Describes a checkpoint or Keras file: layers, shapes, parameters, trainable flags, front
    /// end, classes and training state. Shapes are read from the file's metadata only.
    public static func describe(_ path: String) throws -> CheckpointDescription {
        let root = try HDF5File.open(path).root
        var metadata: CheckpointMetadata?
        var format = "keras weights"
        var modelKind: String?
        var optimizer: String?
        var classes: [String: String] = [:]
        if root.contains("crylab") {
            let ours = try root.openGroup("crylab")
            guard case .int(let version) = try ours.attribute("format_version") else {
                throw CheckpointError.notACheckpoint(file: path, detail: "crylab/@format_version is not an integer")
            }
            format = "\(try ours.stringAttribute("format")) v\(version)"
            metadata = try? JSONDecoder().decode(CheckpointMetadata.self, from: Data(try ours.stringAttribute("metadata").utf8))
            if let json = try? ours.stringAttribute("model"),
               let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] {
                modelKind = object["kind"] as? String
                for key in ["uNet", "classifier"] {
                    if let body = object[key] { modelKind! += " " + compactJSON(body) }
                }
            }
            if ours.contains("optimizer") {
                let group = try ours.openGroup("optimizer")
                if case .int(let steps) = try group.attribute("iterations") {
                    optimizer = "\(try group.stringAttribute("kind")), \(steps) steps"
                }
            }
        } else if root.hasAttribute("model_config") {
            format = "keras full model"
            if let json = try? root.stringAttribute("model_config"),
               let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
               let config = object["config"] as? [String: Any], let layers = config["layers"] as? [[String: Any]] {
                for layer in layers {
                    if let name = (layer["config"] as? [String: Any])?["name"] as? String ?? layer["name"] as? String,
                       let kind = layer["class_name"] as? String { classes[name] = kind }
                }
            }
        }
        let weights = try weightsGroup(root)
        let kerasVersion = try? weights.stringAttribute("keras_version")
        let frozen = Set(metadata?.frozenLayers ?? [])
        var layers: [CheckpointDescription.LayerDescription] = []
        for name in try weights.stringsAttribute("layer_names") where !name.isEmpty {
            let group = try weights.openGroup(name)
            var shapes: [String: [Int]] = [:]
            for stored in (group.hasAttribute("weight_names") ? try group.stringsAttribute("weight_names") : []) where !stored.isEmpty {
                shapes[KerasWeights.shortName(stored)] = try group.shape(of: stored)
            }
            let parameters = shapes.values.reduce(0) { $0 + $1.reduce(1, *) }
            layers.append(.init(name: name, kerasClass: classes[name] ?? guessClass(name), weights: shapes,
                                parameters: parameters, trainable: !frozen.contains(name)))
        }
        let nonTrainable = layers.reduce(0) { total, layer in
            total + layer.weights.filter { $0.key.hasPrefix("moving_") }.values.reduce(0) { $0 + $1.reduce(1, *) }
        }
        let total = layers.reduce(0) { $0 + $1.parameters }
        let frozenCount = layers.filter { !$0.trainable }.reduce(0) { total, layer in
            total + layer.weights.filter { !$0.key.hasPrefix("moving_") }.values.reduce(0) { $0 + $1.reduce(1, *) }
        }
        return CheckpointDescription(file: path, format: format, kerasVersion: kerasVersion, modelKind: modelKind, layers: layers,
                                     parameters: total, trainableParameters: total - nonTrainable - frozenCount, metadata: metadata,
                                     optimizer: optimizer, hasKerasModelConfig: root.hasAttribute("model_config"))
    }

    /// Keras's default names say the class: conv2d_3 is a Conv2D.
    static func guessClass(_ name: String) -> String? {
        let base = name.split(separator: "_").last.flatMap { Int($0) } != nil
            ? String(name[..<name.lastIndex(of: "_")!]) : name
        return ["conv2d": "Conv2D", "conv2d_transpose": "Conv2DTranspose", "dense": "Dense", "batch_normalization": "BatchNormalization",
                "max_pooling2d": "MaxPooling2D", "concatenate": "Concatenate", "dropout": "Dropout", "flatten": "Flatten",
                "global_average_pooling2d": "GlobalAveragePooling2D", "re_lu": "ReLU", "up_sampling2d": "UpSampling2D",
                "input_layer": "InputLayer", "leaky_re_lu": "LeakyReLU"][base]
    }

    private static func compactJSON(_ value: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }
}
