import CryLabCore
import CryLabNN
import CryLabTraining
import Testing

@Suite("Training loop")
struct TrainingLoopTests {
    /// Six 8 x 8 "clips"; a batch stacks the rows it names.
    static let clips = (0..<6).map { clip in
        var generator = SeededGenerator(seed: UInt64(clip) + 1)
        return (0..<64).map { _ in generator.nextFloat(in: -1, 1) }
    }

    static func batch(_ indices: [Int]) -> Tensor {
        Tensor(shape: [indices.count, 8, 8, 1], values: indices.flatMap { clips[$0] })
    }

    static func model() throws -> Model {
        try Model.uNet(UNetConfiguration(inputShape: [8, 8, 1], widths: [4, 8], seed: 2))
    }

    static func training(epochs: Int, clipNorm: Float? = nil, patience: Int? = nil) -> TrainingRecipe {
        var training = TrainingRecipe()
        training.epochs = epochs
        training.batchSize = 4
        training.optimizer.learningRate = 0.01
        training.optimizer.clipNorm = clipNorm
        training.earlyStoppingPatience = patience
        return training
    }

    /// As a data-parallel run of two processes with the same gradients would sum them.
    static func doubleGradients(_ parameters: [Parameter]) {
        for parameter in parameters { if let gradient = parameter.gradient { parameter.addToGradient(gradient) } }
    }

    @Test("each step is: gradients, the reduction hook, clipping, the update; losses averaged over clips")
    func stepsAreTheHandWrittenSteps() throws {
        let training = Self.training(epochs: 3, clipNorm: 0.01)
        let orders = [[0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 2, 4], [2, 5, 0, 4, 1, 3]]
        let loop = TrainingLoop(model: try Self.model(), training: training, clips: 6, selection: .lowestLoss)
        loop.reduceGradients = Self.doubleGradients
        var ends: [Int] = []
        let stop = try loop.run(
            beginEpoch: { orders[$0] },
            makeBatch: { Self.batch($0) },
            computeGradients: { input in loop.model.accumulateGradients(input: input) { meanSquaredError(prediction: $0, target: input) } },
            validate: { (meanSquaredError(prediction: loop.model.predict(Self.batch([0, 1])), target: Self.batch([0, 1])).value, nil) },
            endEpoch: { record, _ in ends.append(record.epoch) })

        let model = try Self.model()
        let optimizer = training.optimizer.makeOptimizer(stepsPerEpoch: 2, epochs: 3)
        var expected: [EpochRecord] = []
        for (epoch, order) in orders.enumerated() {
            var sum = 0.0
            for clips in [Array(order[0..<4]), Array(order[4...])] {
                let input = Self.batch(clips)
                model.zeroGradients()
                let loss = meanSquaredError(prediction: model.forward(input, training: true), target: input)
                model.backward(loss.gradient)
                Self.doubleGradients(model.trainableParameters)
                clipGradientsByGlobalNorm(model.trainableParameters, maxNorm: 0.01)
                optimizer.step(model.trainableParameters, threads: model.context.threads)
                sum += loss.value * Double(clips.count)
            }
            let validation = meanSquaredError(prediction: model.predict(Self.batch([0, 1])), target: Self.batch([0, 1])).value
            expected.append(EpochRecord(epoch: epoch + 1, trainLoss: sum / 6, validationLoss: validation))
        }
        #expect(stop == .finished && ends == [1, 2, 3] && loop.steps == 6)
        #expect(loop.history.map(\.trainLoss) == expected.map(\.trainLoss))
        #expect(loop.history.map(\.validationLoss) == expected.map(\.validationLoss))
        for ((path, trained), (_, reference)) in zip(loop.model.namedWeights, model.namedWeights) {
            #expect(trained.value.values == reference.value.values, "\(path)")
        }
    }

    /// Runs epochs whose validation figures come from `figures` (by epoch), on a model that trains
    /// for real; returns why it stopped and each recorded epoch's "is best" flag.
    func run(_ loop: TrainingLoop, figures: [(loss: Double?, balancedAccuracy: Double?)]) throws -> (TrainingStop, [Bool]) {
        var flags: [Bool] = []
        let stop = try loop.run(
            beginEpoch: { _ in Array(0..<6) },
            makeBatch: { Self.batch($0) },
            computeGradients: { input in loop.model.accumulateGradients(input: input) { meanSquaredError(prediction: $0, target: input) } },
            validate: { figures[loop.history.count] },
            endEpoch: { _, isBest in flags.append(isBest) })
        return (stop, flags)
    }

    @Test("the lowest validation loss is the best; patience stops the run, and a resumed run counts on from its history")
    func lowestLossAndPatience() throws {
        let figures: [(loss: Double?, balancedAccuracy: Double?)] = [(3, nil), (2, nil), (2, nil), (2.5, nil), (1, nil)]
        let loop = TrainingLoop(model: try Self.model(), training: Self.training(epochs: 5, patience: 2), clips: 6, selection: .lowestLoss)
        let (stop, flags) = try run(loop, figures: figures)
        #expect(stop == .earlyStopping)
        #expect(flags == [true, true, false, false], "a tie is no improvement")
        #expect(loop.best?.epoch == 2 && loop.history.count == 4)

        let resumed = TrainingLoop(model: try Self.model(), training: Self.training(epochs: 5, patience: 2), clips: 6, selection: .lowestLoss)
        resumed.history = Array(loop.history.prefix(3))
        let (resumedStop, resumedFlags) = try run(resumed, figures: figures)
        #expect(resumedStop == .earlyStopping && resumedFlags == [false], "one epoch without improvement was in the history already")
        #expect(resumed.best?.epoch == 2 && resumed.steps == 4 * resumed.stepsPerEpoch)
    }

    @Test("fine-tuning's selection: balanced accuracy, ties to the lower loss; without validation the latest epoch")
    func balancedAccuracySelection() throws {
        let loop = TrainingLoop(model: try Self.model(), training: Self.training(epochs: 4), clips: 6, selection: .highestBalancedAccuracy)
        let (_, flags) = try run(loop, figures: [(1.0, 0.5), (0.9, 0.5), (0.8, 0.4), (1.2, 0.6)])
        #expect(flags == [true, true, false, true])
        #expect(loop.best?.epoch == 4)

        let unvalidated = TrainingLoop(model: try Self.model(), training: Self.training(epochs: 3), clips: 6, selection: .highestBalancedAccuracy)
        let (_, unvalidatedFlags) = try run(unvalidated, figures: Array(repeating: (nil, nil), count: 3))
        #expect(unvalidatedFlags == [true, true, true])
    }

    @Test("a step limit stops in the middle of an epoch, which is not recorded")
    func stepLimit() throws {
        let loop = TrainingLoop(model: try Self.model(), training: Self.training(epochs: 3), clips: 6, selection: .lowestLoss)
        loop.maxSteps = 3
        let (stop, flags) = try run(loop, figures: Array(repeating: (nil, nil), count: 3))
        #expect(stop == .stepLimit && flags == [true] && loop.history.count == 1 && loop.steps == 3)
        #expect(loop.firstStep?.samples == 4 && loop.trainedSamples == 4 + 2 + 4)
    }
}
