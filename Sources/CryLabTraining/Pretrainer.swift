import CryLabCore
import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabMPI
import CryLabNN
import CryLabOneDNN
import Foundation

/// How one `crylab pretrain` run is carried out (the recipe says what is trained).
public struct PretrainOptions: Sendable {
    /// Run folder: `last.h5`, `best.h5`, `encoder.h5`, history and report go here.
    public var output: URL
    /// Stop after this many optimisation steps (for timing); no checkpoint is written then.
    public var maxSteps: Int?
    /// Continue from `output/last.h5`.
    public var resume = false
    public var quiet = false
    /// A labeled feature store for the linear probe (same front end as the training data).
    public var probe: FeatureStore?
    public var probeClasses: [String]?
    /// What the probe predicts: the class folders, or the age or gender in Donate-a-Cry file names.
    public var probeTarget = LabelSource.folder
    public var probeFolds = 5

    /// Precision, threads and kernels for every model of the run.
    public var context: ComputeContext = .default

    /// On several MPI ranks: the size of the buckets in which gradients are summed (4 MB by
    /// default), and whether each bucket's allreduce starts as soon as the backward pass has
    /// finished its layers (true) or all after the backward pass.
    public var allreduceBucketBytes = 4 << 20
    public var overlapsAllreduce = true
    /// With overlap: how often a thread runs MPI's progress engine while buckets are pending
    /// (nil: no thread; they then move only when the backward pass calls into MPI).
    public var progressInterval: Duration? = .milliseconds(1)

    public init(output: URL) { self.output = output }
}

/// What a pretraining run did, for people (`text`) and programs (JSON).
public struct PretrainSummary: Codable, Sendable {
    public var runFolder: String
    public var epochs: Int
    public var steps: Int
    public var trainingClips: Int
    public var validationClips: Int
    public var parameters: Int
    /// Training samples per second over the optimisation steps alone (no validation, no I/O),
    /// leaving out the run's first step unless it is the only one.
    public var samplesPerSecond: Double
    /// The run's first optimisation step: kernel creation, first allocations and, with
    /// `--precision fast`, timing the candidate kernels of every convolution not in the kept choices.
    public var firstStepSeconds: Double?
    /// With `--precision fast`: what the training steps ran in after the first step's whole-step
    /// decision ("fast" for the per-pass choices, else one precision throughout); nil otherwise.
    public var fastModeSteps: String?
    public var secondsPerEpoch: Double?
    public var trainLoss: Double?
    public var validationLoss: Double?
    public var bestValidationLoss: Double?
    /// Validation reconstruction error with every skip connection cut: what the bottleneck learned.
    public var validationLossWithoutSkips: Double?
    public var checkpoint: String?
    public var encoder: String?
    public var report: String?
    public var probe: ProbeResult?
    public var interrupted: Bool
    /// On several MPI ranks: how the gradients were summed and what that cost rank 0.
    public var allreduce: AllreduceSummary?
}

/// Balanced accuracy of a linear probe on pooled encoder features, pretrained against random weights.
public struct ProbeResult: Codable, Sendable {
    public var target: LabelSource
    public var classes: [String]
    public var folds: Int
    public var pretrained: ClassificationReport
    public var randomWeights: ClassificationReport
    /// Whether the pretrained encoder's answers beat the random weights' on the same clips.
    public var pretrainedVersusRandom: PairedComparison
    /// The pretrained encoder's out-of-fold answer (class index) for every clip of the probe, in
    /// the store's order: for comparing encoders on the same clips.
    public var pretrainedAnswers: [Int]
}

/// Self-supervised pretraining of a U-Net autoencoder on stored spectrograms.
public final class Pretrainer {
    public let recipe: PretrainRecipe
    public let recipeText: String
    public let store: FeatureStore
    public let options: PretrainOptions
    /// The ranks of a data-parallel run (more than one); nil in one process.
    public let ranks: DataParallelRanks?
    let log: (String) -> Void

