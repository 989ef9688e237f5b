import CryLabFeatures
import CryLabNN
import Foundation

/// One finished epoch, as the training loop measured it.
public struct EpochRecord: Sendable, Equatable {
    /// 1-based.
    public var epoch: Int
    /// Mean loss of the epoch's training clips: each step's loss weighted by its batch size.
    public var trainLoss: Double
    /// Nil without validation clips.
    public var validationLoss: Double?
    /// Fine-tuning's model-selection figure; nil without validation clips, and in pretraining.
    public var validationBalancedAccuracy: Double?
    /// Wall-clock time from the epoch's start to the end of its validation.
    public var seconds: Double

    public init(epoch: Int, trainLoss: Double, validationLoss: Double? = nil, validationBalancedAccuracy: Double? = nil, seconds: Double = 0) {
        self.epoch = epoch
        self.trainLoss = trainLoss
        self.validationLoss = validationLoss
        self.validationBalancedAccuracy = validationBalancedAccuracy
        self.seconds = seconds
    }

    /// What `.lowestLoss` compares: the validation loss, the training loss without validation clips.
    public var selectionLoss: Double { validationLoss ?? trainLoss }
}

/// Which epoch the loop keeps as the best so far.
public enum ModelSelection: Sendable {
    /// The lowest `selectionLoss` (pretraining).
    case lowestLoss
    /// The highest validation balanced accuracy, a tie going to the lower validation loss; without
    /// validation clips there is nothing to select on and the latest epoch is kept (fine-tuning).
    case highestBalancedAccuracy

    func prefers(_ record: EpochRecord, to best: EpochRecord?) -> Bool {
        switch self {
        case .lowestLoss:
            return record.selectionLoss < (best?.selectionLoss ?? .infinity)
        case .highestBalancedAccuracy:
            guard let accuracy = record.validationBalancedAccuracy, let best, let bestAccuracy = best.validationBalancedAccuracy else { return true }
            return accuracy > bestAccuracy || (accuracy == bestAccuracy && record.selectionLoss < best.selectionLoss)
        }
    }
}

/// Why `TrainingLoop.run` returned.
public enum TrainingStop: Sendable, Equatable {
    /// Every epoch of the recipe is done.
    case finished
    /// `earlyStoppingPatience` epochs in a row brought no better epoch.
    case earlyStopping
    /// `maxSteps` steps were taken, in the middle of an epoch (which is not recorded).
    case stepLimit
    /// The interrupt flag was raised; the epoch under way is not recorded.
    case interrupted
}

/// The epoch loop of pretraining and fine-tuning: batches in the trainer's order, the
/// optimisation step, timing, validation, best-epoch tracking and early stopping. The trainer
/// supplies the order, the batches, the gradients of its loss and what happens after an epoch
/// (checkpoints, logging).
///
/// Each step is `Model.trainingStep`: gradients, then `reduceGradients`, then clipping, then the
/// optimiser's update. A data-parallel run sums the processes' gradients in `reduceGradients` and
/// writes checkpoints from one process only (in its `endEpoch`).
public final class TrainingLoop {
    public let model: Model
    /// Epochs, batch size, optimiser, clipping and patience.
    public let training: TrainingRecipe
    public let selection: ModelSelection
    public let stepsPerEpoch: Int
    /// Made from `training.optimizer`; a trainer may replace it between epochs (unfreezing).
    public var optimizer: any Optimizer
    /// Between the gradients and clipping; nothing by default.
    public var reduceGradients: ([Parameter]) -> Void = { _ in }
    /// Stop after this many steps of this run (for timing).
    public var maxSteps: Int?
    public var interrupt: InterruptFlag?
    /// A progress bar per epoch with the running loss and samples/s.
    public var showsProgress = false

    /// Every finished epoch; a resumed run sets the earlier ones before `run`.
    public var history: [EpochRecord] = []
    /// The best epoch of `history` by `selection`.
    public private(set) var best: EpochRecord?
    /// Steps of every finished epoch, and of this run.
    public private(set) var steps = 0
    /// Clips and seconds of this run's steps, the making of batches left out.
    public private(set) var trainedSamples = 0
    public private(set) var trainingSeconds = 0.0
    /// The first of them, which also creates the kernels.
    public private(set) var firstStep: (samples: Int, seconds: Double)?

