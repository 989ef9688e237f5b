import ArgumentParser
import CryLabCheckpoint
import CryLabNN
import CryLabTraining
import Foundation

struct ExportEncoderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-encoder",
        abstract: "Write the encoder of a U-Net or classifier checkpoint alone, with its configuration and front end.")

    @Argument(help: "A CryLab checkpoint (last.h5, best.h5, classifier.h5).")
    var checkpoint: String

    @Option(name: .shortAndLong, help: "The encoder file to write (.h5).")
    var output: String

    func validate() throws {
        guard output.hasSuffix(".h5") else { throw ValidationError("--output should end in .h5, got '\(output)'") }
    }

    func run() throws {
        let contents = try Checkpoint.load(checkpoint)
        let encoder = try EncoderFile(path: checkpoint, kerasArchitecture: .story, kerasLevels: 4)
        var metadata = contents.metadata
        metadata.frozenLayers = []
        metadata.classNames = []
        try Checkpoint.save(encoder.model, metadata: metadata, to: output)
        print("wrote \(output): \(encoder.levels) encoder levels, \(encoder.model.layers.count) layers, \(encoder.model.parameterCount) parameters")
    }
}
