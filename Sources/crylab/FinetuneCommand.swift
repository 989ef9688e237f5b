import ArgumentParser
import CryLabCheckpoint
import CryLabFeatures
import CryLabMPI
import CryLabNN
import CryLabTraining
import Foundation

struct FinetuneCommand: DistributedCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a classifier head on a pretrained (or random) encoder and evaluate it honestly.",
        discussion: """
        Evaluates with k-fold cross-validation grouped by recording source (the feature store's \
        'group'), reports balanced accuracy, macro-F1, per-class figures and the confusion matrix \
        next to a logistic-regression baseline on the same folds, and saves classifier.h5 trained \
        on every clip. Output: Checkpoints/<recipe name>/ (or --output): report.json, report.html, \
        classifier.h5. Under mpirun (`mpirun -np N crylab finetune ...`) the folds are dealt out \
        to the ranks and rank 0 writes the run folder (docs/distributed.md).
        """)

    @Option(help: "Recipe file (YAML), e.g. Recipes/finetune.yaml.")
    var recipe: String

    @Option(help: "Labeled class folders (INPUT/<class>/*.wav) or a labeled feature store (.h5).")
    var data: String

    @Option(help: "Encoder weights: encoder.h5 from `crylab pretrain`/`export-encoder`, or a Keras .h5 (model.save; its data must be a feature store, or the recipe must name a frontEnd).")
    var encoder: String?

    @Flag(name: .customLong("from-scratch"), help: "Start the encoder from random weights.")
    var fromScratch = false

    @Option(name: .shortAndLong, help: "Run folder (default: Checkpoints/<recipe name>).")
    var output: String?

    @Option(help: "Override the number of cross-validation folds.")
    var folds: Int?

    @Option(name: .customLong("labels-per-class"), help: "Train on K labeled clips per class, drawn (stratified) from each training fold only.")
    var labelsPerClass: Int?

    @Option(help: "With --labels-per-class: how many label draws to evaluate, each a cross-validation on the same folds.")
    var draws: Int = 1

    @Option(help: "A labeled feature store to test on instead of cross-validating (trained on --data).")
    var test: String?

    @Option(help: "Override the recipe's number of epochs.")
    var epochs: Int?

    @Option(help: "Override the recipe's seed.")
    var seed: UInt64?

    @Option(help: "Threads for the engine (default: every core; under mpirun, the cores a rank may use, shared with the other ranks on its host).")
    var threads: Int?

    @OptionGroup var convolution: ConvolutionOptions

    @Flag(help: "Continue an interrupted run in the same --output folder: folds it finished are reused, the rest trained.")
    var resume = false

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    @Flag(help: "Less progress output.")
    var quiet = false

    func validate() throws {
        if encoder == nil && !fromScratch { throw ValidationError("give --encoder FILE.h5, or --from-scratch to start from random weights") }
        if encoder != nil && fromScratch { throw ValidationError("--encoder and --from-scratch exclude each other") }
        if let folds, folds < 2 { throw ValidationError("--folds must be at least 2") }
        if let labelsPerClass, labelsPerClass < 1 { throw ValidationError("--labels-per-class must be at least 1") }
        if draws < 1 { throw ValidationError("--draws must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if draws > 1 && labelsPerClass == nil { throw ValidationError("--draws needs --labels-per-class: without it every draw would hold the same clips") }
        if test != nil && folds != nil { throw ValidationError("--test evaluates on another store; --folds cross-validates: give one of them") }
        if let test, !isFeatureStore(test) { throw ValidationError("--test must be a feature store (.h5), got '\(test)'") }
    }

    func run(communicator: Communicator?) throws {
        let threads = threads ?? communicator?.defaultThreads ?? ProcessInfo.processInfo.activeProcessorCount
        // Every rank reads the recipe, the data and the encoder; one that cannot stops the whole job here.
        let finetuner = try onEveryRank(communicator) { try makeFinetuner(threads: threads, communicator: communicator) }
        let summary: FinetuneSummary
        if let communicator {
            guard let gathered = try finetuner.run(across: communicator) else { return }
            summary = gathered
        } else {
            summary = try finetuner.run()
        }
        if json {
            var compact = summary
            compact.crossValidation.probabilities = []
            compact.baseline.probabilities = []
            try printJSON(compact)
        } else {
            print(summary.crossValidation.summary)
            print(String(format: "baseline (logistic regression on log-mel statistics, same folds): balanced accuracy %.3f (p = %.3f), macro-F1 %.3f",
                         summary.baseline.pooled.balancedAccuracy, summary.baseline.pooled.chance.balancedAccuracyPValue,
                         summary.baseline.pooled.macroF1))
            if let k = summary.labelsPerClass, let draws = summary.labelDraws {
                let values = draws.map(\.balancedAccuracy), baseline = draws.map(\.baselineBalancedAccuracy)
                print(String(format: "%d labels per class, %d draws: balanced accuracy %.3f (%.3f-%.3f), baseline on the same draws %.3f (%.3f-%.3f)",
                             k, draws.count, values.reduce(0, +) / Double(values.count), values.min()!, values.max()!,
                             baseline.reduce(0, +) / Double(baseline.count), baseline.min()!, baseline.max()!))
            }
            for warning in summary.warnings { print("warning: \(warning)") }
            if let path = summary.classifier { print("classifier: \(path)") }
            if let path = summary.report { print("report: \(path)") }
        }
    }

    /// The recipe with this command's overrides, the data and the encoder, ready to run.
    func makeFinetuner(threads: Int, communicator: Communicator?) throws -> Finetuner {
        var (recipe, text) = try FinetuneRecipe.load(self.recipe)
        if let folds { recipe.evaluation.folds = folds; recipe.evaluation.split = .groupedKFold }
        if let epochs { recipe.training.epochs = epochs }
        if let seed { recipe.training.seed = seed }
        let context = convolution.context(threads: threads, quiet: quiet || (communicator?.rank ?? 0) != 0)
        var frontEnd = recipe.frontEnd
        if let encoder, frontEnd == nil, !isFeatureStore(data) {
            // Audio is analysed with the encoder's own front end; a Keras file has none.
            let isCryLab = try Checkpoint.describe(encoder).format.hasPrefix(Checkpoint.formatName)
            guard isCryLab, let own = try Checkpoint.load(encoder).metadata.frontEnd else {
                let inputShape = try isCryLab ? nil : KerasEncoder.load(encoder)?.configuration.inputShape
                throw noFrontEndError(encoder: encoder, isKeras: !isCryLab, inputShape: inputShape, fix: """
                    pass a feature store made with the front end the encoder was trained with as --data, or give the recipe \
                    that front end (its frontEnd key, e.g. frontEnd: {preset: seed})
                    """)
            }
            frontEnd = own
        }
        let store = try loadData([data], frontEnd: frontEnd ?? .recommended, unlabeled: false, threads: threads, quiet: quiet)
        var options = FinetuneOptions(output: URL(fileURLWithPath: output ?? "Checkpoints/\(recipe.name)"))
        options.encoderPath = encoder
        options.dataPath = data
        options.quiet = quiet
        options.context = context
        options.resume = resume
        options.labelsPerClass = labelsPerClass
        options.draws = draws
        if let test {
            options.test = try FeatureStore.read(from: test)
            options.testPath = test
        }
        guard let communicator, communicator.size > 1 else {
            return try Finetuner(recipe: recipe, recipeText: text, store: store, options: options)
        }
        // Every rank's lines reach mpirun's output: each names its rank.
        let prefix = "rank \(communicator.rank)/\(communicator.size): "
        return try Finetuner(recipe: recipe, recipeText: text, store: store, options: options,
                             log: { FileHandle.standardError.write(Data((prefix + $0 + "\n").utf8)) })
    }
}
