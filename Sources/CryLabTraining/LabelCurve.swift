import CryLabCore
import CryLabCheckpoint
import CryLabFeatures
import CryLabMPI
import CryLabNN
import CryLabOneDNN
import Foundation

/// The models a label-efficiency curve compares, all on the same folds and the same label draws.
public enum CurveModel: String, Codable, Sendable, CaseIterable {
    /// The pretrained encoder, frozen; logistic regression on its pooled features (by default
    /// each channel's mean and standard deviation over time, per row of mel bands).
    case pretrainedFrozen = "pretrained-frozen"
    /// The pretrained encoder with the fine-tuning recipe's head, every weight trained.
    case pretrainedFinetuned = "pretrained-finetuned"
    /// The same classifier from random weights, trained the same way.
    case fromScratch = "from-scratch"
    /// The encoder's architecture with the random weights pretraining started from, frozen;
    /// logistic regression on its pooled features.
    case randomFrozen = "random-frozen"
    /// Logistic regression on per-clip mean and standard deviation of every log-mel band.
    case logMel = "log-mel"

    public var summary: String {
        switch self {
        case .pretrainedFrozen: "pretrained encoder, frozen, + logistic regression on pooled features"
        case .pretrainedFinetuned: "pretrained encoder + head, fine-tuned end to end"
        case .fromScratch: "same classifier from random weights, trained end to end"
        case .randomFrozen: "random-weights encoder, frozen, + logistic regression on pooled features"
        case .logMel: "log-mel band mean+std + logistic regression"
        }
    }

    var trainsNetwork: Bool { self == .pretrainedFinetuned || self == .fromScratch }
}

/// Where the pretraining audio of each fold comes from.
public enum PretrainingProtocol: String, Codable, Sendable {
    /// Per fold, only the training groups' clips (labels ignored): the test groups are never seen.
    case strict
    /// One encoder pretrained on every clip, the test groups' included (labels ignored).
    case transductive
    /// An encoder given by the user; how it was made decides what it has seen.
    case suppliedEncoder = "supplied-encoder"
}

/// How one `crylab label-curve` run is carried out.
public struct LabelCurveOptions: Sendable {
    public var output: URL
    /// Labels per class; nil means every training clip.
    public var labelsPerClass: [Int?] = [1, 5, 10, 25, nil]
    /// Label draws per fold and K (K = all has one: every draw would hold the same clips).
    public var draws = 3
    /// Grouped folds; nil: leave one group out when there are at most 10 groups, else 5 folds.
    public var folds: Int?
    /// Run only these folds (1-based), for a quick look; nil: every fold.
    public var onlyFolds: [Int]?
    public var models: [CurveModel] = CurveModel.allCases
    /// How the frozen rows pool the encoder's output map before logistic regression.
    public var pooling = EmbeddingPool.bandMeanStd
    public var pretraining = PretrainingProtocol.strict
    /// The encoder for `.suppliedEncoder`.
    public var encoderPath: String?
    /// More unlabeled audio for pretraining (clips of the test groups are left out under the strict protocol).
    public var unlabeledPool: FeatureStore?
    /// What the labels are: the store's class folders, or a Donate-a-Cry file-name field.
    public var target = LabelSource.folder
    public var classes: [String]?
    /// Fine-tuning trains about this many optimisation steps per run (epochs = steps / steps per
    /// epoch, between 1 and the fine-tuning recipe's epochs): small draws get many epochs, the
    /// full set a few, and every run costs about the same.
    public var fineTuningSteps = 150
    /// ... and at least this many epochs (at most the recipe's): the full training set, at 63
    /// steps an epoch on FSDD, would otherwise get under three.
    public var minimumFineTuningEpochs = 20
    /// Pretraining epochs per fold (default: the pretraining recipe's).
    public var pretrainingEpochs: Int?
    /// Reuse what an interrupted run in the same folder finished (pretrained encoders and folds).
    public var resume = false
    public var quiet = false
    public var seed: UInt64 = 0
    /// The labeled store's path, as given (for the report).
    public var dataPath = ""

    /// Precision, threads and kernels for every model of the run.
    public var context: ComputeContext = .default

    public init(output: URL) { self.output = output }
}

/// One model trained and tested once: a fold, a K and a draw.
public struct CurveRun: Codable, Sendable {
    public var model: CurveModel
    public var fold: Int
    public var testGroups: [String]
    /// nil: every training clip.
    public var labelsPerClass: Int?
    public var draw: Int
    public var trainingClips: Int
    public var balancedAccuracy: Double
    public var macroF1: Double
    public var seconds: Double
}

/// Mean and spread of one model at one K over every fold and draw.
public struct CurveCell: Codable, Sendable {
    public var model: CurveModel
    public var labelsPerClass: Int?
    public var runs: Int
    public var balancedAccuracyMean: Double
    public var balancedAccuracyStd: Double
    public var balancedAccuracyMin: Double
    public var balancedAccuracyMax: Double
    public var macroF1Mean: Double
}