    /// - Parameter clips: how many clips an epoch trains on.
    public init(model: Model, training: TrainingRecipe, clips: Int, selection: ModelSelection) {
        self.model = model
        self.training = training
        self.selection = selection
        stepsPerEpoch = (clips + training.batchSize - 1) / training.batchSize
        optimizer = training.optimizer.makeOptimizer(stepsPerEpoch: stepsPerEpoch, epochs: training.epochs)
    }

    /// Training samples per second after the first step (that step alone if it is the only one).
    public var samplesPerSecond: Double {
        guard let firstStep else { return 0 }
        let samples = trainedSamples - firstStep.samples
        return samples > 0 ? Double(samples) / (trainingSeconds - firstStep.seconds) : Double(firstStep.samples) / firstStep.seconds
    }

    /// Trains from the epoch after `history` up to `training.epochs`.
    /// - Parameters:
    ///   - beginEpoch: prepares epoch `epoch` (0-based) and returns its clips in training order.
    ///   - makeBatch: the batch of some of those clips, made before the step's clock starts.
    ///   - computeGradients: the batch's loss, back-propagated into the zeroed gradients; returns the loss.
    ///   - validate: the validation figures after an epoch, nil where there are none.
    ///   - endEpoch: after each recorded epoch, told whether it is the best so far.
    @discardableResult
    public func run<Batch>(beginEpoch: (_ epoch: Int) throws -> [Int],
                           makeBatch: (_ clips: [Int]) -> Batch,
                           computeGradients: (Batch) -> Double,
                           validate: () -> (loss: Double?, balancedAccuracy: Double?),
                           endEpoch: (EpochRecord, _ isBest: Bool) throws -> Void) throws -> TrainingStop {
        var sinceBest = 0
        best = nil
        for record in history { note(record, sinceBest: &sinceBest) }
        steps = history.count * stepsPerEpoch
        let firstStepOfRun = steps
        for epoch in history.count..<training.epochs {
            let started = Date()
            let order = try beginEpoch(epoch)
            let progress = ProgressReporter(label: "epoch \(epoch + 1)/\(training.epochs)", total: order.count, quiet: !showsProgress)
            var lossSum = 0.0
            var seen = 0
            for start in stride(from: 0, to: order.count, by: training.batchSize) {
                let clips = Array(order[start..<min(start + training.batchSize, order.count)])
                let batch = makeBatch(clips)
                let stepStarted = Date()
                let loss = model.trainingStep(optimizer: optimizer, clipNorm: training.optimizer.clipNorm,
                                              reduceGradients: reduceGradients) { computeGradients(batch) }
                let seconds = Date().timeIntervalSince(stepStarted)
                if firstStep == nil { firstStep = (clips.count, seconds) }
                trainedSamples += clips.count
                trainingSeconds += seconds
                steps += 1
                lossSum += loss * Double(clips.count)
                seen += clips.count
                progress.advance(by: clips.count, note: String(format: "loss %.4f", lossSum / Double(seen))
                                 + (steps - firstStepOfRun == 1 ? "" : String(format: " %.1f samples/s", samplesPerSecond)))
                if let maxSteps, steps - firstStepOfRun >= maxSteps { return .stepLimit }
                if interrupt?.isRaised == true { return .interrupted }
            }
            progress.finish()
            let validation = validate()
            let record = EpochRecord(epoch: epoch + 1, trainLoss: lossSum / Double(max(seen, 1)), validationLoss: validation.loss,
                                     validationBalancedAccuracy: validation.balancedAccuracy, seconds: Date().timeIntervalSince(started))
            history.append(record)
            let isBest = note(record, sinceBest: &sinceBest)
            try endEpoch(record, isBest)
            if let patience = training.earlyStoppingPatience, sinceBest >= patience { return .earlyStopping }
        }
        return .finished
    }

    /// Updates `best` and the epochs since it with one more record; returns whether it is the new best.
    @discardableResult
    private func note(_ record: EpochRecord, sinceBest: inout Int) -> Bool {
        guard selection.prefers(record, to: best) else {
            sinceBest += 1
            return false
        }
        best = record
        sinceBest = 0
        return true
    }
}
