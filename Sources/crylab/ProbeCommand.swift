import ArgumentParser
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Linear probe of encoders: what their pooled features tell about labeled clips, against random weights and each other.",
        discussion: """
        Logistic regression on the mean and standard deviation of every encoder channel, \
        cross-validated with folds grouped by recording source, for each encoder and for the same \
        architecture with its initial random weights; balanced accuracy and macro-F1 come with \
        p-values against shuffled answers, and the pretrained answers are compared with the random \
        weights' on the same clips. With several --encoder, every encoder sees the same clips in \
        the same folds (each through its own front end) and each is compared with the first, \
        family by family. The same probe runs at the end of `crylab pretrain --probe`. --target \
        age or gender reads the baby's age or gender from Donate-a-Cry file names instead of the \
        class folders. A Keras file (model.save) has no front end: give it a feature store, whose \
        front end and normalisation statistics are used.
        """)

    @Option(name: .customLong("encoder"), help: "Encoder file from `crylab pretrain` or `crylab export-encoder`, or one Keras saved (then give feature stores); repeat to compare encoders.")
    var encoders: [String]

    @Argument(help: "Labeled audio folders, or one feature store (.h5) per encoder made with its front end.")
    var data: [String]

    @Option(help: "What to predict: folder (the class folders), age or gender (from Donate-a-Cry file names).")
    var target: LabelSource = .folder

    @Option(help: "Comma-separated classes to keep, in this order (default: every class present).")
    var classes: String?

    @Option(help: "Cross-validation folds.")
    var folds = 5

    @Option(help: "How the encoder's output map is pooled for logistic regression: mean-std or mean (over time and frequency), or band-mean-std (over time, per row of mel bands).")
    var pool: EmbeddingPool = .meanStd

    @Option(help: "Seed of the fold assignment.")
    var seed: UInt64 = 0

    @Option(help: "Threads (default: every core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Print the results as JSON on standard output.")
    var json = false

    func validate() throws {
        if encoders.isEmpty { throw ValidationError("--encoder is required") }
        if folds < 2 { throw ValidationError("--folds must be at least 2") }
        if pool == .none { throw ValidationError("--pool none would give logistic regression every position of the map; use mean-std, mean or band-mean-std") }
        if threads < 1 { throw ValidationError("--threads must be at least 1") }
        let stores = data.filter(isFeatureStore)
        if !stores.isEmpty && (stores.count != data.count || stores.count != encoders.count) {
            throw ValidationError("give audio folders, or exactly one feature store per encoder (\(encoders.count)), not \(data.joined(separator: " "))")
        }
    }

    struct Output: Encodable {
        var encoders: [String]
        var probes: [ProbeResult]
        /// Pretrained answers of each later encoder against the first's: entry i compares encoder i + 1.
        var againstFirst: [PairedComparison]
    }

    func run() throws {
        let classList = classes?.split(separator: ",").map(String.init)
        // Every encoder's data first, so that clips that do not match fail before any probe runs.
        var prepared: [(file: EncoderFile, store: FeatureStore, set: LabeledSet)] = []
        for (index, encoder) in encoders.enumerated() {
            let inputs = data.allSatisfy(isFeatureStore) ? [data[index]] : data
            let (file, store) = try loadEncoderAndData(encoder: encoder, data: inputs, threads: threads, quiet: json)
            guard store.frontEnd == file.frontEnd, store.frames >= file.configuration.inputShape[1] else {
                throw ValidationError("\(inputs.joined(separator: " ")) was made with another front end than \(encoder)'s; pass the audio folders instead, so they are analysed with the encoder's")
            }
            let set = try LabeledSet(store: store, source: target, classes: classList)
            if let first = prepared.first,
               first.set.indices.map({ first.store.paths[$0] }) != set.indices.map({ store.paths[$0] }) {
                throw ValidationError("\(encoder) sees other clips than \(encoders[0]) (\(set.count) against \(first.set.count), or in another order); compare encoders on feature stores made from the same files")
            }
            prepared.append((file, store, set))
        }
        var probes: [ProbeResult] = []
        for (encoder, (file, store, set)) in zip(encoders, prepared) {
            let result = linearProbe(encoder: file.model, randomWeights: try Model.encoder(file.configuration, levels: file.levels),
                                     store: store, set: set, source: target, frames: file.configuration.inputShape[1],
                                     normalization: (file.normalization?.mean ?? 0, file.normalization?.std ?? 1),
                                     folds: folds, seed: seed, pool: pool)
            probes.append(result)
            if !json {
                print("\(encoder): \(result.text)")
                print("pretrained:\n" + result.pretrained.text)
                print("random weights:\n" + result.randomWeights.text)
            }
        }
        let first = prepared[0]
        let comparisons = probes.dropFirst().map { probe in
            PairedComparison(truth: first.set.labels, first: probe.pretrainedAnswers, second: probes[0].pretrainedAnswers,
                             classes: first.set.classNames.count, groups: first.set.groups)
        }
        if json {
            try printJSON(Output(encoders: encoders, probes: probes, againstFirst: comparisons))
        } else {
            for (encoder, comparison) in zip(encoders.dropFirst(), comparisons) {
                print(String(format: "pretrained %@ minus pretrained %@: %+.3f balanced accuracy (one-sided p = %.3f, answers swapped between the two family by family)",
                             encoder, encoders[0], comparison.balancedAccuracyDifference, comparison.pValue))
            }
        }
    }
}

extension LabelSource: ExpressibleByArgument {}
