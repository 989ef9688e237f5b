import ArgumentParser
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Linear probe of an encoder: what its pooled features tell about labeled clips, against random weights.",
        discussion: """
        Logistic regression on the mean and standard deviation of every encoder channel, \
        cross-validated with folds grouped by recording source, for the encoder and for the same \
        architecture with its initial random weights; balanced accuracy and macro-F1 come with \
        p-values against shuffled answers. The same probe runs at the end of `crylab pretrain \
        --probe`; this command compares encoders trained elsewhere or with other front ends. \
        --target age or gender reads the baby's age or gender from Donate-a-Cry file names \
        instead of the class folders.
        """)

    @Option(help: "Encoder file from `crylab pretrain` or `crylab export-encoder`.")
    var encoder: String

    @Argument(help: "Labeled audio folders, or one feature store (.h5) made with the encoder's front end.")
    var data: [String]

    @Option(help: "What to predict: folder (the class folders), age or gender (from Donate-a-Cry file names).")
    var target: LabelSource = .folder

    @Option(help: "Comma-separated classes to keep, in this order (default: every class present).")
    var classes: String?

    @Option(help: "Cross-validation folds.")
    var folds = 5

    @Option(help: "Seed of the fold assignment.")
    var seed: UInt64 = 0

    @Option(help: "Threads (default: every core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Print the result as JSON on standard output.")
    var json = false

    func validate() throws {
        if folds < 2 { throw ValidationError("--folds must be at least 2") }
        if threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        let (file, store) = try loadEncoderAndData(encoder: encoder, data: data, command: "probe", threads: threads, quiet: json)
        let frames = file.configuration.inputShape[1]
        guard store.frontEnd == file.frontEnd, store.frames >= frames else {
            throw ValidationError("\(data.joined(separator: " ")) was made with another front end than \(encoder)'s; pass the audio folder instead, so it is computed with the encoder's")
        }
        let set = try LabeledSet(store: store, source: target, classes: classes?.split(separator: ",").map(String.init))
        let result = linearProbe(encoder: file.model, randomWeights: try Model.encoder(file.configuration, levels: file.levels),
                                 store: store, set: set, source: target, frames: frames,
                                 normalization: (file.normalization?.mean ?? 0, file.normalization?.std ?? 1),
                                 folds: folds, seed: seed)
        if json {
            try printJSON(result)
        } else {
            print(result.text)
            print("pretrained:\n" + result.pretrained.text)
            print("random weights:\n" + result.randomWeights.text)
        }
    }
}

extension LabelSource: ExpressibleByArgument {}
