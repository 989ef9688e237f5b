import CryLabCheckpoint
import CryLabDSP
import CryLabNN
import Foundation

/// An encoder read from a file: its model, and (for CryLab files) the front end and
/// normalisation it was trained with.
public struct EncoderFile {
    public var model: Model
    public var configuration: UNetConfiguration
    public var levels: Int
    public var frontEnd: FrontEnd?
    public var normalization: NormalizationStats?

    /// Reads a CryLab encoder, U-Net or classifier checkpoint (the encoder part), or a Keras `.h5`
    /// (full-model save or weights only) holding the story's encoder or U-Net: its layers are
    /// matched by name into `kerasArchitecture`.
    public init(path: String, kerasArchitecture: @autoclosure () throws -> UNetConfiguration, kerasLevels: Int) throws {
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
        } else {
            let architecture = try kerasArchitecture()
            model = try Model.encoder(architecture, levels: kerasLevels)
            try Checkpoint.loadWeights(into: model, from: path,
                                       matching: WeightMatching(allowMissing: false, allowUnexpected: true, allowShapeMismatch: false))
            configuration = architecture
            levels = kerasLevels
            frontEnd = nil
            normalization = nil
        }
    }
}
