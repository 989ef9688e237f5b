import ArgumentParser
import CryLabFeatures
import CryLabMPI
import CryLabNN
import CryLabOneDNN
import CryLabTraining
import Foundation

struct LabelCurveCommand: DistributedCommand {
    static let configuration = CommandConfiguration(
        commandName: "label-curve",
        abstract: "Learning curves over labels per class: does pretraining pay when labels are few?",
        discussion: """
        For every K in --k and every grouped fold (leave-one-group-out when the data has at most \
        10 groups), draws K labeled clips per class from the training groups --draws times and \
        trains, on the same draw: the pretrained encoder frozen with a logistic-regression head, \
        the pretrained encoder fine-tuned, the same classifier from scratch, the random-weights \
        encoder frozen with a logistic-regression head, and logistic regression on log-mel band \
        statistics. By default each fold pretrains its own encoder on the training groups' audio \
        only (the test group is never seen); --transductive pretrains once on every clip. Writes \
        curve.json, curve.csv and curve.html (the curves with their spread and paired tests) to \
        --output; --resume reuses finished folds and pretrained encoders.
        """)

    @Option(help: "Labeled feature store (.h5) with groups, e.g. from `crylab features --label-pattern ... --group-pattern ...`.")
    var data: String

    @Option(name: .customLong("pretrain-recipe"), help: "Pretraining recipe (YAML); its front end must match the data.")
    var pretrainRecipe: String

    @Option(name: .customLong("finetune-recipe"), help: "Fine-tuning recipe (YAML) for the fine-tuned and from-scratch rows (head, augmentation, optimiser; its epochs are the most a run trains).")
    var finetuneRecipe: String

    @Option(name: .customLong("unlabeled"), help: "More unlabeled audio for pretraining: a feature store with the same front end (clips of the test groups are left out, unless --transductive).")
    var unlabeled: String?

    @Option(help: "Labels per class, comma-separated; 'all' for every training clip.")
    var k: String = "1,5,10,25,all"

    @Option(help: "Label draws per fold and K (K = all has one).")
    var draws: Int = 3

    @Option(help: "Grouped folds (default: leave one group out when there are at most 10 groups, else 5).")
    var folds: Int?

    @Option(help: "Run only these folds (1-based, comma-separated), for a quick look; the paired tests then cover fewer pairs.")
    var fold: String?

