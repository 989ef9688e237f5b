import CryLabDSP
import CryLabHDF5
import CryLabNN
import Foundation

/// Everything a run needs to continue or to be used elsewhere, besides the weights.
public struct CheckpointMetadata: Codable, Sendable, Equatable {
    /// How the audio was turned into the model's input, and the statistics it was normalised with.
    public var frontEnd: FrontEnd?
    public var normalization: NormalizationStats?
    public var classNames: [String]
    /// The recipe text (YAML) the run was started with.
    public var recipe: String
    public var epoch: Int
    public var step: Int
    /// State of the run's random generator, so a resumed run draws what the original would have.
    public var randomState: [UInt64]
    public var bestMetric: Double?
    /// Per-epoch figures (e.g. "train_loss", "val_loss") as JSON-friendly columns.
    public var history: [String: [Double]]
    /// Names of the layers that were frozen when the checkpoint was written.
    public var frozenLayers: [String]

    public init(frontEnd: FrontEnd? = nil, normalization: NormalizationStats? = nil, classNames: [String] = [],
                recipe: String = "", epoch: Int = 0, step: Int = 0, randomState: [UInt64] = [],
                bestMetric: Double? = nil, history: [String: [Double]] = [:], frozenLayers: [String] = []) {
        self.frontEnd = frontEnd
        self.normalization = normalization
        self.classNames = classNames
        self.recipe = recipe
        self.epoch = epoch
        self.step = step
        self.randomState = randomState
        self.bestMetric = bestMetric
        self.history = history
        self.frozenLayers = frozenLayers
    }
}

/// A CryLab checkpoint: a Keras-loadable `.h5` file plus a `crylab` group of our own.
///
/// Layout:
/// - root attributes `backend`, `keras_version` and, when the model can be described to Keras,
///   `model_config` (so `keras.models.load_model` rebuilds it)
/// - `model_weights/`: the weights in Keras's layout (see `KerasWeights`)
/// - `crylab/`: attributes `format` ("crylab-checkpoint"), `format_version`, `model` (the CryLab
///   model configuration as JSON: a checkpoint rebuilds its model with no recipe), `metadata`
///   (JSON of `CheckpointMetadata`); sub-group `optimizer` with attributes `kind`, `iterations`
///   and one dataset per slot.
public enum Checkpoint {
    public static let formatName = "crylab-checkpoint"
    public static let formatVersion: Int64 = 1

