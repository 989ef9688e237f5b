import ArgumentParser
import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Encoder outputs for audio or a feature store, for use in other tools.",
        discussion: """
        Uses the front end and normalisation stored in the encoder file. A Keras file (model.save) \
        has neither: give it a feature store, whose front end and normalisation statistics are used. \
        The output HDF5 holds 'embedding' (float32: [clips, features] pooled, or [clips, height, width, channels] with \
        --pool none), 'path', 'group', 'label' and the root attribute 'class_names'.
        """)

    @Option(help: "Encoder file from `crylab pretrain` or `crylab export-encoder`, or one Keras saved (model.save(\"x.h5\")).")
    var encoder: String

    @Argument(help: "Audio files or folders, or one feature store (.h5).")
    var inputs: [String]

    @Option(name: .shortAndLong, help: "Output file (.h5).")
    var output: String

    @Option(help: "Pooling: mean-std or mean (over time and frequency), band-mean-std (over time, per row of mel bands), or none.")
    var pool: EmbeddingPool = .meanStd

    @Option(help: "Threads (default: every core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func run() throws {
        let (file, store) = try loadEncoderAndData(encoder: encoder, data: inputs, threads: threads, quiet: false)
        let embeddings = try Embeddings(encoder: file, store: store, pool: pool)
        try embeddings.write(to: output)
        print("wrote \(output): \(store.count) clips x \(embeddings.shape.dropFirst().map(String.init).joined(separator: " x "))")
    }
}

extension EmbeddingPool: ExpressibleByArgument {}