    @Option(help: "Rows to run, comma-separated: \(CurveModel.allCases.map(\.rawValue).joined(separator: ", ")).")
    var models: String = CurveModel.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "How the frozen rows pool the encoder's output map for logistic regression: band-mean-std (each channel's mean and standard deviation over time, per row of mel bands), mean-std or mean (over time and frequency).")
    var pool: EmbeddingPool = .bandMeanStd

    @Option(help: "What the labels are: folder (the store's labels), age or gender (Donate-a-Cry file names).")
    var target: LabelSource = .folder

    @Option(help: "Comma-separated classes to keep (default: all).")
    var classes: String?

    @Flag(help: "Pretrain once on every clip, the test groups' included (labels ignored): transductive, and said so in the output.")
    var transductive = false

    @Option(help: "Use this encoder for every fold instead of pretraining (what it has seen is up to you): a CryLab encoder file, or a Keras one (model.save), which takes --data's front end.")
    var encoder: String?

    @Option(name: .customLong("pretraining-epochs"), help: "Pretraining epochs per fold (default: the recipe's).")
    var pretrainingEpochs: Int?

    @Option(help: "Optimisation steps per fine-tuning run (epochs follow from the draw's size, at most the recipe's).")
    var steps: Int = 150

    @Option(name: .customLong("min-epochs"), help: "Fewest epochs per fine-tuning run (at most the recipe's), so that large draws are not cut short by --steps.")
    var minEpochs: Int = 20

    @Option(help: "Seed of folds and draws.")
    var seed: UInt64 = 0

    @Option(name: .shortAndLong, help: "Output folder.")
    var output: String = "Checkpoints/label-curve"

    @Option(help: "Threads for the engine (default: every core; under mpirun, the cores a rank may use, shared with the other ranks on its host).")
    var threads: Int?

    @Flag(help: "Reuse the folds and pretrained encoders an interrupted run in --output finished.")
    var resume = false

    @Flag(help: "Print the result as JSON on standard output.")
    var json = false

    @Flag(help: "No progress bars.")
    var quiet = false

    func parsedK() throws -> [Int?] {
        try k.split(separator: ",").map { item -> Int? in
            let text = item.trimmingCharacters(in: .whitespaces)
            if text == "all" { return nil }
            guard let value = Int(text), value >= 1 else {
                throw ValidationError("--k takes positive whole numbers or 'all', comma-separated; got '\(text)' in '\(k)'")
            }
            return value
        }
    }

    func parsedModels() throws -> [CurveModel] {
        try models.split(separator: ",").map { item in
            let text = item.trimmingCharacters(in: .whitespaces)
            guard let model = CurveModel(rawValue: text) else {
                throw ValidationError("--models: unknown row '\(text)'; the rows are \(CurveModel.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return model
        }
    }

    func parsedFolds() throws -> [Int]? {
        try fold.map { text in
            try text.split(separator: ",").map { item in
                guard let value = Int(item.trimmingCharacters(in: .whitespaces)), value >= 1 else {
                    throw ValidationError("--fold takes fold numbers from 1, comma-separated; got '\(text)'")
                }
                return value
            }
        }
    }

    func validate() throws {
        _ = try parsedK()
        _ = try parsedFolds()
        _ = try parsedModels()
        if pool == .none { throw ValidationError("--pool none would give logistic regression every position of the map; use band-mean-std, mean-std or mean") }
        if draws < 1 { throw ValidationError("--draws must be at least 1") }
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if minEpochs < 1 { throw ValidationError("--min-epochs must be at least 1") }
        if let folds, folds < 2 { throw ValidationError("--folds must be at least 2") }
        if transductive && encoder != nil { throw ValidationError("--transductive pretrains an encoder; --encoder supplies one: give one of them") }
        if !isFeatureStore(data) { throw ValidationError("--data must be a feature store (.h5); make one with `crylab features`") }
    }

    func run(communicator: Communicator?) throws {
        // Every rank reads the recipes, the stores and the encoder; one that cannot stops the whole job here.
        let curve = try onEveryRank(communicator) { try makeCurve(communicator: communicator) }
        let result: LabelCurveResult
        if let communicator {
            guard let gathered = try curve.run(across: communicator) else { return }
            result = gathered
        } else {
            result = try curve.run()
        }
        if json {
            try printJSON(result)
        } else {
            print(result.text)
            print(String(format: "%.0f s; ", result.seconds) + "wrote " + result.files.joined(separator: ", "))
        }
    }

    /// The recipes, the stores and the options, ready to run.
    func makeCurve(communicator: Communicator?) throws -> LabelCurve {
        let (pretrain, pretrainText) = try PretrainRecipe.load(pretrainRecipe)
        let (finetune, finetuneText) = try FinetuneRecipe.load(finetuneRecipe)
        let store = try FeatureStore.read(from: data)
        var options = LabelCurveOptions(output: URL(fileURLWithPath: output))
        options.context = ComputeContext(threads: threads ?? communicator?.defaultThreads ?? ProcessInfo.processInfo.activeProcessorCount)
        options.labelsPerClass = try parsedK()
        options.draws = draws
        options.folds = folds
        options.onlyFolds = try parsedFolds()
        options.models = try parsedModels()
        options.pooling = pool
        options.target = target
        options.classes = classes?.split(separator: ",").map(String.init)
        options.pretraining = encoder != nil ? .suppliedEncoder : transductive ? .transductive : .strict
        options.encoderPath = encoder
        options.unlabeledPool = try unlabeled.map { try FeatureStore.read(from: $0) }
        options.pretrainingEpochs = pretrainingEpochs
        options.fineTuningSteps = steps
        options.minimumFineTuningEpochs = minEpochs
        options.seed = seed
        options.resume = resume
        options.quiet = quiet
        options.dataPath = data
        if store.frontEnd != pretrain.frontEnd {
            throw ValidationError("\(data) was made with another front end than \(pretrainRecipe)'s; make the store with the recipe's front end (its frontEnd key)")
        }
        if let communicator, communicator.size > 1 {
            // Every rank's lines reach mpirun's output: each names its rank.
            let prefix = "rank \(communicator.rank)/\(communicator.size): "
            return try LabelCurve(store: store, pretrainRecipe: pretrain, pretrainRecipeText: pretrainText,
                                  finetuneRecipe: finetune, finetuneRecipeText: finetuneText, options: options,
                                  log: { FileHandle.standardError.write(Data((prefix + $0 + "\n").utf8)) })
        }
        return try LabelCurve(store: store, pretrainRecipe: pretrain, pretrainRecipeText: pretrainText,
                              finetuneRecipe: finetune, finetuneRecipeText: finetuneText, options: options)
    }
}
