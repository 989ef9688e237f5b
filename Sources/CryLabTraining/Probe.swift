import CryLabCore
import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import Foundation

/// Pooled encoder features for every clip of `set`: by default each channel's mean and
/// standard deviation over time and frequency.
func pooledFeatures(encoder: Model, set: LabeledSet, batcher: SpectrogramBatcher, batchSize: Int,
                    pool: EmbeddingPool = .meanStd) -> [[Double]] {
    let (rows, shape) = batcher.predict(encoder, indices: set.indices, batchSize: batchSize)
    return rows.map { pool.pool($0, shape: shape) }
}

/// Linear probe: logistic regression on pooled encoder features, cross-validated on folds
/// grouped by recording source, for `encoder` and for the same architecture with random
/// weights (`randomWeights`, normally its initial weights). Both see the same folds.
/// - Parameters:
///   - frames: the encoder's input width; longer clips are cut from their start.
///   - normalization: subtracted and divided before the encoder, as in pretraining.
/// `randomWeights` runs with `encoder`'s compute context.
public func linearProbe(encoder: Model, randomWeights: Model, store: FeatureStore, set: LabeledSet, source: LabelSource,
                        frames: Int, normalization: (mean: Float, std: Float), folds k: Int, seed: UInt64,
                        pool: EmbeddingPool = .meanStd, batchSize: Int = 32) -> ProbeResult {
    randomWeights.context = encoder.context
    let folds = groupedStratifiedFolds(labels: set.labels, groups: set.groups, folds: k, seed: seed)
    let batcher = SpectrogramBatcher(store: store, frames: frames, mean: normalization.mean, std: normalization.std)
    func probe(_ model: Model, name: String) -> CrossValidationResult {
        let features = pooledFeatures(encoder: model, set: set, batcher: batcher, batchSize: batchSize, pool: pool)
        return crossValidate(set, folds: folds, method: name) { train, _ in
            let regression = LogisticRegression(x: train.map { features[$0] }, y: train.map { set.labels[$0] }, classes: set.classNames.count)
            return { positions in positions.map { regression.probabilities(features[$0]) } }
        }
    }
    let pretrained = probe(encoder, name: "pretrained"), random = probe(randomWeights, name: "random weights")
    let answers = pretrained.probabilities.map(argmax)
    let comparison = PairedComparison(truth: set.labels, first: answers, second: random.probabilities.map(argmax),
                                      classes: set.classNames.count, groups: set.groups)
    return ProbeResult(target: source, classes: set.classNames, folds: folds.count, pretrained: pretrained.pooled,
                       randomWeights: random.pooled, pretrainedVersusRandom: comparison, pretrainedAnswers: answers)
}

extension ProbeResult {
    /// One line: both balanced accuracies with their p-values, and both macro-F1s.
    public var text: String {
        String(format: "linear probe on %@ (%@; %d-fold, grouped): balanced accuracy %.3f pretrained (p = %.3f) vs %.3f random weights (p = %.3f); macro-F1 %.3f vs %.3f; p against shuffled answers. Pretrained minus random weights: %+.3f (p = %.3f, answers swapped between the two family by family)",
               target.rawValue, classes.joined(separator: ", "), folds,
               pretrained.balancedAccuracy, pretrained.chance.balancedAccuracyPValue,
               randomWeights.balancedAccuracy, randomWeights.chance.balancedAccuracyPValue,
               pretrained.macroF1, randomWeights.macroF1,
               pretrainedVersusRandom.balancedAccuracyDifference, pretrainedVersusRandom.pValue)
    }
}

extension Pretrainer {
    /// The linear probe at the end of a run, on the encoder just trained and its initial weights.
    func linearProbe(encoder: Model, configuration: UNetConfiguration, probeStore: FeatureStore, stats: (mean: Float, std: Float)) throws -> ProbeResult {
        guard probeStore.mels == store.mels, probeStore.frames >= modelFrames, probeStore.frontEnd == store.frontEnd else {
            throw RecipeError(file: "probe", message: "the probe's feature store has another front end (\(describeDifference(probeStore.frontEnd, store.frontEnd))); make it with the same preset as the pretraining data")
        }
        let set = try LabeledSet(store: probeStore, source: options.probeTarget, classes: options.probeClasses)
        let result = CryLabTraining.linearProbe(encoder: encoder, randomWeights: try Model.encoder(configuration, levels: configuration.depth),
                                                store: probeStore, set: set, source: options.probeTarget, frames: modelFrames,
                                                normalization: stats, folds: options.probeFolds, seed: recipe.training.seed,
                                                batchSize: recipe.training.batchSize)
        log(result.text)
        return result
    }

