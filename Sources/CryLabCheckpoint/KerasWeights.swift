import CryLabHDF5
import CryLabNN
import Foundation

/// Model weights in the HDF5 layout that tf.keras 2, tf-keras and Keras 3 load with
/// `model.load_weights("x.h5")`:
///
/// - attributes `layer_names` (`input_layer`, then every layer in `model.layers` order), `backend`,
///   `keras_version`
/// - one group per layer, with attribute `weight_names` (`<layer>/<weight>:0`, trainable weights
///   first, as Keras lists them) and the datasets at `<layer>/<layer>/<weight>:0`
/// - kernels in Keras order: Conv2D `[kh, kw, in, out]`, Conv2DTranspose `[kh, kw, out, in]`,
///   Dense `[in, out]`; BatchNormalization `gamma`, `beta`, `moving_mean`, `moving_variance`.
public enum KerasWeights {
    /// The Keras release whose layout is written.
    public static let kerasVersion = "3.15.1"

    /// Writes every layer's weights into `group` (the file root for a weights file, or
    /// `model_weights` for a full-model file).
    public static func write(_ model: Model, into group: HDF5Group) throws {
        // Keras lists its InputLayer first, with no weights.
        try group.setAttribute("layer_names", .strings(["input_layer"] + model.layers.map(\.name)))
        try group.setAttribute("backend", .string("tensorflow"))
        try group.setAttribute("keras_version", .string(kerasVersion))
        try group.createGroup("input_layer").setAttribute("weight_names", .strings([]))
        for layer in model.layers {
            let layerGroup = try group.createGroup(layer.name)
            let ordered = layer.weights.filter(\.isTrainable) + layer.weights.filter { !$0.isTrainable }
            try layerGroup.setAttribute("weight_names", .strings(ordered.map { "\(layer.name)/\($0.name):0" }))
            guard !ordered.isEmpty else { continue }
            let inner = try layerGroup.createGroup(layer.name)
            for weight in ordered {
                try inner.write(weight.value.values, shape: weight.shape, as: "\(weight.name):0")
            }
        }
    }

    /// One stored layer: its name and its weights by Keras weight name (`kernel`, `bias`, ...).
    public struct StoredLayer: Sendable {
        public var name: String
        public var weights: [(name: String, value: Tensor)]
    }

    /// Reads the layers and weights stored in `group`. Weight names are reduced to the last path
    /// component without `:0`, so tf.keras 2 (`conv2d/kernel:0`) and Keras 3 (`kernel`) names agree.
    /// Sizes are validated against the file before anything is read.
    public static func read(from group: HDF5Group, elementLimit: Int = 1 << 28) throws -> [StoredLayer] {
        guard group.hasAttribute("layer_names") else {
            throw HDF5Error.missing(file: group.file.path, path: "\(group.path)@layer_names")
        }
        var layers: [StoredLayer] = []
        for layerName in try group.stringsAttribute("layer_names") where !layerName.isEmpty {
            let layerGroup = try group.openGroup(layerName)
            let names = layerGroup.hasAttribute("weight_names") ? try layerGroup.stringsAttribute("weight_names") : []
            var weights: [(String, Tensor)] = []
            for stored in names where !stored.isEmpty {
                let (values, shape) = try layerGroup.read(stored, as: Float.self, elementLimit: elementLimit)
                weights.append((shortName(stored), Tensor(shape: shape, values: values)))
            }
            layers.append(StoredLayer(name: layerName, weights: weights))
        }
        return layers
    }

    static func shortName(_ stored: String) -> String {
        var name = stored.split(separator: "/").last.map(String.init) ?? stored
        if let colon = name.lastIndex(of: ":") { name = String(name[..<colon]) }
        return name
    }
}

/// How strictly stored weights must match a model.
public struct WeightMatching: Sendable, Equatable {
    /// Layers of the model with no stored weights are left as they are instead of being an error.
    public var allowMissing: Bool
    /// Stored layers the model does not have are ignored instead of being an error.
    public var allowUnexpected: Bool
    /// Stored weights whose shape differs are skipped instead of being an error.
    public var allowShapeMismatch: Bool

    public init(allowMissing: Bool = false, allowUnexpected: Bool = false, allowShapeMismatch: Bool = false) {
        self.allowMissing = allowMissing
        self.allowUnexpected = allowUnexpected
        self.allowShapeMismatch = allowShapeMismatch
    }

