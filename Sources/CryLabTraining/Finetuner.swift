import CryLabCore
import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabMPI
import CryLabNN
import CryLabOneDNN
import Foundation

/// How one `crylab finetune` run is carried out.
public struct FinetuneOptions: Sendable {
    public var output: URL
    /// Encoder weights (CryLab or Keras `.h5`); nil trains from random weights.
    public var encoderPath: String?
    /// Where the data came from, for errors.
    public var dataPath: String?
    public var quiet = false
    /// Reuse the folds an interrupted run of the same recipe, data and encoder finished (saved in
    /// `folds/` of the run folder) and train only the rest. Without it, saved folds are discarded.
    public var resume = false
    /// Train on this many labeled clips per class, drawn (stratified, per draw) from each training
    /// fold only; nil trains on every training clip.
    public var labelsPerClass: Int?
    /// How many label draws are evaluated (each its own cross-validation on the same folds).
    public var draws = 1
    /// Evaluate on this store instead of cross-validating: train on the data (or K labels per
    /// class of it), test on every labeled clip of `test` of the recipe's classes.
    public var test: FeatureStore?
    /// The test store's path, for the report.
    public var testPath: String?
    /// Precision, threads and kernels for every model of the run.
    public var context: ComputeContext = .default

    public init(output: URL) { self.output = output }
}

/// One label draw of a few-label fine-tuning run: pooled figures of the model and of the
/// baseline trained on the same drawn clips.
public struct LabelDrawFigures: Codable, Sendable {
    public var draw: Int
    public var trainingClips: Int
    public var balancedAccuracy: Double
    public var macroF1: Double
    public var baselineBalancedAccuracy: Double
    public var baselineMacroF1: Double
}

/// Everything a fine-tuning run measured.
public struct FinetuneSummary: Codable, Sendable {
    public var runFolder: String
    public var recipe: String
    public var encoder: String
    public var classes: [String]
    public var clips: Int
    public var groups: Int
    public var protocolDescription: String
    public var crossValidation: CrossValidationResult
    public var baseline: CrossValidationResult
    /// Best validation epoch of each fold (1-based).
    public var bestEpochs: [Int]
    /// Per fold: "train_loss", "val_loss", "val_balanced_accuracy" per epoch.
    public var histories: [[String: [Double]]]
    public var samplesPerSecond: Double
    public var seconds: Double
    public var classifier: String?
    public var report: String?
    public var warnings: [String]
    /// With --labels-per-class: K, and every draw's figures (the cross-validation above is draw 1's).
    public var labelsPerClass: Int?
    public var labelDraws: [LabelDrawFigures]?
}

/// Fine-tunes an encoder with a classification head, evaluates it with grouped cross-validation
/// and (optionally) trains the final classifier on every clip.
public final class Finetuner {
    public let recipe: FinetuneRecipe
    public let recipeText: String
    public let store: FeatureStore
    public let options: FinetuneOptions
    let log: (String) -> Void

    let set: LabeledSet
    let encoderConfiguration: UNetConfiguration
    let pretrained: Model?
    let normalization: (mean: Float, std: Float)?
    /// With a test store: the set positions that train (the data's clips) and that test (the test store's).
    let trainingPositions: [Int]
    let testPositions: [Int]?
    private var trainedSamples = 0
    private var trainingSeconds = 0.0

