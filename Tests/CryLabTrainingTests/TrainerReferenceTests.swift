import CryLabCheckpoint
import CryLabCore
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation
import Testing

/// The trainers against their steps written out by hand: order, batches, the step itself and the
/// averaging of the losses, compared bit for bit. No recorded numbers, so they hold on any machine;
/// they passed on the trainers' own loops before `TrainingLoop` replaced them.
@Suite("Trainers against hand-written steps", .serialized)
struct TrainerReferenceTests {
    /// A 16 x 32 U-Net of one level, as both recipes below describe it.
    func encoderShape(seed: UInt64) -> UNetConfiguration {
        UNetConfiguration(inputShape: [16, 32, 1], widths: [4, 8], seed: seed)
    }

    /// Rows of `batch` (clip indices of the store), randomly cropped with `generator`, as training crops them.
    func trainingInputs(_ batcher: SpectrogramBatcher, _ clips: [Int], _ generator: inout SeededGenerator) -> Tensor {
        var crop: SeededGenerator? = generator
        let input = batcher.inputs(clips, random: &crop)
        generator = crop!
        return input
    }

    func batches(_ clips: [Int], size: Int) -> [[Int]] {
        stride(from: 0, to: clips.count, by: size).map { Array(clips[$0..<min($0 + size, clips.count)]) }
    }

    @Test("pretraining: grouped hold-out, a fresh shuffle each epoch, crops, clipped Adam steps")
    func pretraining() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = """
        name: reference-pretrain
        frontEnd: {preset: recommended, nMels: 16, frames: 40}
        model: {widths: [4, 8], frames: 32}
        training: {epochs: 2, batchSize: 8, seed: 5, validationFraction: 0.25, optimizer: {learningRate: 0.003, clipNorm: 0.5}}
        """
        var options = PretrainOptions(output: folder)
        options.quiet = true
        let store = syntheticStore()
        _ = try Pretrainer(recipe: try loadRecipeText(PretrainRecipe.self, text: text, file: "reference-pretrain.yaml"), recipeText: text,
                           store: store, options: options, log: { _ in }).run()
        let saved = try Checkpoint.load(folder.appendingPathComponent("last.h5").path)

        let (train, validation) = groupedHoldout(groups: store.groups, indices: Array(0..<store.count), fraction: 0.25, seed: 5)
        let stats = SpectrogramBatcher.statistics(of: store, indices: train)
        let batcher = SpectrogramBatcher(store: store, frames: 32, mean: stats.mean, std: stats.std)
        let model = try Model.uNet(encoderShape(seed: 5))
        let optimizer = Adam(schedule: .constant(0.003))
        var trainLosses: [Double] = [], validationLosses: [Double] = []
        for epoch in 0..<2 {
            var generator = SeededGenerator(seed: 5 &+ 0x9E37_79B9 &* UInt64(epoch + 1))
            let order = train.shuffled(using: &generator)
            var sum = 0.0
            for clips in batches(order, size: 8) {
                let input = trainingInputs(batcher, clips, &generator)
                model.zeroGradients()
                let loss = meanSquaredError(prediction: model.forward(input, training: true), target: input)
                model.backward(loss.gradient)
                clipGradientsByGlobalNorm(model.trainableParameters, maxNorm: 0.5)
                optimizer.step(model.trainableParameters, threads: model.context.threads)
                sum += loss.value * Double(clips.count)
            }
            trainLosses.append(sum / Double(order.count))
            var validationSum = 0.0
            for clips in batches(validation, size: 8) {
                var centre: SeededGenerator? = nil
                let input = batcher.inputs(clips, random: &centre)
                validationSum += meanSquaredError(prediction: model.predict(input), target: input).value * Double(clips.count)
            }
            validationLosses.append(validationSum / Double(validation.count))
        }
        #expect(saved.metadata.history["train_loss"] == trainLosses)
        #expect(saved.metadata.history["val_loss"] == validationLosses)
        #expect(saved.metadata.step == 2 * batches(train, size: 8).count)
        for ((path, trained), (_, reference)) in zip(saved.model.namedWeights, model.namedWeights) {
            #expect(trained.value.values == reference.value.values, "\(path)")
        }
    }

    @Test("fine-tuning: grouped folds, one shuffling generator, crops, class-weighted Adam steps")
    func fineTuning() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = """
        name: reference-finetune
        classes: [a, b, c, d]
        frontEnd: {preset: recommended, nMels: 16, frames: 40}
        encoder: {widths: [4, 8], frames: 32}
        encoderLevels: 1
        head: {pooling: globalAverage, hidden: []}
        imbalance: {classWeights: balanced}
        training: {epochs: 2, batchSize: 8, validationFraction: 0, seed: 3, optimizer: {learningRate: 0.003}}
        evaluation: {folds: 2, trainFinalModel: false}
        """
        let recipe = try loadRecipeText(FinetuneRecipe.self, text: text, file: "reference-finetune.yaml")
        var options = FinetuneOptions(output: folder)
        options.quiet = true
        let store = syntheticStore(labeled: true)
        let summary = try Finetuner(recipe: recipe, recipeText: text, store: store, options: options, log: { _ in }).run()

        let set = try LabeledSet(store: store, classes: ["a", "b", "c", "d"])
        let folds = groupedStratifiedFolds(labels: set.labels, groups: set.groups, folds: 2, seed: 3)
        #expect(summary.histories.count == folds.count)
        for (foldIndex, fold) in folds.enumerated() {
            let stats = SpectrogramBatcher.statistics(of: store, indices: fold.train.map { set.indices[$0] })
            let batcher = SpectrogramBatcher(store: store, frames: 32, mean: stats.mean, std: stats.std)
            let model = try Model.classifier(ClassifierConfiguration(encoder: encoderShape(seed: 3), encoderLevels: 1,
                                                                     head: recipe.head.configuration, classes: 4, seed: 3))
            var counts = [Double](repeating: 0, count: 4)
            for position in fold.train { counts[set.labels[position]] += 1 }
            let classWeights = counts.map { Float(Double(fold.train.count) / (4 * $0)) }
            let optimizer = Adam(schedule: .constant(0.003))
            var generator = SeededGenerator(seed: 3 &+ UInt64(fold.train.count) &* 0x9E37_79B9)
            var trainLosses: [Double] = []
            for _ in 0..<2 {
                let order = fold.train.shuffled(using: &generator)
                var sum = 0.0
                for positions in batches(order, size: 8) {
                    let input = trainingInputs(batcher, positions.map { set.indices[$0] }, &generator)
                    var labels = Tensor(zeros: [positions.count, 4])
                    for (row, position) in positions.enumerated() { labels.values[row * 4 + set.labels[position]] = 1 }
                    model.zeroGradients()
                    let loss = softmaxCrossEntropy(probabilities: model.forward(input, training: true), labels: labels, classWeights: classWeights)
                    model.backward(loss.gradient)
                    optimizer.step(model.trainableParameters, threads: model.context.threads)
                    sum += loss.value * Double(positions.count)
                }
                trainLosses.append(sum / Double(order.count))
            }
            #expect(summary.histories[foldIndex]["train_loss"] == trainLosses, "fold \(foldIndex + 1)")
            let probabilities = batcher.predict(model, indices: fold.test.map { set.indices[$0] }, batchSize: 8).rows
            #expect(fold.test.map { summary.crossValidation.probabilities[$0] } == probabilities.map { $0.map(Double.init) },
                    "fold \(foldIndex + 1): out-of-fold probabilities")
        }
    }
}