/// One model against another at one K, paired by fold and draw.
public struct CurveComparison: Codable, Sendable {
    public var labelsPerClass: Int?
    public var first: CurveModel
    public var second: CurveModel
    public var pairs: Int
    /// Mean over pairs of first minus second balanced accuracy.
    public var meanDifference: Double
    /// Pairs where the first model scored higher.
    public var firstWins: Int
    /// One-sided: the share of sign flips of the paired differences whose mean is at least the
    /// observed one (exact over every flip up to 16 pairs, 100,000 seeded flips beyond).
    public var pValue: Double
}

/// What pretraining did for one fold.
public struct CurvePretraining: Codable, Sendable {
    public var fold: Int
    public var clips: Int
    public var epochs: Int
    public var secondsPerEpoch: Double?
    public var finalLoss: Double?
    public var encoder: String
    public var reused: Bool
}

/// Everything a label curve measured.
public struct LabelCurveResult: Codable, Sendable {
    public var data: String
    public var target: LabelSource
    public var classes: [String]
    public var clips: Int
    public var groups: [String]
    public var protocolDescription: String
    public var pretrainingProtocol: PretrainingProtocol
    /// How the frozen rows pooled the encoder's output.
    public var pooling: EmbeddingPool
    public var labelsPerClass: [Int?]
    public var draws: Int
    public var fineTuningSteps: Int
    public var minimumFineTuningEpochs: Int
    public var chanceBalancedAccuracy: Double
    public var cells: [CurveCell]
    public var comparisons: [CurveComparison]
    public var pretraining: [CurvePretraining]
    public var runs: [CurveRun]
    public var seconds: Double
    public var files: [String]

    /// The table a person reads: one row per model, one column per K.
    public var text: String {
        var lines = [protocolDescription]
        let header = "model".padding(toLength: 22, withPad: " ", startingAt: 0)
            + labelsPerClass.map { curveLabel($0).padding(toLength: 22, withPad: " ", startingAt: 0) }.joined()
        lines.append(header)
        for model in CurveModel.allCases where cells.contains(where: { $0.model == model }) {
            var line = model.rawValue.padding(toLength: 22, withPad: " ", startingAt: 0)
            for k in labelsPerClass {
                let cell = cells.first { $0.model == model && $0.labelsPerClass == k }
                let text = cell.map { String(format: "%.3f (%.2f-%.2f)", $0.balancedAccuracyMean, $0.balancedAccuracyMin, $0.balancedAccuracyMax) } ?? "-"
                line += text.padding(toLength: 22, withPad: " ", startingAt: 0)
            }
            lines.append(line)
        }
        lines.append(String(format: "balanced accuracy, mean (min-max) over folds x draws; chance %.3f", chanceBalancedAccuracy))
        for comparison in comparisons {
            lines.append(String(format: "K=%@: %@ - %@ = %+.3f, wins %d/%d, p = %.4f", curveLabel(comparison.labelsPerClass),
                                comparison.first.rawValue, comparison.second.rawValue, comparison.meanDifference,
                                comparison.firstWins, comparison.pairs, comparison.pValue))
        }
        return lines.joined(separator: "\n")
    }
}

func curveLabel(_ k: Int?) -> String { k.map(String.init) ?? "all" }

/// Groups for a log line: every name when there are a few, else the count and the first three.
func groupList(_ groups: [String]) -> String {
    groups.count <= 4 ? groups.joined(separator: ", ")
        : "\(groups.count) groups (\(groups.prefix(3).joined(separator: ", ")), ...)"
}

/// Learning curves over labels per class: pretrained encoders against training from scratch,
/// random weights and log-mel statistics, on the same grouped folds and the same label draws.
public final class LabelCurve {
    public let store: FeatureStore
    public let pretrainRecipe: PretrainRecipe
    public let pretrainRecipeText: String
    public let finetuneRecipe: FinetuneRecipe
    public let finetuneRecipeText: String
    public let options: LabelCurveOptions
    let log: (String) -> Void
    let set: LabeledSet