    /// - Parameter labeledSet: the clips and labels to use; default: the store's class folders
    ///   restricted to the recipe's classes.
    public init(recipe: FinetuneRecipe, recipeText: String, store: FeatureStore, options: FinetuneOptions,
                labeledSet: LabeledSet? = nil,
                log: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws {
        self.recipe = recipe
        self.recipeText = recipeText
        self.options = options
        self.log = log
        if let test = options.test {
            // One store, the test clips after the training clips, so every clip has one position.
            guard test.frontEnd == store.frontEnd else {
                throw RecipeError(file: options.testPath ?? "test", message: "was made with another front end than the training data (\(describeDifference(test.frontEnd, store.frontEnd))); make both with the same options")
            }
            let trainingClasses = Set(store.classNames)
            if let missing = (recipe.classes ?? store.classNames).first(where: { !test.classNames.contains($0) }) {
                log("note: the test store has no class '\(missing)'; its recall is not measured")
            }
            if let unknown = test.classNames.first(where: { !trainingClasses.contains($0) }) {
                log("note: the test store's class '\(unknown)' is not in the training data; its clips are left out")
            }
            let combined = store.appending(test)
            self.store = combined
            let labeled = try labeledSet ?? LabeledSet(store: combined, classes: recipe.classes ?? store.classNames, merge: recipe.merge)
            let training = labeled.indices.indices.filter { labeled.indices[$0] < store.count }
            let testing = labeled.indices.indices.filter { labeled.indices[$0] >= store.count }
            let shared = Set(training.map { labeled.groups[$0] }).intersection(testing.map { labeled.groups[$0] })
            if !shared.isEmpty {
                log("warning: \(shared.count) recording sources are in both the training data and the test store (e.g. \(shared.sorted()[0])): the test is not independent of training")
            }
            guard !testing.isEmpty else {
                throw RecipeError(file: options.testPath ?? "test", message: "has no labeled clip of the classes \(labeled.classNames.joined(separator: ", "))")
            }
            set = labeled
            trainingPositions = training
            testPositions = testing
        } else {
            self.store = store
            set = try labeledSet ?? LabeledSet(store: store, classes: recipe.classes, merge: recipe.merge)
            trainingPositions = Array(0..<set.count)
            testPositions = nil
        }
        if let path = options.encoderPath {
            // A Keras full-model file carries its architecture in model_config; a weights-only
            // file is read as the recipe's encoder.
            let loaded = try EncoderFile(path: path, kerasArchitecture: try recipe.encoderConfiguration(mels: store.mels, frames: store.frames),
                                         kerasLevels: recipe.encoderLevels)
            if let frontEnd = loaded.frontEnd, frontEnd != store.frontEnd {
                throw RecipeError(file: path, message: "the encoder was pretrained on another front end (\(describeDifference(frontEnd, store.frontEnd))); make the labeled feature store with the encoder's preset")
            }
            guard recipe.encoderLevels <= loaded.levels else {
                throw RecipeError(file: path, message: "has \(loaded.levels) encoder levels, the recipe asks for \(recipe.encoderLevels); set the recipe's encoderLevels to at most \(loaded.levels)")
            }
            try loaded.checkInput(of: store, storePath: options.dataPath ?? "the data")
            encoderConfiguration = loaded.configuration
            pretrained = loaded.model
            normalization = loaded.normalization.map { ($0.mean, $0.std) }
        } else {
            encoderConfiguration = try recipe.encoderConfiguration(mels: store.mels, frames: store.frames)
            pretrained = nil
            normalization = nil
        }
        guard encoderConfiguration.inputShape[0] == store.mels, encoderConfiguration.inputShape[1] <= store.frames else {
            throw RecipeError(file: options.encoderPath ?? recipe.path, message: (options.encoderPath == nil ? "key 'encoder.frames': " : "") + "the encoder takes \(encoderConfiguration.inputShape[0]) mels x \(encoderConfiguration.inputShape[1]) frames; the data has \(store.mels) x \(store.frames)")
        }
    }

    var inputFrames: Int { encoderConfiguration.inputShape[1] }

    /// Cross-validates (every fold in this process), trains the final classifier and writes the report.
    public func run() throws -> FinetuneSummary {
        try run(ranks: nil)!
    }

    /// The same run with its folds dealt out round-robin over the ranks of `communicator`, each
    /// rank training with its own threads: fold i is trained by rank i mod N of the folds still
    /// to do. Rank 0 collects every fold, alone writes the run folder (fold records, final
    /// classifier, reports) and returns the summary, with the same figures as `run()` on one
    /// process with the same thread count; the other ranks return nil.
    public func run(across communicator: Communicator) throws -> FinetuneSummary? {
        try run(ranks: communicator)
    }

    func run(ranks: Communicator?) throws -> FinetuneSummary? {
        let started = Date()
        let isRoot = (ranks?.rank ?? 0) == 0
        if isRoot { try FileManager.default.createDirectory(at: options.output, withIntermediateDirectories: true) }
        var folds: [Fold]
        var protocolDescription: String
        switch recipe.evaluation.split {
        case _ where testPositions != nil:
            folds = [Fold(train: trainingPositions, test: testPositions!)]
            protocolDescription = "trained on the data's \(trainingPositions.count) clips, tested on the \(testPositions!.count) clips of \(options.testPath ?? "the test store")"
        case .groupedKFold:
            folds = groupedStratifiedFolds(labels: set.labels, groups: set.groups, folds: recipe.evaluation.folds, seed: recipe.training.seed)
            protocolDescription = "\(recipe.evaluation.folds)-fold cross-validation, grouped by recording source and stratified by class; pooled out-of-fold figures"
        case .random:
            folds = [randomSplit(count: set.count, testFraction: recipe.evaluation.testFraction, seed: recipe.training.seed)]
            protocolDescription = "one random \(Int((1 - recipe.evaluation.testFraction) * 100))/\(Int(recipe.evaluation.testFraction * 100)) split of clips (families straddle train and test: optimistic)"
        }
        log("fine-tuning on \(set.count) clips of \(set.classNames.joined(separator: ", ")) from \(Set(set.groups).count) sources; \(protocolDescription)")
        if let ranks, ranks.size > folds.count, isRoot {
            let idle = ranks.size - folds.count
            log("note: \(ranks.size) ranks for \(folds.count) fold\(folds.count == 1 ? "" : "s"): \(idle) rank\(idle == 1 ? " has" : "s have") nothing to train")
        }
        if let k = options.labelsPerClass {
            protocolDescription += "; \(k) labels per class drawn from each training fold (\(options.draws) draws), every epoch trained (no held-out selection unless the recipe's validationFraction holds some of the K out)"
        }
        var bestEpochs: [Int] = []
        var histories: [[String: [Double]]] = []
        let allFolds = folds
        var draws: [(result: CrossValidationResult, baseline: CrossValidationResult, trainingClips: Int)] = []
        for draw in 0..<(options.labelsPerClass == nil ? 1 : options.draws) {
            if let k = options.labelsPerClass {
                folds = allFolds.enumerated().map { index, fold in
                    Fold(train: drawLabels(from: fold.train, labels: set.labels, perClass: k,
                                           seed: recipe.training.seed &+ 0xD1A5 &+ UInt64(draw) &* 7919 &+ UInt64(index)),
                         test: fold.test)
                }
                log("label draw \(draw + 1)/\(options.draws): \(k) labels per class, \(folds[0].train.count) training clips in fold 1")
            }
            bestEpochs = []
            histories = []
            guard let result = try crossValidateOnce(folds: folds, draw: draw, ranks: ranks, bestEpochs: &bestEpochs, histories: &histories) else { continue }
            draws.append((result, logisticRegressionBaseline(store: store, set: set, folds: folds), folds.map(\.train.count).reduce(0, +) / folds.count))
        }
        guard isRoot else { return nil }
        let (result, baseline, _) = draws[0]
        var summary = FinetuneSummary(
            runFolder: options.output.path, recipe: recipe.name, encoder: options.encoderPath ?? "random weights",
            classes: set.classNames, clips: set.count, groups: Set(set.groups).count, protocolDescription: protocolDescription,
            crossValidation: result, baseline: baseline, bestEpochs: bestEpochs, histories: histories,
            samplesPerSecond: Double(trainedSamples) / max(trainingSeconds, 1e-9), seconds: 0, classifier: nil, report: nil,
            warnings: [])
        if options.labelsPerClass != nil {
            summary.labelsPerClass = options.labelsPerClass
            summary.labelDraws = draws.enumerated().map { index, item in
                LabelDrawFigures(draw: index + 1, trainingClips: item.trainingClips,
                                 balancedAccuracy: item.result.pooled.balancedAccuracy, macroF1: item.result.pooled.macroF1,
                                 baselineBalancedAccuracy: item.baseline.pooled.balancedAccuracy,
                                 baselineMacroF1: item.baseline.pooled.macroF1)
            }
        }
        return try finish(summary, started: started)
    }

    /// One cross-validation over `folds` (finished folds saved per draw for --resume); nil on
    /// every rank but rank 0, which alone reads and writes the saved folds.
    func crossValidateOnce(folds: [Fold], draw: Int, ranks: Communicator?,
                           bestEpochs: inout [Int], histories: inout [[String: [Double]]]) throws -> CrossValidationResult? {
        let folder = options.labelsPerClass == nil ? "folds" : "folds/draw-\(draw + 1)"
        let saved = FoldRecords(folder: options.output.appendingPathComponent(folder), identity: runIdentity(folds: folds))
        let rank = ranks?.rank ?? 0
        // A saved fold of another run stops every rank, before any training.
        var records: [Int: FoldRecord] = try onEveryRank(ranks) {
            guard rank == 0 else { return [:] }
            guard options.resume else {
                try saved.discard()
                return [:]
            }
            var found: [Int: FoldRecord] = [:]
            for fold in folds.indices {
                guard let record = try saved.load(fold: fold) else { continue }
                log("fold \(fold + 1)/\(folds.count): finished by the interrupted run, reused from \(saved.path(fold: fold).path)")
                trainedSamples += record.trainedSamples
                trainingSeconds += record.trainingSeconds
                found[fold] = record
            }
            return found
        }
        var finished = records.keys.sorted()
        if let ranks { finished = try JSONDecoder().decode([Int].self, from: Data(ranks.broadcast(Array(JSONEncoder().encode(finished))))) }
        let remaining = folds.indices.filter { !finished.contains($0) }
        try dealOut(remaining, over: ranks, work: { try trainFold($0, of: folds, identity: saved.identity) }) { _, record, computedHere in
            try saved.save(record)
            records[record.fold] = record
            if !computedHere {
                trainedSamples += record.trainedSamples
                trainingSeconds += record.trainingSeconds
            }
        }
        guard rank == 0 else { return nil }
        bestEpochs = folds.indices.map { records[$0]!.bestEpoch }
        histories = folds.indices.map { records[$0]!.history }
        return crossValidate(set, folds: folds, method: recipe.name) { _, foldIndex in
            let byPosition = Dictionary(uniqueKeysWithValues: zip(records[foldIndex]!.testPositions, records[foldIndex]!.probabilities))
            return { positions in positions.map { byPosition[$0]! } }
        }
    }

    /// Trains fold `foldIndex` and predicts its test clips.
    func trainFold(_ foldIndex: Int, of folds: [Fold], identity: String) throws -> FoldRecord {
        let (train, test) = (folds[foldIndex].train, folds[foldIndex].test)
        log("fold \(foldIndex + 1)/\(folds.count): \(train.count) training clips")
        let (samplesBefore, secondsBefore) = (trainedSamples, trainingSeconds)
        let (model, batcher, best, epochRecords) = try trainModel(on: train, label: "fold \(foldIndex + 1)/\(folds.count)")
        return FoldRecord(identity: identity, fold: foldIndex, testPositions: test, probabilities: predict(model, test, batcher: batcher),
                          bestEpoch: best, history: Self.history(epochRecords),
                          trainedSamples: trainedSamples - samplesBefore, trainingSeconds: trainingSeconds - secondsBefore)
    }

    /// Warnings, the final classifier, the report files.
    func finish(_ summary: FinetuneSummary, started: Date) throws -> FinetuneSummary {
        var summary = summary
        let result = summary.crossValidation
        if !result.pooled.neverPredicted.isEmpty {
            summary.warnings.append("the model never predicted: \(result.pooled.neverPredicted.joined(separator: ", "))")
        }
        if result.pooled.chance.indistinguishableFromChance {
            summary.warnings.append(String(format: "pooled balanced accuracy %.3f is not distinguishable from chance (p = %.3f against shuffled answers)",
                                           result.pooled.balancedAccuracy, result.pooled.chance.balancedAccuracyPValue))
        }
        if result.pooled.balancedAccuracy > 0.9 {
            summary.warnings.append("balanced accuracy above 0.9 on this kind of data usually means leakage between train and test; check the groups")
        }
        if recipe.evaluation.trainFinalModel {
            // Every training clip (never a test store's), or K per class of them.
            let positions = options.labelsPerClass.map {
                drawLabels(from: trainingPositions, labels: set.labels, perClass: $0, seed: recipe.training.seed &+ 0xF1A1)
            } ?? trainingPositions
            log("final model on \(positions.count) clips")
            let (model, batcher, _, _) = try trainModel(on: positions, label: "final")
            let path = options.output.appendingPathComponent("classifier.h5").path
            var metadata = CheckpointMetadata(frontEnd: store.frontEnd, normalization: NormalizationStats(mean: batcher.mean, std: batcher.std),
                                              classNames: set.classNames, recipe: recipeText, epoch: recipe.training.epochs,
                                              history: [:], frozenLayers: model.layers.filter { !$0.trainable }.map(\.name))
            metadata.bestMetric = result.pooled.balancedAccuracy
            try Checkpoint.save(model, metadata: metadata, to: path)
            summary.classifier = path
        }
        summary.seconds = Date().timeIntervalSince(started)
        summary.report = try writeReport(summary)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var compact = summary
        compact.crossValidation.probabilities = []
        compact.baseline.probabilities = []
        try encoder.encode(compact).write(to: options.output.appendingPathComponent("report.json"), options: .atomic)
        return summary
    }

    /// What a saved fold must have been computed from to be reused: recipe, encoder, clips, folds.
    func runIdentity(folds: [Fold]) -> String {
        var text = recipeText + "\n--encoder " + (options.encoderPath ?? "random weights")
        text += "\n--clips " + set.indices.map { store.paths[$0] }.joined(separator: "|")
        text += "\n--labels " + set.labels.map(String.init).joined(separator: ",")
        text += "\n--folds " + folds.map { $0.test.map(String.init).joined(separator: ",") }.joined(separator: ";")
        if options.labelsPerClass != nil {
            text += "\n--drawn " + folds.map { $0.train.map(String.init).joined(separator: ",") }.joined(separator: ";")
        }
        return text
    }

    /// Trains one classifier on the set positions `train` (a grouped share held out for model
    /// selection); returns it with its batcher, the selected epoch (1-based) and every epoch's record.
    /// `epochs` overrides the recipe's (the label curve trains small draws for a bounded number of steps).
    func trainModel(on train: [Int], label: String, epochs: Int? = nil) throws -> (Model, SpectrogramBatcher, Int, [EpochRecord]) {
        var training = recipe.training
        if let epochs { training.epochs = epochs }
        let (fit, validation) = training.validationFraction > 0
            ? groupedHoldout(groups: set.groups, indices: train, fraction: training.validationFraction, seed: training.seed)
            : (train, [])
        let stats = normalization ?? SpectrogramBatcher.statistics(of: store, indices: fit.map { set.indices[$0] })
        let batcher = SpectrogramBatcher(store: store, frames: inputFrames, mean: stats.mean, std: stats.std)
        let classes = set.classNames.count
        let configuration = ClassifierConfiguration(encoder: encoderConfiguration, encoderLevels: recipe.encoderLevels,
                                                    head: recipe.head.configuration, classes: classes, seed: training.seed)
        let model = try Model.classifier(configuration)
        model.context = options.context
        if let pretrained {
            let names = Set(pretrained.layers.map(\.name))
            try model.copyWeights(from: pretrained, layerNames: model.layers.map(\.name).filter { names.contains($0) })
        }
        if recipe.freeze.blocks > 0 { model.freeze(encoderBlocks: 0..<recipe.freeze.blocks) }
        if !recipe.freeze.layers.isEmpty { try model.freeze(layersNamed: recipe.freeze.layers) }

        var counts = [Double](repeating: 0, count: classes)
        for position in fit { counts[set.labels[position]] += 1 }
        let weights: [Float]? = recipe.imbalance.classWeights == .balanced
            ? counts.map { Float(Double(fit.count) / (Double(classes) * max($0, 1))) } : nil
        let loop = TrainingLoop(model: model, training: training, clips: fit.count, selection: .highestBalancedAccuracy)
        var generator = SeededGenerator(seed: training.seed &+ UInt64(train.count) &* 0x9E37_79B9)
        var bestWeights: [Tensor]?
        try loop.run(
            beginEpoch: { epoch in
                if let unfreeze = recipe.freeze.unfreezeAtEpoch, epoch + 1 == unfreeze {
                    model.unfreezeAll()
                    loop.optimizer = training.optimizer.makeOptimizer(stepsPerEpoch: loop.stepsPerEpoch, epochs: training.epochs - epoch,
                                                                      multiplier: recipe.freeze.unfreezeLearningRateMultiplier)
                }
                return epochOrder(fit, using: &generator)
            },
            makeBatch: { trainingBatch($0, batcher: batcher, classes: classes, using: &generator) },
            computeGradients: { batch in
                model.accumulateGradients(input: batch.input) {
                    softmaxCrossEntropy(probabilities: $0, labels: batch.labels, classWeights: weights, labelSmoothing: recipe.imbalance.labelSmoothing)
                }
            },
            validate: { validation.isEmpty ? (nil, nil) : validationFigures(model, validation, batcher: batcher) },
            endEpoch: { record, isBest in
                if isBest { bestWeights = model.namedWeights.map { $0.parameter.value } }
                if !options.quiet {
                    log(String(format: "  %@ epoch %d/%d: train loss %.4f", label, record.epoch, training.epochs, record.trainLoss)
                        + (record.validationBalancedAccuracy.map { String(format: ", validation balanced accuracy %.3f, loss %.4f", $0, record.selectionLoss) } ?? ""))
                }
            })
        trainedSamples += loop.trainedSamples
        trainingSeconds += loop.trainingSeconds
        if let bestWeights {
            for ((_, parameter), value) in zip(model.namedWeights, bestWeights) { try parameter.assign(value) }
        }
        if recipe.evaluation.recalibrateBatchNormalization {
            let batches = stride(from: 0, to: fit.count, by: training.batchSize).map { start -> Tensor in
                var centre: SeededGenerator? = nil
                return batcher.inputs(fit[start..<min(start + training.batchSize, fit.count)].map { set.indices[$0] }, random: &centre)
            }
            model.recalibrateBatchNormalization(batches)
        }
        return (model, batcher, loop.best?.epoch ?? training.epochs, loop.history)
    }

    /// Model selection on the held-out sources: their mean cross-entropy and balanced accuracy.
    func validationFigures(_ model: Model, _ positions: [Int], batcher: SpectrogramBatcher) -> (loss: Double?, balancedAccuracy: Double?) {
        let probabilities = predict(model, positions, batcher: batcher)
        let truth = positions.map { set.labels[$0] }
        let accuracy = ClassificationReport(truth: truth, predicted: probabilities.map(argmax), classNames: set.classNames).balancedAccuracy
        let loss = zip(truth, probabilities).reduce(0.0) { $0 - Foundation.log(max($1.1[$1.0], 1e-12)) } / Double(truth.count)
        return (loss, accuracy)
    }

    /// A fold's history as report.json and the fold files keep it: train_loss, val_loss and
    /// val_balanced_accuracy per epoch. Without held-out sources the training loss stands in for
    /// the validation loss, and its negative for the balanced accuracy.
    static func history(_ records: [EpochRecord]) -> [String: [Double]] {
        ["train_loss": records.map(\.trainLoss), "val_loss": records.map(\.selectionLoss),
         "val_balanced_accuracy": records.map { $0.validationBalancedAccuracy ?? -$0.trainLoss }]
    }

    /// This epoch's training order: a shuffle, or class-balanced draws with replacement.
    func epochOrder(_ positions: [Int], using generator: inout SeededGenerator) -> [Int] {
        switch recipe.imbalance.sampling {
        case .shuffle:
            return positions.shuffled(using: &generator)
        case .balanced:
            var byClass: [Int: [Int]] = [:]
            for position in positions { byClass[set.labels[position], default: []].append(position) }
            let classes = byClass.keys.sorted()
            return (0..<positions.count).map { _ in
                let members = byClass[classes[Int.random(in: 0..<classes.count, using: &generator)]]!
                return members[Int.random(in: 0..<members.count, using: &generator)]
            }
        }
    }

    /// Augmented inputs and (soft, with mixup) one-hot labels of a training batch.
    func trainingBatch(_ batch: [Int], batcher: SpectrogramBatcher, classes: Int, using generator: inout SeededGenerator) -> (input: Tensor, labels: Tensor) {
        var crop: SeededGenerator? = generator
        var input = batcher.inputs(batch.map { set.indices[$0] }, random: &crop)
        generator = crop!
        var labels = Tensor(zeros: [batch.count, classes])
        for (row, position) in batch.enumerated() { labels.values[row * classes + set.labels[position]] = 1 }
        let augment = recipe.augment
        if augment.timeMasks.count > 0 || augment.frequencyMasks.count > 0 {
            var objective = ObjectiveRecipe()
            objective.timeMasks = augment.timeMasks
            objective.frequencyMasks = augment.frequencyMasks
            _ = SpectrogramBatcher.applyMasks(&input, objective: objective, using: &generator)
        }
        SpectrogramBatcher.addNoise(&input, std: augment.noise, using: &generator)
        if augment.mixup > 0 && batch.count > 1 {
            let size = input.count / batch.count
            let partners = Array(0..<batch.count).shuffled(using: &generator)
            let (mixedInput, mixedLabels) = (input, labels)
            for row in 0..<batch.count {
                let lambda = Float(sampleBeta(Double(augment.mixup), using: &generator))
                let other = partners[row]
                for i in 0..<size { input.values[row * size + i] = lambda * mixedInput.values[row * size + i] + (1 - lambda) * mixedInput.values[other * size + i] }
                for c in 0..<classes { labels.values[row * classes + c] = lambda * mixedLabels.values[row * classes + c] + (1 - lambda) * mixedLabels.values[other * classes + c] }
            }
        }
        return (input, labels)
    }

    /// Class probabilities for set positions (centre crops), in batches.
    func predict(_ model: Model, _ positions: [Int], batcher: SpectrogramBatcher) -> [[Double]] {
        batcher.predict(model, indices: positions.map { set.indices[$0] }, batchSize: recipe.training.batchSize)
            .rows.map { $0.map(Double.init) }
    }
}

/// A draw from Beta(alpha, alpha), from two Gamma draws (Marsaglia and Tsang, boosted below 1).
func sampleBeta(_ alpha: Double, using generator: inout SeededGenerator) -> Double {
    func gamma(_ shape: Double) -> Double {
        if shape < 1 {
            let u = max(Double.random(in: 0..<1, using: &generator), 1e-12)
            return gamma(shape + 1) * pow(u, 1 / shape)
        }
        let d = shape - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat {
                let u1 = max(Double.random(in: 0..<1, using: &generator), 1e-12), u2 = Double.random(in: 0..<1, using: &generator)
                x = (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = Double.random(in: 0..<1, using: &generator)
            if u < 1 - 0.0331 * x * x * x * x || log(max(u, 1e-300)) < 0.5 * x * x + d * (1 - v + log(v)) { return d * v }
        }
    }
    let a = gamma(alpha), b = gamma(alpha)
    return a / (a + b)
}

/// One finished cross-validation fold: what `--resume` needs to skip it.
struct FoldRecord: Codable {
    var identity: String
    var fold: Int
    var testPositions: [Int]
    var probabilities: [[Double]]
    var bestEpoch: Int
    var history: [String: [Double]]
    var trainedSamples: Int
    var trainingSeconds: Double
}

/// The `folds/` folder of a fine-tuning run: one JSON file per finished fold, written atomically.
struct FoldRecords {
    let folder: URL
    let identity: String

    func path(fold: Int) -> URL { folder.appendingPathComponent("fold-\(fold + 1).json") }

    func save(_ record: FoldRecord) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try JSONEncoder().encode(record).write(to: path(fold: record.fold), options: .atomic)
    }

    /// The saved fold, nil if there is none; an error if it belongs to a different run.
    func load(fold: Int) throws -> FoldRecord? {
        let url = path(fold: fold)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let record: FoldRecord
        do {
            record = try JSONDecoder().decode(FoldRecord.self, from: Data(contentsOf: url))
        } catch {
            throw RecipeError(file: url.path, message: "cannot be read (\(error)); delete it to train this fold again")
        }
        guard record.identity == identity else {
            throw RecipeError(file: url.path, message: "was saved by a run with another recipe, encoder, data or folds; resume only the same run, or give a new --output")
        }
        return record
    }

    func discard() throws {
        if FileManager.default.fileExists(atPath: folder.path) { try FileManager.default.removeItem(at: folder) }
    }
}