    /// - Parameter ranks: with more than one rank, this process trains its share of every batch
    ///   (see `DataParallelRanks`); `store` then holds the clips' metadata and no spectrograms,
    ///   which every rank reads through `ranks.reader`: its shares of each epoch's batches, and on
    ///   rank 0 the training clips a chunk at a time for the statistics and the validation clips.
    public init(recipe: PretrainRecipe, recipeText: String, store: FeatureStore, options: PretrainOptions,
                ranks: DataParallelRanks? = nil,
                log: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws {
        guard store.mels == recipe.frontEnd.nMels else {
            throw RecipeError(file: recipe.path, message: "key 'frontEnd.nMels': \(recipe.frontEnd.nMels), but the data has \(store.mels) mel bands; make the feature store with this front end")
        }
        guard store.frontEnd == recipe.frontEnd else {
            throw RecipeError(file: recipe.path, message: "key 'frontEnd': the feature store was made with another front end (\(describeDifference(store.frontEnd, recipe.frontEnd))); re-run `crylab features` with this front end, or give audio folders")
        }
        self.recipe = recipe
        self.recipeText = recipeText
        self.store = store
        self.options = options
        self.ranks = ranks.flatMap { $0.size > 1 ? $0 : nil }
        self.log = log
    }

    var modelFrames: Int { recipe.model.frames ?? store.frames }

    public func run() throws -> PretrainSummary {
        let training = recipe.training
        let isRoot = ranks?.isRoot ?? true
        if isRoot {
            try FileManager.default.createDirectory(at: options.output, withIntermediateDirectories: true)
            for path in Checkpoint.removeStaleTemporaries(in: options.output.path) { log("removed the stray temporary file \(path)") }
        }
        let all = Array(0..<store.count)
        let (trainIndices, validationIndices) = training.validationFraction > 0
            ? groupedHoldout(groups: store.groups, indices: all, fraction: training.validationFraction, seed: training.seed)
            : (all, [])
        guard !trainIndices.isEmpty else {
            throw RecipeError(file: recipe.path, message: "key 'training.validationFraction': \(training.validationFraction) leaves no training clips of the data's \(store.count)")
        }
        var normalization = (mean: Float(0), std: Float(1))
        if recipe.normalize {
            if let ranks {
                // Each rank sums a contiguous part of the training clips; rank 0 adds the parts in
                // rank order: the one-process statistics but for the order of the Double sums.
                let part = Array(trainIndices[ranks.share(of: trainIndices.count)])
                let sums = try SpectrogramBatcher.sums(reading: ranks.reader, indices: part)
                let total = (sum: try ranks.sumInRankOrder(sums.sum).sum, squares: try ranks.sumInRankOrder(sums.squares).sum)
                normalization = SpectrogramBatcher.statistics(total, values: trainIndices.count * store.mels * store.frames)
            } else {
                normalization = SpectrogramBatcher.statistics(of: store, indices: trainIndices)
            }
        }
        let stats = normalization
        let batcher = SpectrogramBatcher(store: store, frames: modelFrames, mean: stats.mean, std: stats.std)
        // What validation and the report read: in one process the whole store. On several ranks,
        // a store of this rank's validation batches (see `evaluate`), and on rank 0 after them
        // the report's three clips (validation clips, or training clips without them); `held`
        // then gives the report's clips by their rows in that store.
        var held = (batcher: batcher, validation: validationIndices, training: trainIndices)
        if let ranks {
            let mine = ranks.validationClips(of: validationIndices, batchSize: training.batchSize)
            let shown = !isRoot ? [] : Array((validationIndices.isEmpty ? trainIndices : validationIndices).prefix(3))
            let clips = try ranks.reader.store(clips: mine + shown)
            let shownRows = Array(mine.count..<clips.count)
            held = (SpectrogramBatcher(store: clips, frames: modelFrames, mean: stats.mean, std: stats.std),
                    validationIndices.isEmpty ? [] : shownRows, validationIndices.isEmpty ? shownRows : [])
        }
        let configuration = try recipe.modelConfiguration(mels: store.mels, frames: store.frames)
        let model = try Model.uNet(configuration)
        model.context = options.context
        let invarianceEncoder = recipe.objective.invariance.weight > 0 ? sharedEncoder(of: model, configuration: configuration) : nil
        let loop = TrainingLoop(model: model, training: training, clips: trainIndices.count, selection: .lowestLoss)
        loop.maxSteps = options.maxSteps
        loop.showsProgress = !options.quiet && isRoot
        let lastPath = options.output.appendingPathComponent("last.h5").path
        let bestPath = options.output.appendingPathComponent("best.h5").path
        if options.resume {
            let saved = try Checkpoint.load(lastPath)
            guard saved.model.configuration == model.configuration else {
                throw RecipeError(file: lastPath, message: "was trained with another model configuration; resume with the recipe it was started with")
            }
            _ = try model.copyWeights(from: saved.model)
            if let state = saved.optimizer { try restoreOptimizer(loop.optimizer, from: state, for: model) }
            loop.history = Self.records(saved.metadata.history)
            log("resuming \(lastPath) after epoch \(loop.history.count)")
        }
        let firstEpoch = loop.history.count

        log("pretraining: \(trainIndices.count) training and \(validationIndices.count) validation clips, "
            + "\(model.parameterCount) parameters, input \(store.mels)x\(modelFrames), \(loop.stepsPerEpoch) steps per epoch")
        let interrupt = InterruptFlag()
        // On several ranks each listens for SIGINT, SIGTERM (which mpirun sends its ranks on
        // Ctrl-C, and Slurm on scancel) and SIGUSR1 (which mpirun passes on); the ranks may get
        // it at different steps, so they agree in each step's loss exchange (`agreed`) and all
        // stop after the same step.
        let agreed = InterruptFlag()
        if ranks == nil {
            interrupt.install()
            loop.interrupt = interrupt
        } else {
            interrupt.install(signals: [SIGINT, SIGTERM, SIGUSR1], announces: false)
            loop.interrupt = agreed
        }
        defer { interrupt.uninstall() }
        let buckets = ranks.map {
            GradientBuckets(communicator: $0.communicator, bucketBytes: options.allreduceBucketBytes, overlaps: options.overlapsAllreduce,
                            progressInterval: options.progressInterval)
        }
        if let ranks, let buckets {
            // The invariance encoder's layers take more gradient in its backward pass, after the
            // U-Net's: their buckets wait for that one.
            let shared = Set(invarianceEncoder?.layers.map(ObjectIdentifier.init) ?? [])
            model.afterLayerBackward = { layer in
                if !shared.contains(ObjectIdentifier(layer)) { ranks.orAbort { try buckets.layerFinished(layer) } }
            }
            invarianceEncoder?.afterLayerBackward = { layer in ranks.orAbort { try buckets.layerFinished(layer) } }
            if recipe.model.syncBatchNorm {
                let sum = RanksSum(ranks)
                for case let norm as BatchNormalization in model.layers { norm.synchronization = sum }
            }
            loop.reduceGradients = { parameters in ranks.orAbort { try buckets.finish(parameters) } }
        }

        var generator = SeededGenerator(seed: training.seed)  // replaced at the start of every epoch
        // A rank other than 0: the spectrograms of this epoch's clips it needs, and each clip's row.
        var epochFeatures: [Float] = []
        var epochRows: [Int: Int] = [:]
        let clipSize = store.mels * store.frames
        let stop = try loop.run(
            beginEpoch: { epoch in
                generator = SeededGenerator(seed: training.seed &+ 0x9E37_79B9 &* UInt64(epoch + 1))
                let order = trainIndices.shuffled(using: &generator)
                if let ranks {
                    let clips = Array(Set(ranks.neededPositions(of: order, batchSize: training.batchSize).map { order[$0] })).sorted()
                    epochFeatures = try ranks.reader.features(of: clips)
                    epochRows = Dictionary(uniqueKeysWithValues: clips.enumerated().map { ($1, $0) })
                }
                return order
            },
            makeBatch: { (clips: [Int]) -> PretrainBatch in
                if let ranks {
                    return self.shareOfBatch(clips, ranks: ranks, stats: stats, views: invarianceEncoder != nil && clips.count >= 2,
                                             generator: &generator) { clip in
                        epochFeatures[(epochRows[clip]! * clipSize)..<((epochRows[clip]! + 1) * clipSize)]
                    }
                }
                let (input, target, mask) = makeBatch(clips, batcher: batcher, generator: &generator, training: true)
                let views = invarianceEncoder == nil || clips.count < 2 ? nil : makeViews(clips, batcher: batcher, generator: &generator)
                return PretrainBatch(input: input, target: target, mask: mask, views: views, denominator: nil)
            },
            computeGradients: { batch in
                if let ranks, let buckets {
                    // This rank's part of the batch's loss; the ranks' parts add up to it. The
                    // backward pass starts summing the gradients bucket by bucket.
                    buckets.beginStep(model)
                    var part = 0.0
                    if batch.input.shape[0] == 0 {
                        model.joinTrainingStepWithoutRows()
                    } else {
                        part = model.accumulateGradients(input: batch.input) {
                            meanSquaredError(prediction: $0, target: batch.target, mask: batch.mask, denominator: batch.denominator)
                        }
                    }
                    if let views = batch.views, let invarianceEncoder {
                        part += ranks.orAbort { try accumulateInvarianceGradients(views: views, encoder: invarianceEncoder, ranks: ranks) }
                    }
                    return ranks.orAbort {
                        try buckets.startRemaining()
                        let (loss, stopping) = try ranks.sumInRankOrder(part, stopping: interrupt.isRaised)
                        if stopping && !agreed.isRaised {
                            agreed.raise()
                            if isRoot { FileHandle.standardError.write(Data("\ninterrupted: every rank stops after this step; rank 0 saves a checkpoint\n".utf8)) }
                        }
                        return loss
                    }
                }
                let reconstruction = model.accumulateGradients(input: batch.input) {
                    meanSquaredError(prediction: $0, target: batch.target, mask: batch.mask)
                }
                guard let views = batch.views, let invarianceEncoder else { return reconstruction }
                return reconstruction + accumulateInvarianceGradients(views: views, encoder: invarianceEncoder)
            },
            validate: { (evaluate(model, validationIndices, batcher: held.batcher, ranks: ranks), nil) },
            endEpoch: { record, isBest in
                guard isRoot else { return }
                let metadata = self.metadata(loop, stats: stats)
                try Checkpoint.save(model, metadata: metadata, optimizer: optimizerState(loop.optimizer, for: model), to: lastPath)
                if isBest { try Checkpoint.save(model, metadata: metadata, optimizer: nil, to: bestPath) }
                try writeHistory(loop.history)
                log(String(format: "epoch %d/%d: train loss %.5f, validation loss %@, %.1f s%@", record.epoch, training.epochs,
                           record.trainLoss, record.validationLoss.map { String(format: "%.5f", $0) } ?? "n/a",
                           record.seconds, isBest ? " (best)" : ""))
            })
        if stop == .earlyStopping { log("early stopping: no improvement for \(training.earlyStoppingPatience ?? 0) epochs") }

        let history = loop.history
        var summary = PretrainSummary(
            runFolder: options.output.path, epochs: history.count, steps: loop.steps, trainingClips: trainIndices.count,
            validationClips: validationIndices.count, parameters: model.parameterCount,
            samplesPerSecond: loop.samplesPerSecond, firstStepSeconds: loop.firstStep?.seconds,
            fastModeSteps: model.context.precision == .fast ? (model.wholeStepPrecision(training: true)?.rawValue ?? "fast") : nil,
            secondsPerEpoch: history.isEmpty ? nil : history.map(\.seconds).reduce(0, +) / Double(history.count),
            trainLoss: history.last?.trainLoss, validationLoss: history.last?.validationLoss.flatMap { $0.isNaN ? nil : $0 },
            bestValidationLoss: loop.best?.selectionLoss, validationLossWithoutSkips: nil, checkpoint: nil, encoder: nil,
            report: nil, probe: nil, interrupted: stop == .interrupted, allreduce: buckets?.summary)
        if options.maxSteps != nil && history.count == firstEpoch { return summary }
        if stop == .interrupted {
            guard isRoot else { return summary }
            let path = options.output.appendingPathComponent("interrupted.h5").path
            try Checkpoint.save(model, metadata: metadata(loop, stats: stats), optimizer: optimizerState(loop.optimizer, for: model), to: path)
            summary.checkpoint = path
            log("saved \(path); `--resume` continues from last.h5 (the last complete epoch)")
            return summary
        }
        model.zeroSkipConnections(true)
        summary.validationLossWithoutSkips = evaluate(model, validationIndices, batcher: held.batcher, ranks: ranks)
        model.zeroSkipConnections(false)
        // Rank 0 alone writes the encoder and the report; the others are done.
        guard isRoot else { return summary }
        summary.checkpoint = lastPath

        let encoderPath = options.output.appendingPathComponent("encoder.h5").path
        let encoder = try exportEncoder(from: model, configuration: configuration)
        try Checkpoint.save(encoder, metadata: metadata(loop, stats: stats), to: encoderPath)
        summary.encoder = encoderPath
        if let probeStore = options.probe {
            summary.probe = try linearProbe(encoder: encoder, configuration: configuration, probeStore: probeStore, stats: stats)
        }
        summary.report = try writeReport(model: model, summary: summary, history: history, validation: held.validation,
                                         training: held.training, batcher: held.batcher)
        return summary
    }

    /// This rank's rows of the global batch `clips`, with the draws of the one-process run: the
    /// whole batch is made, the clips this rank does not need left as zeros (no draw depends on
    /// the values), and the rank's rows kept. `denominator` is the whole batch's loss denominator
    /// (masked cells with a masked loss, else elements), as `meanSquaredError` computes it.
    func shareOfBatch(_ clips: [Int], ranks: DataParallelRanks, stats: (mean: Float, std: Float), views: Bool, generator: inout SeededGenerator,
                      spectrogram: (Int) -> ArraySlice<Float>) -> PretrainBatch {
        let clipSize = store.mels * store.frames
        let mine = ranks.share(of: clips.count)
        var needed = Array(mine)
        if !mine.isEmpty && clips.count > 1 { needed.append(mine.upperBound % clips.count) }
        var values = [Float](repeating: 0, count: clips.count * clipSize)
        for position in needed {
            let source = spectrogram(clips[position])
            values.withUnsafeMutableBufferPointer { target in
                for (offset, value) in source.enumerated() { target[position * clipSize + offset] = value }
            }
        }
        var batchStore = store
        batchStore.features = values
        let batcher = SpectrogramBatcher(store: batchStore, frames: modelFrames, mean: stats.mean, std: stats.std)
        let (input, target, mask) = makeBatch(Array(0..<clips.count), batcher: batcher, generator: &generator, training: true)
        var denominator = Double(target.count)
        if let mask {
            denominator = 0
            for weight in mask.values { denominator += Double(weight) }
        }
        // The views' draws follow the batch's, as in one process; this rank keeps its clips'
        // first views, then their second views.
        let shareViews = views ? makeViews(Array(0..<clips.count), batcher: batcher, generator: &generator) : nil
        return PretrainBatch(input: rows(input, mine), target: rows(target, mine), mask: mask.map { rows($0, mine) },
                             views: shareViews.map { concatenateRows(rows($0, mine), rows($0, (mine.lowerBound + clips.count)..<(mine.upperBound + clips.count))) },
                             denominator: max(denominator, mask == nil ? 1 : 1e-12))
    }

    /// Input, reconstruction target and loss mask of one batch.
    func makeBatch(_ batch: [Int], batcher: SpectrogramBatcher, generator: inout SeededGenerator, training: Bool) -> (Tensor, Tensor, Tensor?) {
        var crop: SeededGenerator? = training ? generator : nil
        var input = batcher.inputs(batch, random: &crop)
        if training, let advanced = crop { generator = advanced }
        if training {
            SpectrogramBatcher.shiftClips(&input, gainDB: recipe.objective.gainDB, timeShift: recipe.objective.timeShift,
                                          frequencyShift: recipe.objective.frequencyShift,
                                          std: batcher.std, using: &generator)
        }
        let target = input
        if training {
            SpectrogramBatcher.mixClips(&input, mixing: recipe.objective.mixing, mean: batcher.mean, std: batcher.std, using: &generator)
        }
        var mask: Tensor?
        if recipe.objective.masks { mask = SpectrogramBatcher.applyMasks(&input, objective: recipe.objective, using: &generator) }
        if training { SpectrogramBatcher.addNoise(&input, std: recipe.objective.noise, using: &generator) }
        return (input, target, recipe.objective.loss == .masked ? mask : nil)
    }

    /// Two augmented views of every clip for the invariance term, stacked: [2 * batch, mels, frames, 1].
    /// Each is a training input as `makeBatch` makes it, with its own crop, shifts, mixing and masks.
    func makeViews(_ batch: [Int], batcher: SpectrogramBatcher, generator: inout SeededGenerator) -> Tensor {
        let first = makeBatch(batch, batcher: batcher, generator: &generator, training: true).0
        let second = makeBatch(batch, batcher: batcher, generator: &generator, training: true).0
        return concatenateRows(first, second)
    }

    /// The invariance term's share of a step: the two views through the shared encoder, its
    /// backward pass adding into the U-Net's gradients. Returns the weighted term.
    func accumulateInvarianceGradients(views: Tensor, encoder: Model) -> Double {
        let invariance = recipe.objective.invariance
        let contrast = viewContrastiveLoss(features: encoder.forward(views, training: true), temperature: invariance.temperature)
        backpropagateInvariance(contrast.gradient, encoder: encoder)
        return invariance.weight * contrast.value
    }

    /// The invariance term's gradient of the views' features, weighted, back through `encoder`.
    func backpropagateInvariance(_ featureGradient: Tensor, encoder: Model) {
        var gradient = featureGradient
        let scale = Float(recipe.objective.invariance.weight)
        for i in gradient.values.indices { gradient.values[i] *= scale }
        encoder.backward(.output(gradient))
    }

    /// The invariance term's share of a step on one of several ranks. `views` holds this rank's
    /// clips' first views, then their second views (none when its share is empty). The loss
    /// compares every view of the global batch with every other, so the ranks gather the views'
    /// embeddings (channel means, a few hundred numbers per clip) in the global order, and each
    /// computes the whole term and its gradient, identical everywhere, then back-propagates its
    /// own rows. Returns the weighted term on rank 0 and 0 on the others, so that the ranks'
    /// parts add up to it once.
    func accumulateInvarianceGradients(views: Tensor, encoder: Model, ranks: DataParallelRanks) throws -> Double {
        let invariance = recipe.objective.invariance
        let own = views.shape[0] / 2
        var features: Tensor?
        if own > 0 { features = encoder.forward(views, training: true) } else { encoder.joinForwardWithoutRows() }
        let embeddings = features.map(viewEmbeddings) ?? []
        let (all, counts) = try ranks.gatherViewEmbeddings(embeddings)
        let contrast = viewContrastiveLoss(embeddings: all, temperature: invariance.temperature)
        if let features {
            // This rank's rows of the global order: its first views, then its second views.
            let before = counts[..<ranks.rank].reduce(0, +), clips = counts.reduce(0, +)
            let mine = Array(before..<(before + own)) + Array((clips + before)..<(clips + before + own))
            backpropagateInvariance(viewFeatureGradient(mine.map { contrast.gradient[$0] }, shape: features.shape), encoder: encoder)
        } else {
            encoder.joinBackwardWithoutRows()
        }
        return ranks.isRoot ? invariance.weight * contrast.value : 0
    }

    /// Mean validation loss of the clips `indices`, with the same masks every epoch; nil without
    /// validation clips. On several ranks the batches are dealt out, batch k to rank k mod N:
    /// `batcher` holds this rank's batches' clips in order (`DataParallelRanks.validationClips`),
    /// every rank makes the mask draws of every batch (on zeros for the others' batches), so each
    /// batch has its one-process masks, and the ranks' sums are added in rank order: the
    /// one-process figure but for the order of a few Double sums.
    func evaluate(_ model: Model, _ indices: [Int], batcher: SpectrogramBatcher, ranks: DataParallelRanks? = nil) -> Double? {
        guard !indices.isEmpty else { return nil }
        let batchSize = recipe.training.batchSize
        var generator = SeededGenerator(seed: recipe.training.seed ^ 0x7A11_DA7E)
        // On several ranks, what the others' batches are made from for their draws: zeros.
        let others = ranks.map { _ in
            var zeros = batcher.store
            zeros.features = [Float](repeating: 0, count: min(batchSize, indices.count) * zeros.mels * zeros.frames)
            return SpectrogramBatcher(store: zeros, frames: batcher.frames, mean: batcher.mean, std: batcher.std)
        }
        var total = 0.0
        var row = 0
        for (number, start) in stride(from: 0, to: indices.count, by: batchSize).enumerated() {
            let batch = Array(indices[start..<min(start + batchSize, indices.count)])
            if let ranks, let others, number % ranks.size != ranks.rank {
                _ = makeBatch(Array(batch.indices), batcher: others, generator: &generator, training: false)
                continue
            }
            let clips = ranks == nil ? batch : Array(row..<(row + batch.count))
            row += batch.count
            let (input, target, mask) = makeBatch(clips, batcher: batcher, generator: &generator, training: false)
            total += meanSquaredError(prediction: model.predict(input), target: target, mask: mask).value * Double(batch.count)
        }
        if let ranks { total = ranks.orAbort { try ranks.sumInRankOrder(total).sum } }
        return total / Double(indices.count)
    }

    func metadata(_ loop: TrainingLoop, stats: (mean: Float, std: Float)) -> CheckpointMetadata {
        CheckpointMetadata(frontEnd: store.frontEnd, normalization: NormalizationStats(mean: stats.mean, std: stats.std),
                           classNames: [], recipe: recipeText, epoch: loop.history.count, step: loop.steps, randomState: [],
                           bestMetric: loop.best?.selectionLoss, history: Self.history(loop.history), frozenLayers: [])
    }

    /// The history as checkpoints and history.json keep it: train_loss, val_loss (with validation clips), seconds.
    static func history(_ records: [EpochRecord]) -> [String: [Double]] {
        ["train_loss": records.map(\.trainLoss), "val_loss": records.compactMap(\.validationLoss), "seconds": records.map(\.seconds)]
    }

    /// The records of a checkpoint's history, for `--resume`.
    static func records(_ history: [String: [Double]]) -> [EpochRecord] {
        let train = history["train_loss"] ?? [], validation = history["val_loss"] ?? [], seconds = history["seconds"] ?? []
        return train.indices.map {
            EpochRecord(epoch: $0 + 1, trainLoss: train[$0], validationLoss: $0 < validation.count ? validation[$0] : nil,
                        seconds: $0 < seconds.count ? seconds[$0] : 0)
        }
    }

    /// The encoder levels of the trained U-Net (all but the bottleneck), with its weights.
    func exportEncoder(from model: Model, configuration: UNetConfiguration) throws -> Model {
        let encoder = try Model.encoder(configuration, levels: configuration.depth)
        encoder.context = model.context
        try encoder.copyWeights(from: model, layerNames: encoder.layers.map(\.name))
        return encoder
    }

    func writeHistory(_ records: [EpochRecord]) throws {
        var csv = "epoch,train_loss,val_loss,seconds\n"
        for record in records {
            csv += "\(record.epoch),\(record.trainLoss),\(record.validationLoss.map { "\($0)" } ?? ""),\(record.seconds)\n"
        }
        try Data(csv.utf8).write(to: options.output.appendingPathComponent("history.csv"), options: .atomic)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(Self.history(records).mapValues { $0.map { $0.isFinite ? $0 : -1 } })
            .write(to: options.output.appendingPathComponent("history.json"), options: .atomic)
    }
}

/// One step's input, target and loss mask, the invariance views, and (on MPI ranks) the whole
/// batch's loss denominator.
struct PretrainBatch {
    var input: Tensor
    var target: Tensor
    var mask: Tensor?
    var views: Tensor?
    var denominator: Double?
}

/// Names the fields in which two front ends differ.
func describeDifference(_ a: FrontEnd, _ b: FrontEnd) -> String {
    var differences: [String] = []
    if a.sampleRate != b.sampleRate { differences.append("sampleRate \(a.sampleRate) vs \(b.sampleRate)") }
    if a.nFFT != b.nFFT { differences.append("nFFT \(a.nFFT) vs \(b.nFFT)") }
    if a.resolvedHopLength != b.resolvedHopLength { differences.append("hopLength \(a.resolvedHopLength) vs \(b.resolvedHopLength)") }
    if a.nMels != b.nMels { differences.append("nMels \(a.nMels) vs \(b.nMels)") }
    if a.toDB != b.toDB { differences.append("toDB \(a.toDB) vs \(b.toDB)") }
    if a.frames != b.frames { differences.append("frames \(a.frames.map(String.init) ?? "all") vs \(b.frames.map(String.init) ?? "all")") }
    return differences.isEmpty ? "other parameters differ" : differences.joined(separator: ", ")
}