    /// The HTML report: loss curves, reconstructions of a few validation clips (training clips when
    /// none were held out), the skip test and the probe.
    func writeReport(model: Model, summary: PretrainSummary, history: [EpochRecord], validation: [Int], training: [Int],
                     batcher: SpectrogramBatcher) throws -> String {
        var report = HTMLReport(title: "CryLab pretraining: \(recipe.name)")
        report.paragraph("\(summary.epochs) epochs, \(summary.steps) steps, \(summary.trainingClips) training and \(summary.validationClips) validation clips, \(summary.parameters) parameters, \(String(format: "%.1f", summary.samplesPerSecond)) samples/s.")
        report.lineChart(title: "loss per epoch", series: [("train", history.map(\.trainLoss)), ("validation", history.compactMap(\.validationLoss))])
        var rows: [[String]] = []
        if let v = summary.validationLoss { rows.append(["validation loss", String(format: "%.5f", v)]) }
        if let v = summary.validationLossWithoutSkips { rows.append(["validation loss, skip connections cut", String(format: "%.5f", v)]) }
        if !rows.isEmpty {
            report.heading("What the bottleneck learned")
            report.paragraph("With every skip connection cut, the decoder sees only the bottleneck. A loss far above the normal one means the network reconstructs through its skips, not through its encoder.")
            report.table(header: ["measure", "value"], rows: rows)
        }
        if let probe = summary.probe {
            report.heading("Linear probe")
            report.paragraph("Logistic regression on pooled encoder features, \(probe.folds)-fold cross-validation grouped by recording source; target: \(probe.target.rawValue), classes \(probe.classes.joined(separator: ", ")).")
            func row(_ name: String, _ r: ClassificationReport) -> [String] {
                [name, String(format: "%.3f", r.balancedAccuracy), String(format: "%.3f", r.macroF1),
                 String(format: "%.3f", r.chance.balancedAccuracy95thPercentile), String(format: "%.3f", r.chance.balancedAccuracyPValue)]
            }
            report.table(header: ["encoder", "balanced accuracy", "macro-F1", "chance: 95th percentile", "p"],
                         rows: [row("pretrained", probe.pretrained), row("random weights", probe.randomWeights)])
            report.paragraph(String(format: "Pretrained minus random weights: %+.3f balanced accuracy; p = %.3f that random weights' answers would do as well, from %d swaps of the two encoders' answers family by family.",
                                    probe.pretrainedVersusRandom.balancedAccuracyDifference, probe.pretrainedVersusRandom.pValue,
                                    probe.pretrainedVersusRandom.permutations))
        }
        let shown = validation.isEmpty ? training : validation
        if !shown.isEmpty {
            if validation.isEmpty {
                report.heading("Reconstructions of training clips")
                report.paragraph("No clips were held out for validation (validationFraction is 0), so these are clips the network trained on: they show what it learned to reproduce, not how it does on unseen audio.")
            } else {
                report.heading("Reconstructions of validation clips")
            }
            report.paragraph("Left to right: the clip, the clip as the network saw it (masked bands and frames set to zero, the mean of the normalised values), and the network's reconstruction. The trained model, one forward pass, evaluation masks; low mel bands at the bottom; one colour scale per row, the clip's range from dark to bright.")
            var generator = SeededGenerator(seed: recipe.training.seed ^ 0x7A11_DA7E)
            for index in shown.prefix(3) {
                let (input, target, mask) = makeBatch([index], batcher: batcher, generator: &generator, training: false)
                let output = model.predict(input)
                let (mels, frames) = (input.shape[1], input.shape[2])
                let low = target.values.min() ?? 0, high = target.values.max() ?? 1
                var images: [(String, Data)] = [("input", PNG.heatmap(target.values, rows: mels, columns: frames, range: low...high))]
                if mask != nil || recipe.objective.masks {
                    images.append(("masked input", PNG.heatmap(input.values, rows: mels, columns: frames, range: low...high)))
                }
                images.append(("reconstruction", PNG.heatmap(output.values, rows: mels, columns: frames, range: low...high)))
                report.images(images, title: "\(batcher.store.paths[index]) (\(mels) mels x \(frames) frames)")
            }
        }
        let path = options.output.appendingPathComponent("report.html").path
        try report.write(to: path)
        return path
    }
}
