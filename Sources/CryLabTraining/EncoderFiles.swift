import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabNN
import Foundation

/// An encoder read from a file: its model, and (for CryLab files) the front end and
/// normalisation it was trained with.
public struct EncoderFile {
    public var path: String
    public var model: Model
    public var configuration: UNetConfiguration
    public var levels: Int
    public var frontEnd: FrontEnd?
    public var normalization: NormalizationStats?
    /// A CryLab file's whole metadata (recipe, history, ...); nil for a Keras file.
    public var metadata: CheckpointMetadata?
    public var origin: Origin

    /// Where the architecture and the metadata came from.
    public enum Origin: Sendable, Equatable {
        /// A CryLab checkpoint: architecture, front end and normalisation from its `crylab` group.
        case cryLab
        /// A Keras full-model file: the architecture from its `model_config`, no front end.
        case kerasModel
        /// A Keras weights-only file: the architecture the caller gave, no front end.
        case kerasWeights
    }

    /// A Keras file: no front end or normalisation of its own (see `adoptFrontEnd(of:storePath:)`).
    public var isKeras: Bool { origin != .cryLab }

    /// Reads a CryLab encoder, U-Net or classifier checkpoint (the encoder part); a Keras full-model
    /// `.h5` (`model.save`) of an encoder, U-Net or classifier, whose architecture comes from its
    /// `model_config` (see `KerasEncoder`); or a Keras weights-only `.h5`, whose layers are
    /// matched by name into `kerasArchitecture` with `kerasLevels` levels.
    public init(path: String, kerasArchitecture: @autoclosure () throws -> UNetConfiguration, kerasLevels: Int) throws {
        self.path = path
        let description = try Checkpoint.describe(path)
        if description.format.hasPrefix(Checkpoint.formatName) {
            let contents = try Checkpoint.load(path)
            guard let configuration = contents.model.configuration else {
                throw CheckpointError.notACheckpoint(file: path, detail: "no model configuration")
            }
            let levels: Int
            switch configuration.kind {
            case .encoder: levels = configuration.encoderLevels ?? configuration.uNet!.depth
            case .uNet: levels = configuration.uNet!.depth
            case .classifier: levels = configuration.classifier!.encoderLevels
            }
            let uNet = configuration.uNet ?? configuration.classifier!.encoder
            model = try Model.encoder(uNet, levels: levels)
            try model.copyWeights(from: contents.model, layerNames: model.layers.map(\.name))
            self.configuration = uNet
            self.levels = levels
            frontEnd = contents.metadata.frontEnd
            normalization = contents.metadata.normalization
            metadata = contents.metadata
            origin = .cryLab
        } else if let keras = try KerasEncoder.load(path) {
            model = keras.model
            configuration = keras.configuration
            levels = keras.levels
            origin = .kerasModel
        } else {
            let architecture = try kerasArchitecture()
            model = try Model.encoder(architecture, levels: kerasLevels)
            try Checkpoint.loadWeights(into: model, from: path,
                                       matching: WeightMatching(allowMissing: false, allowUnexpected: true, allowShapeMismatch: false))
            configuration = architecture
            levels = kerasLevels
            origin = .kerasWeights
        }
    }

    /// Spectrogram rows (mel bands) and width (frames) the encoder takes.
    public var inputMels: Int { configuration.inputShape[0] }
    public var inputFrames: Int { configuration.inputShape[1] }

    /// Throws unless the clips of `store` (read from `storePath`) fit the encoder: as many mel
    /// bands, and at least as many frames (wider clips are cropped to their middle).
    public func checkInput(of store: FeatureStore, storePath: String) throws {
        guard store.mels == inputMels, store.frames >= inputFrames else {
            throw RecipeError(file: path, message: """
                takes spectrograms of \(inputMels) mels x \(inputFrames) frames, but \(storePath) holds \(store.mels) mels x \
                \(store.frames) frames; make a feature store with \(inputMels) mels and at least \(inputFrames) frames, with the \
                front end the encoder was trained with (`crylab features --n-mels \(inputMels) --frames \(inputFrames) ...`)
                """)
        }
    }

    /// For a file without a front end (a Keras file): takes the front end of the feature store at
    /// `storePath` and its normalisation statistics (the mean and standard deviation over its
    /// clips), after checking that its clips fit the encoder.
    public mutating func adoptFrontEnd(of store: FeatureStore, storePath: String) throws {
        precondition(frontEnd == nil, "\(path) has a front end of its own")
        try checkInput(of: store, storePath: storePath)
        frontEnd = store.frontEnd
        normalization = store.normalization
    }
}