    /// Writes atomically: the file at `path` is the old complete checkpoint or the new one.
    public static func save(_ model: Model, metadata: CheckpointMetadata, optimizer: OptimizerState? = nil,
                            kerasModelConfig: String? = nil, to path: String) throws {
        try HDF5File.writeAtomically(to: path) { file in
            let root = try file.root
            try root.setAttribute("backend", .string("tensorflow"))
            try root.setAttribute("keras_version", .string(KerasWeights.kerasVersion))
            if let config = try kerasModelConfig ?? KerasModelConfig.json(for: model) {
                try root.setAttribute("model_config", .string(config))
            }
            try KerasWeights.write(model, into: try root.createGroup("model_weights"))

            let ours = try root.createGroup("crylab")
            try ours.setAttribute("format", .string(formatName))
            try ours.setAttribute("format_version", .int(formatVersion))
            if let configuration = model.configuration {
                try ours.setAttribute("model", .string(try configuration.json()))
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try ours.setAttribute("metadata", .string(String(decoding: try encoder.encode(metadata), as: UTF8.self)))
            if let optimizer {
                let group = try ours.createGroup("optimizer")
                try group.setAttribute("kind", .string(optimizer.kind))
                try group.setAttribute("iterations", .int(Int64(optimizer.iterations)))
                try group.setAttribute("slot_names", .strings(optimizer.slots.keys.sorted()))
                for (index, name) in optimizer.slots.keys.sorted().enumerated() {
                    let tensor = optimizer.slots[name]!
                    try group.write(tensor.values, shape: tensor.shape, as: "slot_\(index)")
                }
            }
        }
    }

    /// What a checkpoint file holds.
    public struct Contents {
        public var model: Model
        public var metadata: CheckpointMetadata
        public var optimizer: OptimizerState?
        /// True for a file Keras wrote (no `crylab` group): only weights, no training state.
        public var isForeign: Bool
    }

    /// Rebuilds the model stored in a CryLab checkpoint and loads its weights strictly.
    public static func load(_ path: String) throws -> Contents {
        let file = try HDF5File.open(path)
        let root = try file.root
        guard root.contains("crylab") else {
            throw CheckpointError.notACheckpoint(file: path, detail: "no 'crylab' group: a Keras file. embed, probe, finetune and label-curve take a Keras-saved encoder as --encoder directly, and `crylab export-encoder FILE --front-end-from STORE.h5 -o encoder.h5` makes it a CryLab encoder; in Swift, `Checkpoint.loadWeights` loads its weights into a model")
        }
        let ours = try root.openGroup("crylab")
        guard (try? ours.stringAttribute("format")) == formatName else {
            throw CheckpointError.notACheckpoint(file: path, detail: "crylab/@format is not '\(formatName)'")
        }
        guard case .int(let version) = try ours.attribute("format_version") else {
            throw CheckpointError.notACheckpoint(file: path, detail: "crylab/@format_version is not an integer")
        }
        guard version <= formatVersion else {
            throw CheckpointError.unsupportedVersion(file: path, found: version, supported: formatVersion)
        }
        let configuration: ModelConfiguration
        do { configuration = try ModelConfiguration(json: try ours.stringAttribute("model")) } catch let error as HDF5Error {
            throw error
        } catch {
            throw CheckpointError.notACheckpoint(file: path, detail: "crylab/@model is not a valid model configuration: \(error)")
        }
        let model = try configuration.build()
        try model.load(try KerasWeights.read(from: try weightsGroup(root)), file: path)
        let metadata: CheckpointMetadata
        do {
            metadata = try JSONDecoder().decode(CheckpointMetadata.self, from: Data(try ours.stringAttribute("metadata").utf8))
        } catch let error as HDF5Error { throw error } catch {
            throw CheckpointError.notACheckpoint(file: path, detail: "crylab/@metadata is not valid: \(error)")
        }
        if !metadata.frozenLayers.isEmpty { try model.freeze(layersNamed: metadata.frozenLayers) }
        var optimizer: OptimizerState?
        if ours.contains("optimizer") {
            let group = try ours.openGroup("optimizer")
            var slots: [String: Tensor] = [:]
            for (index, name) in try group.stringsAttribute("slot_names").enumerated() where !name.isEmpty {
                let (values, shape) = try group.read("slot_\(index)", as: Float.self)
                slots[name] = Tensor(shape: shape, values: values)
            }
            guard case .int(let iterations) = try group.attribute("iterations") else {
                throw CheckpointError.notACheckpoint(file: path, detail: "crylab/optimizer/@iterations is not an integer")
            }
            optimizer = OptimizerState(kind: try group.stringAttribute("kind"), iterations: Int(iterations), slots: slots)
        }
        return Contents(model: model, metadata: metadata, optimizer: optimizer, isForeign: false)
    }

    /// Loads the weights of any CryLab or Keras `.h5` (full-model save or weights only) into `model`.
    @discardableResult
    public static func loadWeights(into model: Model, from path: String, matching: WeightMatching = .strict) throws -> WeightLoadReport {
        let root = try HDF5File.open(path).root
        return try model.load(try KerasWeights.read(from: try weightsGroup(root)), file: path, matching: matching)
    }

    /// Removes temporary files that a killed writer left in `folder`; returns their paths.
    @discardableResult
    public static func removeStaleTemporaries(in folder: String) -> [String] {
        HDF5File.removeStaleTemporaries(in: folder)
    }

    /// `model_weights` in a full-model file, the root in a weights-only file.
    static func weightsGroup(_ root: HDF5Group) throws -> HDF5Group {
        if !root.hasAttribute("layer_names"), root.contains("model_weights") { return try root.openGroup("model_weights") }
        guard root.hasAttribute("layer_names") else {
            throw CheckpointError.notACheckpoint(file: root.file.path, detail: "no 'layer_names' attribute and no 'model_weights' group")
        }
        return root
    }
}
