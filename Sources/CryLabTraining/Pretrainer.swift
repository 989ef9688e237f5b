import CryLabCore
import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabNN
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
    let log: (String) -> Void

    public init(recipe: PretrainRecipe, recipeText: String, store: FeatureStore, options: PretrainOptions,
                log: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws {
        guard store.mels == recipe.frontEnd.nMels else {
            throw RecipeError(file: "recipe", message: "key 'frontEnd': the data has \(store.mels) mel bands, the recipe \(recipe.frontEnd.nMels); make the feature store with the recipe's front end")
        }
        guard store.frontEnd == recipe.frontEnd else {
            throw RecipeError(file: "recipe", message: "key 'frontEnd': the feature store was made with another front end (\(describeDifference(store.frontEnd, recipe.frontEnd))); re-run `crylab features` with the recipe's preset, or give audio folders")
        }
        self.recipe = recipe
        self.recipeText = recipeText
        self.store = store
        self.options = options
        self.log = log
    }

    var modelFrames: Int { recipe.model.frames ?? store.frames }

    public func run() throws -> PretrainSummary {
        let training = recipe.training
        try FileManager.default.createDirectory(at: options.output, withIntermediateDirectories: true)
        for path in Checkpoint.removeStaleTemporaries(in: options.output.path) { log("removed the stray temporary file \(path)") }
        let all = Array(0..<store.count)
        let (trainIndices, validationIndices) = training.validationFraction > 0
            ? groupedHoldout(groups: store.groups, indices: all, fraction: training.validationFraction, seed: training.seed)
            : (all, [])
        guard !trainIndices.isEmpty else { throw RecipeError(file: "recipe", message: "no training clips left after the validation split") }
        let stats = recipe.normalize ? SpectrogramBatcher.statistics(of: store, indices: trainIndices) : (mean: Float(0), std: Float(1))
        let batcher = SpectrogramBatcher(store: store, frames: modelFrames, mean: stats.mean, std: stats.std)
        let configuration = try recipe.model.configuration(mels: store.mels, frames: modelFrames, seed: training.seed)
        let model = try Model.uNet(configuration)
        let invarianceEncoder = recipe.objective.invariance.weight > 0 ? sharedEncoder(of: model, configuration: configuration) : nil
        let stepsPerEpoch = (trainIndices.count + training.batchSize - 1) / training.batchSize
        let optimizer = training.optimizer.makeOptimizer(stepsPerEpoch: stepsPerEpoch, epochs: training.epochs)

        var history: [String: [Double]] = ["train_loss": [], "val_loss": [], "seconds": []]
        var firstEpoch = 0
        var best = Double.infinity
        let lastPath = options.output.appendingPathComponent("last.h5").path
        let bestPath = options.output.appendingPathComponent("best.h5").path
        if options.resume {
            let saved = try Checkpoint.load(lastPath)
            guard saved.model.configuration == model.configuration else {
                throw RecipeError(file: lastPath, message: "was trained with another model configuration; resume with the recipe it was started with")
            }
            _ = try model.copyWeights(from: saved.model)
            if let state = saved.optimizer { try restoreOptimizer(optimizer, from: state, for: model) }
            firstEpoch = saved.metadata.epoch
            history = saved.metadata.history
            best = saved.metadata.bestMetric ?? .infinity
            log("resuming \(lastPath) after epoch \(firstEpoch)")
        }

        log("pretraining: \(trainIndices.count) training and \(validationIndices.count) validation clips, "
            + "\(model.parameterCount) parameters, input \(store.mels)x\(modelFrames), \(stepsPerEpoch) steps per epoch")
        let interrupt = InterruptFlag()
        interrupt.install()
        defer { interrupt.uninstall() }

        var steps = firstEpoch * stepsPerEpoch
        var trainedSamples = 0
        var trainingSeconds = 0.0
        var firstStep: (samples: Int, seconds: Double)?
        var completedEpochs = firstEpoch
        var interrupted = false
        var epochsWithoutImprovement = 0
        epochLoop: for epoch in firstEpoch..<training.epochs {
            let started = Date()
            var generator = SeededGenerator(seed: training.seed &+ 0x9E37_79B9 &* UInt64(epoch + 1))
            let order = trainIndices.shuffled(using: &generator)
            let progress = ProgressReporter(label: "epoch \(epoch + 1)/\(training.epochs)", total: order.count, quiet: options.quiet)
            var lossSum = 0.0
            var seen = 0
            for batchStart in stride(from: 0, to: order.count, by: training.batchSize) {
                let batch = Array(order[batchStart..<min(batchStart + training.batchSize, order.count)])
                let (input, target, lossMask) = makeBatch(batch, batcher: batcher, generator: &generator, training: true)
                let views = invarianceEncoder == nil || batch.count < 2 ? nil : makeViews(batch, batcher: batcher, generator: &generator)
                let stepStarted = Date()
                let loss: Double
                if let views, let invarianceEncoder {
                    loss = trainingStep(model, input: input, target: target, mask: lossMask, views: views,
                                        encoder: invarianceEncoder, optimizer: optimizer)
                } else {
                    loss = model.trainingStep(input: input, optimizer: optimizer, clipNorm: training.optimizer.clipNorm) { output in
                        meanSquaredError(prediction: output, target: target, mask: lossMask)
                    }
                }
                if firstStep == nil {
                    firstStep = (batch.count, Date().timeIntervalSince(stepStarted))
                } else {
                    trainingSeconds += Date().timeIntervalSince(stepStarted)
                    trainedSamples += batch.count
                }
                steps += 1
                lossSum += loss * Double(batch.count)
                seen += batch.count
                progress.advance(by: batch.count, note: String(format: "loss %.4f", lossSum / Double(seen))
                                 + (trainedSamples == 0 ? "" : String(format: " %.1f samples/s", Double(trainedSamples) / trainingSeconds)))
                if let maxSteps = options.maxSteps, steps - firstEpoch * stepsPerEpoch >= maxSteps { break epochLoop }
                if interrupt.isRaised { interrupted = true; break epochLoop }
            }
            progress.finish()
            let validationLoss = evaluate(model, validationIndices, batcher: batcher)
            history["train_loss", default: []].append(lossSum / Double(max(seen, 1)))
            // Without validation clips there is no validation loss to record (NaN cannot be stored in a checkpoint's JSON).
            if let validationLoss { history["val_loss", default: []].append(validationLoss) }
            history["seconds", default: []].append(Date().timeIntervalSince(started))
            completedEpochs = epoch + 1
            let score = validationLoss ?? lossSum / Double(max(seen, 1))
            let improved = score < best
            if improved { best = score; epochsWithoutImprovement = 0 } else { epochsWithoutImprovement += 1 }
            let metadata = self.metadata(epoch: completedEpochs, step: steps, best: best, history: history, stats: stats)
            try Checkpoint.save(model, metadata: metadata, optimizer: optimizerState(optimizer, for: model), to: lastPath)
            if improved { try Checkpoint.save(model, metadata: metadata, optimizer: nil, to: bestPath) }
            try writeHistory(history)
            log(String(format: "epoch %d/%d: train loss %.5f, validation loss %@, %.1f s%@", completedEpochs, training.epochs,
                       history["train_loss"]!.last!, validationLoss.map { String(format: "%.5f", $0) } ?? "n/a",
                       history["seconds"]!.last!, improved ? " (best)" : ""))
            if let patience = training.earlyStoppingPatience, epochsWithoutImprovement >= patience {
                log("early stopping: no improvement for \(patience) epochs")
                break
            }
        }

        var summary = PretrainSummary(
            runFolder: options.output.path, epochs: completedEpochs, steps: steps, trainingClips: trainIndices.count,
            validationClips: validationIndices.count, parameters: model.parameterCount,
            samplesPerSecond: trainedSamples > 0 ? Double(trainedSamples) / trainingSeconds
                : firstStep.map { Double($0.samples) / $0.seconds } ?? 0,
            firstStepSeconds: firstStep?.seconds,
            secondsPerEpoch: history["seconds"]?.isEmpty == false ? history["seconds"]!.reduce(0, +) / Double(history["seconds"]!.count) : nil,
            trainLoss: history["train_loss"]?.last, validationLoss: history["val_loss"]?.last.flatMap { $0.isNaN ? nil : $0 },
            bestValidationLoss: best.isFinite ? best : nil, validationLossWithoutSkips: nil, checkpoint: nil, encoder: nil,
            report: nil, probe: nil, interrupted: interrupted)
        if options.maxSteps != nil && completedEpochs == firstEpoch { return summary }
        if interrupted {
            let path = options.output.appendingPathComponent("interrupted.h5").path
            try Checkpoint.save(model, metadata: metadata(epoch: completedEpochs, step: steps, best: best, history: history, stats: stats),
                                optimizer: optimizerState(optimizer, for: model), to: path)
            summary.checkpoint = path
            log("saved \(path); `--resume` continues from last.h5 (the last complete epoch)")
            return summary
        }
        summary.checkpoint = lastPath
        model.zeroSkipConnections(true)
        summary.validationLossWithoutSkips = evaluate(model, validationIndices, batcher: batcher)
        model.zeroSkipConnections(false)

        let encoderPath = options.output.appendingPathComponent("encoder.h5").path
        let encoder = try exportEncoder(from: model, configuration: configuration)
        try Checkpoint.save(encoder, metadata: metadata(epoch: completedEpochs, step: steps, best: best, history: history, stats: stats),
                            to: encoderPath)
        summary.encoder = encoderPath
        if let probeStore = options.probe {
            summary.probe = try linearProbe(encoder: encoder, configuration: configuration, probeStore: probeStore, stats: stats)
        }
        summary.report = try writeReport(model: model, summary: summary, history: history, validation: validationIndices, batcher: batcher)
        return summary
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
        var shape = first.shape
        shape[0] *= 2
        return Tensor(shape: shape, values: first.values + second.values)
    }

    /// One step of reconstruction plus the invariance term: the U-Net's and the shared encoder's
    /// backward passes add into the same gradients, then one clipped optimiser update.
    func trainingStep(_ model: Model, input: Tensor, target: Tensor, mask: Tensor?, views: Tensor,
                      encoder: Model, optimizer: any Optimizer) -> Double {
        let invariance = recipe.objective.invariance
        model.zeroGradients()
        let reconstruction = meanSquaredError(prediction: model.forward(input, training: true), target: target, mask: mask)
        model.backward(reconstruction.gradient)
        let contrast = viewContrastiveLoss(features: encoder.forward(views, training: true), temperature: invariance.temperature)
        var gradient = contrast.gradient
        let scale = Float(invariance.weight)
        for i in gradient.values.indices { gradient.values[i] *= scale }
        encoder.backward(.output(gradient))
        let parameters = model.trainableParameters
        if let clipNorm = recipe.training.optimizer.clipNorm { clipGradientsByGlobalNorm(parameters, maxNorm: clipNorm) }
        optimizer.step(parameters)
        return reconstruction.value + invariance.weight * contrast.value
    }

    /// Mean validation loss, with the same masks every epoch; nil without validation clips.
    func evaluate(_ model: Model, _ indices: [Int], batcher: SpectrogramBatcher) -> Double? {
        guard !indices.isEmpty else { return nil }
        var generator = SeededGenerator(seed: recipe.training.seed ^ 0x7A11_DA7E)
        var total = 0.0
        for start in stride(from: 0, to: indices.count, by: recipe.training.batchSize) {
            let batch = Array(indices[start..<min(start + recipe.training.batchSize, indices.count)])
            let (input, target, mask) = makeBatch(batch, batcher: batcher, generator: &generator, training: false)
            total += meanSquaredError(prediction: model.predict(input), target: target, mask: mask).value * Double(batch.count)
        }
        return total / Double(indices.count)
    }

    func metadata(epoch: Int, step: Int, best: Double, history: [String: [Double]], stats: (mean: Float, std: Float)) -> CheckpointMetadata {
        CheckpointMetadata(frontEnd: store.frontEnd, normalization: NormalizationStats(mean: stats.mean, std: stats.std),
                           classNames: [], recipe: recipeText, epoch: epoch, step: step, randomState: [],
                           bestMetric: best.isFinite ? best : nil, history: history, frozenLayers: [])
    }

    /// The encoder levels of the trained U-Net (all but the bottleneck), with its weights.
    func exportEncoder(from model: Model, configuration: UNetConfiguration) throws -> Model {
        let encoder = try Model.encoder(configuration, levels: configuration.depth)
        try encoder.copyWeights(from: model, layerNames: encoder.layers.map(\.name))
        return encoder
    }

    func writeHistory(_ history: [String: [Double]]) throws {
        let columns = ["train_loss", "val_loss", "seconds"]
        let rows = history["train_loss"]?.count ?? 0
        var csv = "epoch," + columns.joined(separator: ",") + "\n"
        for row in 0..<rows {
            csv += "\(row + 1)," + columns.map { history[$0].map { row < $0.count ? String($0[row]) : "" } ?? "" }.joined(separator: ",") + "\n"
        }
        try Data(csv.utf8).write(to: options.output.appendingPathComponent("history.csv"), options: .atomic)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(history.mapValues { $0.map { $0.isFinite ? $0 : -1 } })
            .write(to: options.output.appendingPathComponent("history.json"), options: .atomic)
    }
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
