import ArgumentParser
import CryLabFeatures
import CryLabMPI
import CryLabNN
import CryLabTraining
import Foundation

struct PretrainCommand: DistributedCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Pretrain a U-Net autoencoder on unlabeled audio or a feature store.",
        discussion: """
        Writes to Checkpoints/<recipe name>/ (or --output): last.h5 and best.h5 after every epoch, \
        encoder.h5 at the end, history.csv/json and report.html. Ctrl-C saves interrupted.h5 and \
        exits; --resume continues from last.h5 to the weights an uninterrupted run would reach. \
        Under mpirun, the ranks train one model together, each on its share of every batch, from \
        one feature store; rank 0 writes the run folder (docs/distributed.md).
        """)

    @Option(help: "Recipe file (YAML), e.g. Recipes/pretrain.yaml.")
    var recipe: String

    @Option(parsing: .upToNextOption, help: "Audio files or folders (labels ignored), or one feature store (.h5).")
    var data: [String] = []

    @Option(name: .shortAndLong, help: "Run folder (default: Checkpoints/<recipe name>).")
    var output: String?

    @Option(help: "Override the recipe's number of epochs.")
    var epochs: Int?

    @Option(name: .customLong("max-steps"), help: "Stop after N optimisation steps and report samples/s (for timing; the first step, which creates the kernels, is timed apart).")
    var maxSteps: Int?

    @Option(help: "Override the recipe's seed.")
    var seed: UInt64?

    @Option(help: "Threads for the engine (default: every core; under mpirun, the cores a rank may use, shared with the other ranks on its host).")
    var threads: Int?

    @OptionGroup var convolution: ConvolutionOptions

    @Option(name: .customLong("bucket-mb"), help: "Under mpirun: gradients are summed over the ranks in buckets of this many MB.")
    var bucketMB: Double = 4

    @Flag(inversion: .prefixedNo, help: "Under mpirun: start each bucket's allreduce as soon as the backward pass has finished its layers (--no-overlap: all after the backward pass).")
    var overlap = true

    @Option(name: .customLong("progress-us"), help: "Under mpirun, with overlap: a thread runs MPI's progress engine every this many microseconds while buckets are pending (0: none; they then move only when the backward pass calls into MPI, once per layer).")
    var progressMicroseconds = 1000

    @Flag(help: "Continue the run in the output folder from its last.h5.")
    var resume = false

    @Option(help: "Labeled audio folder or feature store for a linear probe at the end.")
    var probe: String?

    @Option(name: .customLong("probe-classes"), help: "Comma-separated classes for the probe (default: all).")
    var probeClasses: String?

    @Option(name: .customLong("probe-target"), help: "What the probe predicts: folder (the class folders), age or gender (from Donate-a-Cry file names).")
    var probeTarget: LabelSource = .folder

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    @Flag(help: "No progress bars.")
    var quiet = false

    func validate() throws {
        if data.isEmpty { throw ValidationError("--data is required: audio folders or a feature store") }
        if let maxSteps, maxSteps < 1 { throw ValidationError("--max-steps must be at least 1") }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if !(bucketMB > 0) { throw ValidationError("--bucket-mb must be more than 0, got \(bucketMB)") }
        if progressMicroseconds < 0 { throw ValidationError("--progress-us must be 0 (no progress thread) or more, got \(progressMicroseconds)") }
    }

    func run(communicator: Communicator?) throws {
        let threads = threads ?? communicator?.defaultThreads ?? ProcessInfo.processInfo.activeProcessorCount
        let ranks = communicator.flatMap { $0.size > 1 ? $0 : nil }
        // Every rank opens the recipe and the store; one that cannot stops the whole job here.
        let pretrainer = try onEveryRank(ranks) { try makePretrainer(threads: threads, communicator: ranks) }
        let summary = try pretrainer.run()
        if let ranks, ranks.rank != 0 { return }
        if json {
            try printJSON(summary)
        } else {
            var lines = [String(format: "%d epochs, %d steps, %.1f samples/s", summary.epochs, summary.steps, summary.samplesPerSecond)
                + (summary.firstStepSeconds.map { String(format: " after a first step of %.1f s", $0) } ?? "")
                + (summary.fastModeSteps.map { $0 == "fast" ? "; fast mode ran its per-pass choices" : "; fast mode ran whole steps in \($0)" } ?? "")]
            if let a = summary.allreduce {
                lines.append(String(format: "gradients: %.1f MB per step summed over %d ranks in %d bucket%@%@; %.1f ms per step not hidden",
                                    Double(a.gradientBytes) / 1_048_576, a.ranks, a.buckets, a.buckets == 1 ? "" : "s",
                                    a.overlapsBackward ? " during the backward pass" : " after the backward pass",
                                    a.exposedSecondsPerStep * 1000))
            }
            if let v = summary.validationLoss { lines.append(String(format: "validation loss %.5f (best %.5f)", v, summary.bestValidationLoss ?? v)) }
            if let v = summary.validationLossWithoutSkips { lines.append(String(format: "validation loss with skip connections cut: %.5f", v)) }
            if let p = summary.probe {
                lines.append(p.text)
            }
            for (name, path) in [("checkpoint", summary.checkpoint), ("encoder", summary.encoder), ("report", summary.report)] {
                if let path { lines.append("\(name): \(path)") }
            }
            print(lines.joined(separator: "\n"))
        }
    }

    /// The recipe with this command's overrides and the data, ready to run. On several ranks
    /// every rank opens the store and reads only the clips it needs.
    func makePretrainer(threads: Int, communicator: Communicator?) throws -> Pretrainer {
        var (recipe, text) = try PretrainRecipe.load(self.recipe)
        if let epochs { recipe.training.epochs = epochs }
        if let seed { recipe.training.seed = seed }
        let isRoot = (communicator?.rank ?? 0) == 0
        let context = convolution.context(threads: threads, quiet: quiet || !isRoot, choosesWholeSteps: communicator == nil)
        var options = PretrainOptions(output: URL(fileURLWithPath: output ?? "Checkpoints/\(recipe.name)"))
        options.maxSteps = maxSteps
        options.resume = resume
        options.quiet = quiet || !isRoot
        options.context = context
        options.allreduceBucketBytes = Int((bucketMB * 1_048_576).rounded())
        options.overlapsAllreduce = overlap
        options.progressInterval = progressMicroseconds > 0 ? .microseconds(progressMicroseconds) : nil
        if isRoot, let probe {
            options.probe = try loadData([probe], frontEnd: recipe.frontEnd, unlabeled: false, threads: threads, quiet: quiet)
            options.probeClasses = probeClasses?.split(separator: ",").map(String.init)
            options.probeTarget = probeTarget
        }
        guard let communicator else {
            let store = try loadData(data, frontEnd: recipe.frontEnd, unlabeled: true, threads: threads, quiet: quiet)
            return try Pretrainer(recipe: recipe, recipeText: text, store: store, options: options)
        }
        guard data.count == 1, isFeatureStore(data[0]) else {
            throw ValidationError("under mpirun, --data must be one feature store (.h5), the same path on every host: make it once with `crylab features`")
        }
        // Every rank reads its clips of each epoch; none holds the whole store.
        let reader = try FeatureStoreReader(path: data[0])
        // Rank 0's lines only: the others train the same model.
        return try Pretrainer(recipe: recipe, recipeText: text, store: reader.metadata, options: options,
                              ranks: DataParallelRanks(communicator: communicator, reader: reader),
                              log: isRoot ? { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } : { _ in })
    }
}
