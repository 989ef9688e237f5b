import CryLabCore
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation
import Testing

@Suite("Label draws, folds and the paired test")
struct LabelDrawTests {
    @Test("K labels per class come from the given positions only, stratified and reproducible")
    func drawsAreStratifiedInsideTheFold() {
        let labels = (0..<60).map { $0 % 3 }
        let fold = Array(stride(from: 0, to: 60, by: 2)) + [1, 7]  // 32 positions, class 0..2 uneven
        let drawn = drawLabels(from: fold, labels: labels, perClass: 4, seed: 9)
        #expect(drawn.count == 12)
        #expect(Set(drawn).isSubset(of: Set(fold)))
        for c in 0..<3 { #expect(drawn.filter { labels[$0] == c }.count == 4) }
        #expect(drawn == drawLabels(from: fold, labels: labels, perClass: 4, seed: 9))
        #expect(drawn != drawLabels(from: fold, labels: labels, perClass: 4, seed: 10))
        // A class with fewer clips than K gives all it has.
        let small = drawLabels(from: [0, 1, 2, 3], labels: labels, perClass: 5, seed: 1)
        #expect(small == [0, 1, 2, 3])
    }

    @Test("leave-one-group-out tests every group once and never trains on it")
    func leaveOneGroupOut() {
        let groups = ["b", "a", "c", "a", "b", "c", "c"]
        let folds = leaveOneGroupOutFolds(groups: groups)
        #expect(folds.count == 3)
        #expect(folds.flatMap(\.test).sorted() == Array(0..<7))
        for fold in folds {
            let tested = Set(fold.test.map { groups[$0] })
            #expect(tested.count == 1)
            #expect(fold.train.allSatisfy { !tested.contains(groups[$0]) })
            #expect(fold.train.count + fold.test.count == 7)
        }
    }

    @Test("the sign-flip test is exact on few pairs and calibrated on many")
    func signFlip() {
        // Four positive differences: only the identity assignment reaches the observed sum.
        #expect(abs(signFlipPValue([0.1, 0.2, 0.3, 0.4]) - 1.0 / 16) < 1e-12)
        // All negative: every assignment is at least as large.
        #expect(signFlipPValue([-0.1, -0.2, -0.3]) == 1)
        // Symmetric differences around 0 give a p-value above one half.
        #expect(signFlipPValue([0.1, -0.1, 0.2, -0.2]) > 0.5)
        // 20 pairs (Monte Carlo branch), all positive: p at the floor of 1 / (trials + 1).
        #expect(signFlipPValue(Array(repeating: 0.05, count: 20)) < 1e-4)
        #expect(signFlipPValue([]) == 1)
    }
}

@Suite("Pretraining objectives")
struct ObjectiveOptionTests {
    @Test("patch masks hide about the asked share, in whole patches, and the hidden cells are zero")
    func patchMasks() throws {
        var objective = ObjectiveRecipe()
        objective.patches = PatchMaskRecipe(ratio: 0.75, mels: 4, frames: 4)
        objective.loss = .masked
        var input = Tensor(shape: [8, 16, 32, 1], repeating: 1)
        var generator = SeededGenerator(seed: 3)
        let mask = SpectrogramBatcher.applyMasks(&input, objective: objective, using: &generator)
        let hidden = mask.values.reduce(0, +) / Float(mask.count)
        #expect(abs(hidden - 0.75) < 0.06, "hid \(hidden) of the cells")
        for i in 0..<input.count { #expect((mask.values[i] == 1) == (input.values[i] == 0)) }
        // Every 4x4 patch is hidden whole or not at all.
        for b in 0..<8 { for top in stride(from: 0, to: 16, by: 4) { for left in stride(from: 0, to: 32, by: 4) {
            let cells = (top..<top + 4).flatMap { m in (left..<left + 4).map { t in mask.values[(b * 16 + m) * 32 + t] } }
            #expect(Set(cells).count == 1)
        } } }
    }

    @Test("mixing adds power: every mixed cell is at least its own and the other clip's lowered level")
    func mixing() {
        let (mean, std): (Float, Float) = (-40, 20)
        var input = Tensor(shape: [2, 2, 3, 1]) { values in
            for i in 0..<values.count { values[i] = Float(i % 5) / 5 - 0.5 }
        }
        let clean = input.values
        var generator = SeededGenerator(seed: 4)
        SpectrogramBatcher.mixClips(&input, mixing: MixingRecipe(probability: 1, minimumDB: 6, maximumDB: 6),
                                    mean: mean, std: std, using: &generator)
        let size = 6
        for b in 0..<2 {
            for i in 0..<size {
                let own = clean[b * size + i] * std + mean, other = clean[((b + 1) % 2) * size + i] * std + mean - 6
                let mixed = input.values[b * size + i] * std + mean
                let expected = 10 * log10(pow(10, own / 10) + pow(10, other / 10))
                #expect(abs(mixed - expected) < 1e-3)
                #expect(mixed >= max(own, other) - 1e-4)
            }
        }
        var untouched = Tensor(shape: [2, 2, 3, 1], repeating: 0.3)
        SpectrogramBatcher.mixClips(&untouched, mixing: MixingRecipe(probability: 0), mean: mean, std: std, using: &generator)
        #expect(untouched.values.allSatisfy { $0 == 0.3 })
    }

    @Test("time shift rolls each row and gain moves every value of a clip by the same amount")
    func shiftAndGain() {
        var input = Tensor(shape: [3, 2, 8, 1]) { values in for i in 0..<values.count { values[i] = Float(i) } }
        let original = input.values
        var generator = SeededGenerator(seed: 8)
        SpectrogramBatcher.shiftClips(&input, gainDB: 6, timeShift: 3, std: 2, using: &generator)
        for b in 0..<3 {
            let offset = input.values[b * 16..<(b + 1) * 16].reduce(0, +) / 16 - original[b * 16..<(b + 1) * 16].reduce(0, +) / 16
            #expect(abs(offset) <= 3 + 1e-5)
            for m in 0..<2 {
                let row = (b * 2 + m) * 8
                let before = original[row..<row + 8].map { $0 + offset }.sorted()
                let after = input.values[row..<row + 8].sorted()
                for (x, y) in zip(before, after) { #expect(abs(x - y) < 1e-4) }
            }
        }
    }

    @Test("objective keys are checked")
    func objectiveErrors() throws {
        func decode(_ yaml: String) throws -> PretrainRecipe { try loadRecipeText(PretrainRecipe.self, text: yaml, file: "r.yaml") }
        #expect(throws: (any Error).self) { try decode("objective: {patches: {ratio: 1.2}}") }
        #expect(throws: (any Error).self) { try decode("objective: {mixing: {probability: 0.5, minimumDB: 9, maximumDB: 3}}") }
        #expect(throws: (any Error).self) { try decode("objective: {patches: {ratio: 0.5, size: 3}}") }
        let recipe = try decode("objective: {patches: {ratio: 0.8, mels: 4, frames: 8}, loss: masked, mixing: {probability: 0.5}, gainDB: 6, timeShift: 4}")
        #expect(recipe.objective.patches == PatchMaskRecipe(ratio: 0.8, mels: 4, frames: 8))
        #expect(recipe.objective.masks)
        #expect(recipe.objective.mixing.probability == 0.5)
    }
}

@Suite("Embedding pooling")
struct EmbeddingPoolTests {
    @Test("band-mean-std gives each row of mel bands its own channel means and deviations over time")
    func bandMeanStd() {
        // A [2 rows, 3 frames, 2 channels] map: value = 10 * row + frame for channel 0, its negative times 2 for channel 1.
        let shape = [2, 3, 2]
        var values: [Float] = []
        for row in 0..<2 { for frame in 0..<3 { let v = Float(10 * row + frame); values += [v, -2 * v] } }
        let pooled = EmbeddingPool.bandMeanStd.pool(values, shape: shape)
        #expect(EmbeddingPool.bandMeanStd.size(of: shape) == [8])
        #expect(pooled.count == 8)
        // Means: row 0 (1, -2), row 1 (11, -22); standard deviations of {0, 1, 2}: sqrt(2/3), doubled for channel 1.
        let spread = (2.0 / 3).squareRoot()
        let expected = [1, -2, 11, -22, spread, 2 * spread, spread, 2 * spread]
        for (got, want) in zip(pooled, expected) { #expect(abs(got - want) < 1e-9) }
        // Pooling over frequency too mixes the rows: the mean of channel 0 is 6 and its spread is 5 times larger.
        let whole = EmbeddingPool.meanStd.pool(values, shape: shape)
        #expect(EmbeddingPool.meanStd.size(of: shape) == [4] && whole.count == 4)
        #expect(abs(whole[0] - 6) < 1e-9 && abs(whole[2] - (25 + 2.0 / 3).squareRoot()) < 1e-9)
        #expect(EmbeddingPool.mean.pool(values, shape: shape) == Array(whole.prefix(2)))
    }
}

@Suite("Label curve", .serialized)
struct LabelCurveTests {
    @Test("a small curve runs every row on the same draws, pretrains per fold without the test group, and writes its files")
    func smallCurve() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // 48 clips, 4 classes, 3 groups (families 0-2 of the synthetic store's pattern).
        var store = syntheticStore(clips: 48, labeled: true)
        store.groups = (0..<48).map { "speaker\($0 % 3)" }
        let (pretrain, pretrainText) = try tinyRecipe(epochs: 1)
        let finetuneText = """
        name: tiny-finetune
        head: {pooling: globalAverage}
        training: {epochs: 3, batchSize: 8, seed: 2}
        evaluation: {recalibrateBatchNormalization: true}
        """
        let finetune = try loadRecipeText(FinetuneRecipe.self, text: finetuneText, file: "tiny-finetune.yaml")
        var options = LabelCurveOptions(output: folder)
        options.labelsPerClass = [2, nil]
        options.draws = 2
        options.fineTuningSteps = 4
        options.quiet = true
        let curve = try LabelCurve(store: store, pretrainRecipe: pretrain, pretrainRecipeText: pretrainText,
                                   finetuneRecipe: finetune, finetuneRecipeText: finetuneText, options: options, log: { _ in })
        let result = try curve.run()
        // 3 folds x (2 draws at K=2 + 1 at K=all) x 5 rows.
        #expect(result.runs.count == 3 * 3 * CurveModel.allCases.count)
        #expect(result.pooling == .bandMeanStd && result.protocolDescription.contains("band-mean-std"))
        #expect(result.cells.count == 2 * CurveModel.allCases.count)
        for run in result.runs {
            #expect(run.trainingClips == (run.labelsPerClass == nil ? 32 : 8))
            #expect((0...1).contains(run.balancedAccuracy))
        }
        // Every row of a fold and draw saw the same number of clips; pretraining never saw the test speaker.
        #expect(result.pretraining.count == 3)
        for record in result.pretraining { #expect(record.clips == 32) }
        // Each pretrained row is compared with the four other rows at both K.
        #expect(result.comparisons.count == 2 * 2 * 4)
        for comparison in result.comparisons where comparison.labelsPerClass == 2 { #expect(comparison.pairs == 6) }
        for name in ["curve.json", "curve.csv", "curve.html"] {
            #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path))
        }
        let csv = try String(contentsOf: folder.appendingPathComponent("curve.csv"), encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 1 + result.cells.count)
        let html = try String(contentsOf: folder.appendingPathComponent("curve.html"), encoding: .utf8)
        #expect(html.contains("<polygon") && html.contains("pretrained-frozen"))

        // --resume reuses every fold: the same figures, nothing trained again.
        options.resume = true
        let again = try LabelCurve(store: store, pretrainRecipe: pretrain, pretrainRecipeText: pretrainText,
                                   finetuneRecipe: finetune, finetuneRecipeText: finetuneText, options: options, log: { _ in }).run()
        #expect(again.runs.map(\.balancedAccuracy) == result.runs.map(\.balancedAccuracy))
    }

    @Test("recalibrated BatchNorm statistics are the average of the batches' statistics")
    func recalibration() throws {
        let configuration = UNetConfiguration(inputShape: [8, 8, 1], widths: [4, 8], batchNormalization: true, seed: 1)
        let model = try Model.encoder(configuration, levels: 1)
        var generator = SeededGenerator(seed: 2)
        let batches = (0..<3).map { _ in Tensor(shape: [2, 8, 8, 1]) { v in for i in 0..<v.count { v[i] = Float.random(in: -1...3, using: &generator) } } }
        model.recalibrateBatchNormalization(batches)
        let norm = try #require(model.layers.compactMap { $0 as? BatchNormalization }.first)
        // The first BatchNorm follows the first convolution; recompute its batch means by hand.
        let convolution = try #require(model.layers.first { $0 is Conv2D })
        var expected = [Double](repeating: 0, count: norm.channels)
        for batch in batches {
            let output = convolution.forward([batch], training: false)
            let perChannel = output.count / norm.channels
            for c in 0..<norm.channels {
                var sum = 0.0
                for p in 0..<perChannel { sum += Double(output.values[p * norm.channels + c]) }
                expected[c] += sum / Double(perChannel) / Double(batches.count)
            }
        }
        for c in 0..<norm.channels { #expect(abs(Double(norm.movingMean.value.values[c]) - expected[c]) < 1e-4) }
        #expect(norm.averagedBatches == nil)
    }
}