    public init(store: FeatureStore, pretrainRecipe: PretrainRecipe, pretrainRecipeText: String,
                finetuneRecipe: FinetuneRecipe, finetuneRecipeText: String, options: LabelCurveOptions,
                log: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws {
        self.store = store
        self.pretrainRecipe = pretrainRecipe
        self.pretrainRecipeText = pretrainRecipeText
        // The classifier trained from scratch has the pretraining U-Net's encoder, all of its levels.
        var finetune = finetuneRecipe
        finetune.encoder = pretrainRecipe.model
        finetune.encoderLevels = pretrainRecipe.model.widths.count - 1
        finetune.freeze.blocks = min(finetune.freeze.blocks, finetune.encoderLevels)
        // Selection would need held-out labels from the K drawn: runs train a fixed number of steps.
        finetune.training.validationFraction = 0
        finetune.evaluation.trainFinalModel = false
        self.finetuneRecipe = finetune
        self.finetuneRecipeText = finetuneRecipeText
        self.options = options
        self.log = log
        set = try LabeledSet(store: store, source: options.target, classes: options.classes)
        if options.pretraining == .suppliedEncoder && options.encoderPath == nil {
            throw RecipeError(file: "label-curve", message: "the supplied-encoder protocol needs --encoder FILE.h5")
        }
        if let pool = options.unlabeledPool, pool.frontEnd != store.frontEnd {
            throw RecipeError(file: "label-curve", message: "the unlabeled pool was made with another front end than the labeled data (\(describeDifference(pool.frontEnd, store.frontEnd))); make both with the same options")
        }
        if options.pretraining == .suppliedEncoder, let path = options.encoderPath {
            // Checked once here, so that a file that does not fit fails before any fold runs.
            let file = try loadEncoder(path)
            let data = options.dataPath.isEmpty ? "the data" : options.dataPath
            if let frontEnd = file.frontEnd, frontEnd != store.frontEnd {
                throw RecipeError(file: path, message: "was pretrained on another front end than \(data) (\(describeDifference(frontEnd, store.frontEnd))); make the store with the encoder's front end")
            }
            try file.checkInput(of: store, storePath: data)
        }
        guard Set(set.groups).count >= 2 else {
            throw RecipeError(file: "label-curve", message: "the labeled data has \(Set(set.groups).count) group; grouped folds need at least 2 (see crylab features --group-pattern or a manifest's group column)")
        }
    }

    /// An encoder file; a Keras weights-only file is read as the pretraining recipe's encoder.
    func loadEncoder(_ path: String) throws -> EncoderFile {
        let file = try EncoderFile(path: path, kerasArchitecture: try pretrainRecipe.modelConfiguration(mels: store.mels, frames: store.frames),
                                   kerasLevels: pretrainRecipe.model.widths.count - 1)
        file.model.context = options.context
        return file
    }

    var folds: [Fold] {
        let groups = Set(set.groups).count
        if let k = options.folds, k < groups { return groupedStratifiedFolds(labels: set.labels, groups: set.groups, folds: k, seed: options.seed) }
        if options.folds == nil && groups > 10 { return groupedStratifiedFolds(labels: set.labels, groups: set.groups, folds: 5, seed: options.seed) }
        return leaveOneGroupOutFolds(groups: set.groups)
    }

    /// Seed of draw `draw` of K labels per class in fold `fold`: every model sees the same clips.
    func drawSeed(fold: Int, k: Int?, draw: Int) -> UInt64 {
        options.seed &+ 0xD1A5_0000 &+ UInt64(fold) &* 1_000_003 &+ UInt64(k ?? 0) &* 1009 &+ UInt64(draw)
    }

    /// Every fold in this process; writes the curve files.
    public func run() throws -> LabelCurveResult {
        try run(ranks: nil)!
    }

    /// The same curve with its folds dealt out round-robin over the ranks of `communicator`,
    /// round by round. Rank 0 gathers each fold's runs, alone writes `fold-k/runs.json` and the
    /// curve files, and returns the result, with the figures of `run()` at the same thread
    /// count; the other ranks return nil. A rank pretrains its folds' encoders into
    /// `fold-k/pretrain/` under the output path on its own host. The transductive protocol's
    /// one encoder is pretrained by rank 0 and copied to the others.
    public func run(across communicator: Communicator) throws -> LabelCurveResult? {
        try run(ranks: communicator)
    }

    func run(ranks: Communicator?) throws -> LabelCurveResult? {
        let started = Date()
        let (rank, size) = (ranks?.rank ?? 0, ranks?.size ?? 1)
        if rank == 0 { try FileManager.default.createDirectory(at: options.output, withIntermediateDirectories: true) }
        let folds = self.folds
        if let only = options.onlyFolds, let wrong = only.first(where: { !(1...folds.count).contains($0) }) {
            throw RecipeError(file: "label-curve", message: "--fold \(wrong) does not exist; this data has folds 1 to \(folds.count)")
        }
        let runFolds = options.onlyFolds.map(Set.init) ?? Set(1...folds.count)
        let groupsDescription = folds.count == Set(set.groups).count ? "leave-one-group-out over \(folds.count) groups"
            : "\(folds.count)-fold cross-validation grouped by recording source and stratified by class"
        let pretrainingDescription: String = switch options.pretraining {
        case .strict: "pretrained per fold on the training groups' audio only (labels ignored; the test group is never seen)"
        case .transductive: "pretrained once on every clip, test groups included (labels ignored): transductive, optimistic"
        case .suppliedEncoder: "the supplied encoder \(options.encoderPath ?? "")"
        }
        let description = "\(set.count) clips of \(set.classNames.count) classes (\(options.target.rawValue)), \(groupsDescription); "
            + "frozen rows pool the encoder's output by \(options.pooling.rawValue); "
            + "\(options.draws) draws of K labels per class from the training groups per fold (K = all: one); \(pretrainingDescription); "
            + "fine-tuning at least \(options.fineTuningSteps) steps and \(options.minimumFineTuningEpochs) epochs per run (at most the recipe's \(finetuneRecipe.training.epochs)), no held-out selection (fixed epochs)"
            + (runFolds.count < folds.count ? "; only fold " + runFolds.sorted().map(String.init).joined(separator: ", ") + " of \(folds.count)" : "")
        log("label curve: " + description)

        let unitsPerFold = options.labelsPerClass.reduce(0) { $0 + ($1 == nil ? 1 : options.draws) }
        let progress = ProgressReporter(label: "label curve", total: runFolds.count * unitsPerFold, quiet: options.quiet || rank != 0)
        var sharedEncoder: (path: String, record: CurvePretraining)?
        let bandFeatures = options.models.contains(.logMel) ? set.indices.map { bandStatistics(store, index: $0) } : []

        // Rank 0 reads the folds an interrupted run finished; every rank learns which they are.
        var finished: [Int: FoldRuns] = [:]
        if rank == 0 && options.resume {
            for (foldIndex, fold) in folds.enumerated() where runFolds.contains(foldIndex + 1) {
                let recordPath = options.output.appendingPathComponent("fold-\(foldIndex + 1)/runs.json")
                guard let saved = try? JSONDecoder().decode(FoldRuns.self, from: Data(contentsOf: recordPath)),
                      saved.identity == identity(fold: fold) else { continue }
                let testGroups = Array(Set(fold.test.map { set.groups[$0] })).sorted()
                log("fold \(foldIndex + 1)/\(folds.count) (test: \(groupList(testGroups))): reused from \(recordPath.path)")
                finished[foldIndex] = saved
                progress.advance(by: unitsPerFold)
            }
        }
        var done = finished.keys.sorted()
        if let ranks { done = try JSONDecoder().decode([Int].self, from: Data(ranks.broadcast(Array(JSONEncoder().encode(done))))) }
        let remaining = folds.indices.filter { runFolds.contains($0 + 1) && !done.contains($0) }
        // The transductive encoder on several ranks: rank 0 pretrains it, as one process does,
        // while the others wait; they get the file and keep a copy of their own (no shared file
        // system needed). Its record goes with the first fold run, as in one process.
        var sharedRecord: CurvePretraining?
        if let ranks, size > 1, options.pretraining == .transductive, !remaining.isEmpty,
           options.models.contains(where: { $0 == .pretrainedFrozen || $0 == .pretrainedFinetuned }) {
            sharedEncoder = try shareTransductiveEncoder(over: ranks)
            sharedRecord = rank == 0 ? sharedEncoder?.record : nil
        }
        try dealOut(remaining, over: ranks, work: { foldIndex -> FoldRuns in
            var record = try runFold(foldIndex, of: folds, sharedEncoder: &sharedEncoder, bandFeatures: bandFeatures, progress: progress)
            if foldIndex == remaining.first, let sharedRecord { record.pretraining.insert(sharedRecord, at: 0) }
            return record
        }) { foldIndex, record, computedHere in
            let foldFolder = options.output.appendingPathComponent("fold-\(foldIndex + 1)")
            try FileManager.default.createDirectory(at: foldFolder, withIntermediateDirectories: true)
            try JSONEncoder().encode(record).write(to: foldFolder.appendingPathComponent("runs.json"), options: .atomic)
            finished[foldIndex] = record
            if !computedHere { progress.advance(by: unitsPerFold) }
            log(foldSummary(record.runs, fold: foldIndex + 1))
        }
        guard rank == 0 else { return nil }
        let ordered = finished.keys.sorted().map { finished[$0]! }
        let runs = ordered.flatMap(\.runs), pretraining = ordered.flatMap(\.pretraining)
        progress.finish()

        var result = LabelCurveResult(
            data: options.dataPath, target: options.target, classes: set.classNames, clips: set.count, groups: Array(Set(set.groups)).sorted(),
            protocolDescription: description, pretrainingProtocol: options.pretraining, pooling: options.pooling, labelsPerClass: options.labelsPerClass,
            draws: options.draws, fineTuningSteps: options.fineTuningSteps,
            minimumFineTuningEpochs: options.minimumFineTuningEpochs, chanceBalancedAccuracy: 1 / Double(set.classNames.count),
            cells: curveCells(runs, labelsPerClass: options.labelsPerClass),
            comparisons: curveComparisons(runs, labelsPerClass: options.labelsPerClass),
            pretraining: pretraining, runs: runs, seconds: Date().timeIntervalSince(started), files: [])
        result.files = try writeCurveFiles(result, to: options.output)
        return result
    }

    /// The transductive protocol's encoder on every rank: rank 0 pretrains it into
    /// `pretrain-all/` while the others wait without a time limit, then sends the file and its
    /// record; rank R > 0 writes its copy as `pretrain-all/rank-R/encoder.h5`.
    func shareTransductiveEncoder(over ranks: Communicator) throws -> (path: String, record: CurvePretraining) {
        var file: [UInt8] = [], recordJSON: [UInt8] = []
        var pretrained: CurvePretraining?
        if ranks.rank == 0 {
            let record = try pretrain(excluding: [], folder: options.output.appendingPathComponent("pretrain-all"), fold: 0)
            file = Array(try Data(contentsOf: URL(fileURLWithPath: record.encoder)))
            recordJSON = Array(try JSONEncoder().encode(record))
            pretrained = record
        }
        file = try ranks.broadcast(file, limit: .never)
        recordJSON = try ranks.broadcast(recordJSON)
        if let pretrained { return (pretrained.encoder, pretrained) }
        let record = try JSONDecoder().decode(CurvePretraining.self, from: Data(recordJSON))
        let folder = options.output.appendingPathComponent("pretrain-all/rank-\(ranks.rank)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let copy = folder.appendingPathComponent("encoder.h5")
        try Data(file).write(to: copy, options: .atomic)
        return (copy.path, record)
    }

    /// Runs every model, K and draw of fold `foldIndex` (pretraining its encoder first under the
    /// strict protocol) and returns its runs.
    func runFold(_ foldIndex: Int, of folds: [Fold], sharedEncoder: inout (path: String, record: CurvePretraining)?,
                 bandFeatures: [[Double]], progress: ProgressReporter) throws -> FoldRuns {
        let fold = folds[foldIndex]
        let testGroups = Array(Set(fold.test.map { set.groups[$0] })).sorted()
        let foldFolder = options.output.appendingPathComponent("fold-\(foldIndex + 1)")
        try FileManager.default.createDirectory(at: foldFolder, withIntermediateDirectories: true)
        log("fold \(foldIndex + 1)/\(folds.count): test \(groupList(testGroups)) (\(fold.test.count) clips), training groups \(fold.train.count) clips")

        // The encoder this fold uses.
        var encoderPath: String? = nil
        var foldPretraining: [CurvePretraining] = []
        if options.models.contains(where: { $0 == .pretrainedFrozen || $0 == .pretrainedFinetuned }) {
            switch options.pretraining {
            case .suppliedEncoder:
                encoderPath = options.encoderPath
            case .transductive:
                if sharedEncoder == nil {
                    let record = try pretrain(excluding: [], folder: options.output.appendingPathComponent("pretrain-all"), fold: 0)
                    sharedEncoder = (record.encoder, record)
                    foldPretraining.append(record)
                }
                encoderPath = sharedEncoder!.path
            case .strict:
                let record = try pretrain(excluding: Set(testGroups), folder: foldFolder.appendingPathComponent("pretrain"), fold: foldIndex + 1)
                foldPretraining.append(record)
                encoderPath = record.encoder
            }
        }
        let encoderFile = try encoderPath.map(loadEncoder)

        // Frozen features, computed once per fold.
        var frozen: [CurveModel: [[Double]]] = [:]
        let configuration = try encoderFile?.configuration ?? pretrainRecipe.modelConfiguration(mels: store.mels, frames: store.frames)
        let levels = encoderFile?.levels ?? configuration.depth
        let normalization = encoderFile?.normalization.map { (mean: $0.mean, std: $0.std) }
            ?? SpectrogramBatcher.statistics(of: store, indices: fold.train.map { set.indices[$0] })
        let batcher = SpectrogramBatcher(store: store, frames: configuration.inputShape[1], mean: normalization.mean, std: normalization.std)
        if options.models.contains(.pretrainedFrozen), let encoderFile {
            frozen[.pretrainedFrozen] = pooledFeatures(encoder: encoderFile.model, set: set, batcher: batcher, batchSize: 64,
                                                       pool: options.pooling)
        }
        if options.models.contains(.randomFrozen) {
            let randomEncoder = try Model.encoder(configuration, levels: levels)
            randomEncoder.context = options.context
            frozen[.randomFrozen] = pooledFeatures(encoder: randomEncoder, set: set, batcher: batcher,
                                                    batchSize: 64, pool: options.pooling)
        }
        if options.models.contains(.logMel) { frozen[.logMel] = bandFeatures }

        var finetuners: [CurveModel: Finetuner] = [:]
        for model in options.models where model.trainsNetwork {
            var finetuneOptions = FinetuneOptions(output: foldFolder.appendingPathComponent(model.rawValue))
            finetuneOptions.encoderPath = model == .pretrainedFinetuned ? encoderPath : nil
            finetuneOptions.dataPath = options.dataPath
            finetuneOptions.quiet = true
            finetuneOptions.context = options.context
            if model == .pretrainedFinetuned && encoderPath == nil { continue }
            finetuners[model] = try Finetuner(recipe: finetuneRecipe, recipeText: finetuneRecipeText, store: store,
                                              options: finetuneOptions, labeledSet: set, log: { _ in })
        }

        var foldRuns: [CurveRun] = []
        for k in options.labelsPerClass {
            for draw in 0..<(k == nil ? 1 : options.draws) {
                let train = k.map { drawLabels(from: fold.train, labels: set.labels, perClass: $0, seed: drawSeed(fold: foldIndex, k: k, draw: draw)) } ?? fold.train
                let truth = fold.test.map { set.labels[$0] }
                var notes: [String] = []
                for model in options.models {
                    let runStarted = Date()
                    let probabilities: [[Double]]
                    if let features = frozen[model] {
                        let regression = LogisticRegression(x: train.map { features[$0] }, y: train.map { set.labels[$0] },
                                                            classes: set.classNames.count)
                        probabilities = fold.test.map { regression.probabilities(features[$0]) }
                    } else if let finetuner = finetuners[model] {
                        let batch = finetuneRecipe.training.batchSize
                        let stepsPerEpoch = (train.count + batch - 1) / batch
                        let epochs = fineTuningEpochs(stepsPerEpoch: stepsPerEpoch)
                        let (network, networkBatcher, _, _) = try finetuner.trainModel(on: train, label: model.rawValue, epochs: epochs)
                        probabilities = finetuner.predict(network, fold.test, batcher: networkBatcher)
                    } else {
                        continue
                    }
                    let report = ClassificationReport(truth: truth, predicted: probabilities.map(argmax), classNames: set.classNames)
                    foldRuns.append(CurveRun(model: model, fold: foldIndex + 1, testGroups: testGroups, labelsPerClass: k, draw: draw,
                                             trainingClips: train.count, balancedAccuracy: report.balancedAccuracy,
                                             macroF1: report.macroF1, seconds: Date().timeIntervalSince(runStarted)))
                    notes.append(String(format: "%@ %.2f", model.rawValue, report.balancedAccuracy))
                }
                progress.advance(note: "fold \(foldIndex + 1) K=\(curveLabel(k)) draw \(draw + 1): " + notes.joined(separator: ", "))
            }
        }
        return FoldRuns(identity: identity(fold: fold), runs: foldRuns, pretraining: foldPretraining)
    }

    /// Epochs of one fine-tuning run: enough for `fineTuningSteps` steps and at least
    /// `minimumFineTuningEpochs`, at most the recipe's epochs.
    func fineTuningEpochs(stepsPerEpoch: Int) -> Int {
        let forSteps = (options.fineTuningSteps + stepsPerEpoch - 1) / stepsPerEpoch
        return max(1, min(finetuneRecipe.training.epochs, max(forSteps, options.minimumFineTuningEpochs)))
    }

    /// What a saved fold must have been computed from to be reused.
    func identity(fold: Fold) -> String {
        var text = pretrainRecipeText + "\n---\n" + finetuneRecipeText
        text += "\n--models " + options.models.map(\.rawValue).joined(separator: ",") + " --pool " + options.pooling.rawValue
        text += "\n--k " + options.labelsPerClass.map(curveLabel).joined(separator: ",")
        text += "\n--draws \(options.draws) --steps \(options.fineTuningSteps) --min-epochs \(options.minimumFineTuningEpochs) --seed \(options.seed) --protocol \(options.pretraining.rawValue)"
        text += "\n--pretraining-epochs \(options.pretrainingEpochs.map(String.init) ?? "recipe") --encoder \(options.encoderPath ?? "")"
        text += "\n--clips \(set.count) --test " + fold.test.map(String.init).joined(separator: ",")
        return text
    }

    /// Pretrains the recipe's U-Net on every clip (labeled store and unlabeled pool) outside `excluding`.
    func pretrain(excluding: Set<String>, folder: URL, fold: Int) throws -> CurvePretraining {
        let encoderPath = folder.appendingPathComponent("encoder.h5").path
        var pool = store.subset((0..<store.count).filter { !excluding.contains(store.groups[$0]) })
        if let extra = options.unlabeledPool {
            pool = pool.appending(extra.subset((0..<extra.count).filter { !excluding.contains(extra.groups[$0]) }))
        }
        if options.resume, FileManager.default.fileExists(atPath: encoderPath),
           let saved = try? JSONDecoder().decode(CurvePretraining.self, from: Data(contentsOf: folder.appendingPathComponent("curve-pretraining.json"))),
           saved.clips == pool.count {
            log("  pretraining: reused \(encoderPath)")
            var reused = saved
            reused.reused = true
            return reused
        }
        var recipe = pretrainRecipe
        if let epochs = options.pretrainingEpochs { recipe.training.epochs = epochs }
        var pretrainOptions = PretrainOptions(output: folder)
        pretrainOptions.quiet = options.quiet
        pretrainOptions.context = options.context
        log("  pretraining on \(pool.count) clips (\(Set(pool.groups).count) groups), \(recipe.training.epochs) epochs")
        let summary = try Pretrainer(recipe: recipe, recipeText: pretrainRecipeText, store: pool, options: pretrainOptions,
                                     log: { [log] line in log("  " + line) }).run()
        guard let encoder = summary.encoder else {
            throw RecipeError(file: folder.path, message: "pretraining stopped before writing an encoder (interrupted?); run again with --resume")
        }
        let record = CurvePretraining(fold: fold, clips: pool.count, epochs: summary.epochs, secondsPerEpoch: summary.secondsPerEpoch,
                                      finalLoss: summary.trainLoss, encoder: encoder, reused: false)
        try JSONEncoder().encode(record).write(to: folder.appendingPathComponent("curve-pretraining.json"), options: .atomic)
        return record
    }

    func foldSummary(_ runs: [CurveRun], fold: Int) -> String {
        var parts: [String] = []
        for k in options.labelsPerClass {
            let cells = options.models.compactMap { model -> String? in
                let values = runs.filter { $0.model == model && $0.labelsPerClass == k }.map(\.balancedAccuracy)
                return values.isEmpty ? nil : String(format: "%@ %.3f", model.rawValue, values.reduce(0, +) / Double(values.count))
            }
            parts.append("K=\(curveLabel(k)): " + cells.joined(separator: ", "))
        }
        return "fold \(fold) done; balanced accuracy, mean over draws:\n  " + parts.joined(separator: "\n  ")
    }
}

/// One finished fold of a label curve, for --resume.
struct FoldRuns: Codable {
    var identity: String
    var runs: [CurveRun]
    var pretraining: [CurvePretraining]
}

func curveCells(_ runs: [CurveRun], labelsPerClass: [Int?]) -> [CurveCell] {
    var cells: [CurveCell] = []
    for model in CurveModel.allCases {
        for k in labelsPerClass {
            let selected = runs.filter { $0.model == model && $0.labelsPerClass == k }
            guard !selected.isEmpty else { continue }
            let values = selected.map(\.balancedAccuracy)
            let mean = values.reduce(0, +) / Double(values.count)
            let variance = values.count > 1 ? values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1) : 0
            cells.append(CurveCell(model: model, labelsPerClass: k, runs: values.count, balancedAccuracyMean: mean,
                                   balancedAccuracyStd: variance.squareRoot(), balancedAccuracyMin: values.min()!,
                                   balancedAccuracyMax: values.max()!,
                                   macroF1Mean: selected.map(\.macroF1).reduce(0, +) / Double(selected.count)))
        }
    }
    return cells
}

/// Each pretrained model against every model that is not pretrained, per K, paired by fold and draw.
func curveComparisons(_ runs: [CurveRun], labelsPerClass: [Int?]) -> [CurveComparison] {
    var comparisons: [CurveComparison] = []
    for k in labelsPerClass {
        for first in [CurveModel.pretrainedFrozen, .pretrainedFinetuned] {
            for second in CurveModel.allCases where second != first {
                let a = runs.filter { $0.model == first && $0.labelsPerClass == k }
                let b = runs.filter { $0.model == second && $0.labelsPerClass == k }
                let pairs: [(Double, Double)] = a.compactMap { run in
                    b.first { $0.fold == run.fold && $0.draw == run.draw }.map { (run.balancedAccuracy, $0.balancedAccuracy) }
                }
                guard !pairs.isEmpty else { continue }
                let differences = pairs.map { $0.0 - $0.1 }
                comparisons.append(CurveComparison(labelsPerClass: k, first: first, second: second, pairs: pairs.count,
                                                   meanDifference: differences.reduce(0, +) / Double(differences.count),
                                                   firstWins: differences.filter { $0 > 0 }.count,
                                                   pValue: signFlipPValue(differences)))
            }
        }
    }
    return comparisons
}

/// One-sided paired sign-flip (permutation) test that the mean of `differences` is above 0: the
/// share of sign assignments whose sum is at least the observed sum. Exact up to 16 pairs
/// (65,536 assignments), else 100,000 seeded random assignments (the observed one counted once).
public func signFlipPValue(_ differences: [Double]) -> Double {
    let observed = differences.reduce(0, +)
    let n = differences.count
    guard n > 0 else { return 1 }
    if n <= 16 {
        var atLeast = 0
        for mask in 0..<(1 << n) {
            var sum = 0.0
            for i in 0..<n { sum += (mask >> i) & 1 == 1 ? -differences[i] : differences[i] }
            if sum >= observed - 1e-12 { atLeast += 1 }
        }
        return Double(atLeast) / Double(1 << n)
    }
    var generator = SeededGenerator(seed: 0x51_6F11)
    let trials = 100_000
    var atLeast = 1
    for _ in 0..<trials {
        var sum = 0.0
        for value in differences { sum += Bool.random(using: &generator) ? -value : value }
        if sum >= observed - 1e-12 { atLeast += 1 }
    }
    return Double(atLeast) / Double(trials + 1)
}

/// curve.json, curve.csv (one row per model and K) and curve.html (the curves with their spread).
func writeCurveFiles(_ result: LabelCurveResult, to folder: URL) throws -> [String] {
    let jsonPath = folder.appendingPathComponent("curve.json")
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(result).write(to: jsonPath, options: .atomic)

    var csv = "model,labels_per_class,runs,balanced_accuracy_mean,balanced_accuracy_std,balanced_accuracy_min,balanced_accuracy_max,macro_f1_mean\n"
    for cell in result.cells {
        csv += "\(cell.model.rawValue),\(curveLabel(cell.labelsPerClass)),\(cell.runs),"
            + [cell.balancedAccuracyMean, cell.balancedAccuracyStd, cell.balancedAccuracyMin, cell.balancedAccuracyMax, cell.macroF1Mean]
                .map { String(format: "%.4f", $0) }.joined(separator: ",") + "\n"
    }
    let csvPath = folder.appendingPathComponent("curve.csv")
    try Data(csv.utf8).write(to: csvPath, options: .atomic)

    var report = HTMLReport(title: "CryLab label curve")
    report.paragraph(result.protocolDescription)
    let ks = result.labelsPerClass.map(curveLabel)
    let series = CurveModel.allCases.compactMap { model -> HTMLReport.BandSeries? in
        let cells = result.labelsPerClass.map { k in result.cells.first { $0.model == model && $0.labelsPerClass == k } }
        guard cells.contains(where: { $0 != nil }) else { return nil }
        return HTMLReport.BandSeries(name: model.rawValue,
                                     mean: cells.map { $0?.balancedAccuracyMean ?? .nan },
                                     low: cells.map { $0.map { max($0.balancedAccuracyMin, $0.balancedAccuracyMean - $0.balancedAccuracyStd) } ?? .nan },
                                     high: cells.map { $0.map { min($0.balancedAccuracyMax, $0.balancedAccuracyMean + $0.balancedAccuracyStd) } ?? .nan })
    }
    report.bandChart(title: "balanced accuracy against labels per class (mean; band: ±1 sd, within min-max)",
                     xLabels: ks, xTitle: "labels per class", series: series, reference: (result.chanceBalancedAccuracy, "chance"))
    report.heading("Balanced accuracy, mean (min-max)")
    report.table(header: ["model"] + ks, rows: CurveModel.allCases.compactMap { model in
        let row = result.labelsPerClass.map { k -> String in
            guard let cell = result.cells.first(where: { $0.model == model && $0.labelsPerClass == k }) else { return "-" }
            return String(format: "%.3f (%.2f-%.2f)", cell.balancedAccuracyMean, cell.balancedAccuracyMin, cell.balancedAccuracyMax)
        }
        return row.allSatisfy { $0 == "-" } ? nil : [model.rawValue + ": " + model.summary] + row
    })
    report.heading("Paired comparisons")
    report.paragraph("Per K, each pretrained model against each other model on the same folds and draws: mean difference of balanced accuracy, wins, and a one-sided sign-flip permutation p-value.")
    report.table(header: ["K", "pretrained", "against", "difference", "wins", "p"], rows: result.comparisons.map {
        [curveLabel($0.labelsPerClass), $0.first.rawValue, $0.second.rawValue, String(format: "%+.3f", $0.meanDifference),
         "\($0.firstWins)/\($0.pairs)", String(format: "%.4f", $0.pValue)]
    })
    if !result.pretraining.isEmpty {
        report.heading("Pretraining")
        report.table(header: ["fold", "clips", "epochs", "seconds per epoch", "final training loss", "encoder"], rows: result.pretraining.map {
            [$0.fold == 0 ? "all" : String($0.fold), String($0.clips), String($0.epochs),
             $0.secondsPerEpoch.map { String(format: "%.1f", $0) } ?? "-", $0.finalLoss.map { String(format: "%.4f", $0) } ?? "-",
             $0.encoder + ($0.reused ? " (reused)" : "")]
        })
    }
    let htmlPath = folder.appendingPathComponent("curve.html")
    try report.write(to: htmlPath.path)
    return [jsonPath.path, csvPath.path, htmlPath.path]
}