    /// Everything must match: the default.
    public static let strict = WeightMatching()
    /// An encoder into a classifier: load the layers both have, by name, and report the rest.
    public static let byName = WeightMatching(allowMissing: true, allowUnexpected: true, allowShapeMismatch: true)
}

/// What loading by name did.
public struct WeightLoadReport: Sendable, Equatable {
    public var loadedLayers: [String] = []
    public var missingLayers: [String] = []
    public var unexpectedLayers: [String] = []
    public var mismatchedWeights: [String] = []
}

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case missingLayer(file: String, layer: String, kerasClass: String)
    case unexpectedLayer(file: String, layer: String)
    case shapeMismatch(file: String, path: String, expected: [Int], actual: [Int])
    case missingWeight(file: String, path: String)
    case notACheckpoint(file: String, detail: String)
    case unsupportedVersion(file: String, found: Int64, supported: Int64)
    /// A Keras full-model file whose model is not one CryLab can read as an encoder.
    case unsupportedKerasModel(file: String, detail: String)

    public var description: String {
        switch self {
        case let .missingLayer(file, layer, kerasClass):
            return "\(file): no weights for layer '\(layer)' (\(kerasClass)); the file was saved from another architecture. Load with --allow-missing (WeightMatching.byName) to keep that layer's current weights."
        case let .unexpectedLayer(file, layer):
            return "\(file): holds weights for layer '\(layer)', which this model does not have; load by name (WeightMatching.byName) to ignore it, or build the model the file was saved from."
        case let .shapeMismatch(file, path, expected, actual):
            return "\(file): weight \(path) has shape \(actual) but the model expects \(expected); check the model configuration (input size, widths, classes), or load by name to skip it."
        case let .missingWeight(file, path):
            return "\(file): weight \(path) is missing; the file is incomplete or from another architecture."
        case let .notACheckpoint(file, detail):
            return "\(file): cannot be read as a CryLab checkpoint (\(detail))."
        case let .unsupportedVersion(file, found, supported):
            return "\(file): checkpoint format version \(found), this CryLab reads up to \(supported); upgrade CryLab."
        case let .unsupportedKerasModel(file, detail):
            return "\(file): its model_config is not an encoder CryLab can read: \(detail). CryLab reads the encoder `crylab export-encoder` writes (per level Conv2D 'same' [+ BatchNormalization + ReLU], MaxPooling2D 2 and Dropout between levels), or a U-Net or classifier that starts with one, saved by Keras's model.save(\"x.h5\")."
        }
    }
}

extension Model {
    /// Assigns stored weights by layer and weight name (never by position: Keras lists a frozen
    /// layer's weights in another order). Every check runs before any weight changes.
    @discardableResult
    public func load(_ stored: [KerasWeights.StoredLayer], file: String, matching: WeightMatching = .strict) throws -> WeightLoadReport {
        var report = WeightLoadReport()
        let storedByName = Dictionary(stored.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var assignments: [(Parameter, Tensor, String)] = []
        for layer in layers where !layer.weights.isEmpty {
            guard let found = storedByName[layer.name], !found.weights.isEmpty else {
                if matching.allowMissing { report.missingLayers.append(layer.name); continue }
                throw CheckpointError.missingLayer(file: file, layer: layer.name, kerasClass: layer.kerasClass)
            }
            let values = Dictionary(found.weights.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first })
            var complete = true
            for weight in layer.weights {
                let path = "\(layer.name)/\(weight.name)"
                guard let value = values[weight.name] else {
                    if matching.allowMissing { complete = false; continue }
                    throw CheckpointError.missingWeight(file: file, path: path)
                }
                guard value.shape == weight.shape else {
                    if matching.allowShapeMismatch { report.mismatchedWeights.append(path); complete = false; continue }
                    throw CheckpointError.shapeMismatch(file: file, path: path, expected: weight.shape, actual: value.shape)
                }
                assignments.append((weight, value, layer.name))
            }
            if complete { report.loadedLayers.append(layer.name) }
        }
        let modelLayers = Set(layers.map(\.name))
        for layer in stored where !layer.weights.isEmpty && !modelLayers.contains(layer.name) {
            if matching.allowUnexpected { report.unexpectedLayers.append(layer.name); continue }
            throw CheckpointError.unexpectedLayer(file: file, layer: layer.name)
        }
        for (parameter, value, layerName) in assignments { try parameter.assign(value, layerName: layerName) }
        return report
    }
}
