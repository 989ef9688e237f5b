import ArgumentParser
import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation

struct ExportEncoderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-encoder",
        abstract: "Write the encoder of a U-Net or classifier checkpoint alone, with its configuration and front end.",
        discussion: """
            A Keras file (`model.save` of an encoder, U-Net or classifier, or weights only in the story's layout) \
            has no front end: give --front-end-from STORE.h5, a feature store made the way the encoder's \
            inputs were, and the encoder is written as a CryLab file carrying that store's front end and \
            normalisation, so it can then analyse audio itself.
            """)

    @Argument(help: "A CryLab checkpoint (last.h5, best.h5, classifier.h5) or a Keras-saved encoder, U-Net or classifier.")
    var checkpoint: String

    @Option(name: .shortAndLong, help: "The encoder file to write (.h5).")
    var output: String

    @Option(name: .customLong("front-end-from"),
            help: "A feature store whose front end and normalisation a Keras file's encoder takes (required for Keras files).")
    var frontEndStore: String?

    func validate() throws {
        guard output.hasSuffix(".h5") else { throw ValidationError("--output should end in .h5, got '\(output)'") }
        if let frontEndStore, !isFeatureStore(frontEndStore) {
            throw ValidationError("--front-end-from takes a feature store (.h5), got '\(frontEndStore)'")
        }
    }

    func run() throws {
        var encoder = try EncoderFile(path: checkpoint, kerasArchitecture: .story, kerasLevels: 4)
        var metadata = encoder.metadata ?? CheckpointMetadata()
        metadata.frozenLayers = []
        metadata.classNames = []
        if encoder.frontEnd == nil {
            // A CryLab checkpoint made through the library may have no front end and is copied as it
            // is; a Keras file never has one, and an encoder without one cannot analyse audio.
            guard let frontEndStore else {
                if !encoder.isKeras { return try write(encoder, metadata: metadata, source: "") }
                throw ValidationError("""
                    \(checkpoint) is a Keras file and has no CryLab front end; give --front-end-from STORE.h5, a feature \
                    store made with the front end the encoder was trained with (e.g. `crylab features AUDIO --preset seed \
                    --n-mels \(encoder.inputMels) --frames \(encoder.inputFrames) -o store.h5`)
                    """)
            }
            try encoder.adoptFrontEnd(of: try FeatureStore.read(from: frontEndStore), storePath: frontEndStore)
            metadata.frontEnd = encoder.frontEnd
            metadata.normalization = encoder.normalization
        } else if let frontEndStore {
            throw ValidationError("""
                \(checkpoint) has a front end of its own; --front-end-from \(frontEndStore) is for files without one \
                (Keras files): leave it out
                """)
        }
        try write(encoder, metadata: metadata, source: frontEndStore.map { "; front end and normalisation from \($0)" } ?? "")
    }

    private func write(_ encoder: EncoderFile, metadata: CheckpointMetadata, source: String) throws {
        try Checkpoint.save(encoder.model, metadata: metadata, to: output)
        print("wrote \(output): \(encoder.levels) encoder levels, \(encoder.model.layers.count) layers, \(encoder.model.parameterCount) parameters\(source)")
    }
}
