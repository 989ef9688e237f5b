import CryLabCheckpoint
import CryLabDSP
import CryLabFeatures
import CryLabNN
import CryLabOneDNN
import Foundation

/// The whole workflow on generated cry-like audio, so a newcomer sees every step work without
/// any data of their own: features -> pretrain -> export-encoder -> finetune -> evaluate -> predict.
public struct DemoPipeline {
    /// Small recipes that finish in a few minutes on two cores; the real ones are in Recipes/.
    public static let pretrainRecipe = """
    # Demo pretraining: the recommended objective on a small U-Net and short crops.
    name: demo-pretrain
    frontEnd: {preset: recommended}
    model: {widths: [8, 16, 32, 64], skipConnections: [false, true, true], batchNormalization: true, frames: 128}
    objective: {timeMasks: {count: 2, width: 16}, frequencyMasks: {count: 2, width: 8}, loss: masked}
    training: {epochs: 6, batchSize: 16, validationFraction: 0.15, optimizer: {learningRate: 0.002}}
    """

    public static let finetuneRecipe = """
    # Demo fine-tuning: a pooled head on the frozen encoder; grouped 4-fold cross-validation.
    name: demo-finetune
    classes: [hungry, belly_pain, discomfort, tired]
    encoderLevels: 3
    head: {pooling: globalAverage, hidden: [{units: 32, dropoutRate: 0.2}]}
    freeze: {blocks: 3}
    imbalance: {classWeights: balanced, labelSmoothing: 0.05}
    augment: {timeMasks: {count: 1, width: 12}, noise: 0.05}
    training: {epochs: 40, batchSize: 16, validationFraction: 0.15, optimizer: {learningRate: 0.003}}
    evaluation: {folds: 4, trainFinalModel: true}
    """

    public var folder: URL
    public var seed: UInt64
    public var threads: Int
    /// Families per class in the labeled set and in the unlabeled pool (3 clips each).
    public var labeledFamilies = 6
    public var unlabeledFamilies = 8
    public var quiet = false
    public var log: (String) -> Void = { print($0) }

    public init(folder: URL, seed: UInt64 = 7, threads: Int = 2) {
        self.folder = folder
        self.seed = seed
        self.threads = threads
    }

    /// What each step produced.
    public struct Result: Sendable {
        public var unlabeledStore: String
        public var labeledStore: String
        public var pretrain: PretrainSummary
        public var exportedEncoder: String
        public var finetune: FinetuneSummary
        public var evaluation: ClassificationReport
        public var predictions: [Prediction]
        public var lines: [String]
    }

    public func run() throws -> Result {
        var lines: [String] = []
        let audio = folder.appendingPathComponent("audio")
        try? FileManager.default.removeItem(at: audio)
        let generator = SyntheticCries(seed: seed)

        log("[1/7] generating cry-like audio in \(audio.path)")
        let unlabeledFiles = try generator.write(to: audio.appendingPathComponent("unlabeled"), labeled: false,
                                                 families: unlabeledFamilies, clipsPerFamily: 3)
        let labeledFiles = try generator.write(to: audio.appendingPathComponent("labeled"), labeled: true,
                                               families: labeledFamilies, clipsPerFamily: 3)
        lines.append("audio: \(unlabeledFiles.count) unlabeled and \(labeledFiles.count) labeled clips of 4 classes, at 8, 16, 22.05 and 44.1 kHz, mono and stereo")

        log("[2/7] features (recommended front end: 8 kHz, 64 log-mel bands)")
        let pretrain = try loadRecipeText(PretrainRecipe.self, text: Self.pretrainRecipe, file: "demo-pretrain")
        let unlabeled = try extractFeatures(from: discoverAudio([audio.appendingPathComponent("unlabeled")], unlabeled: true),
                                            frontEnd: pretrain.frontEnd, threads: threads, quiet: quiet)
        let unlabeledPath = folder.appendingPathComponent("unlabeled.h5").path
        try unlabeled.write(to: unlabeledPath)
        let labeled = try extractFeatures(from: discoverAudio([audio.appendingPathComponent("labeled")]),
                                          frontEnd: pretrain.frontEnd, threads: threads, quiet: quiet)
        let labeledPath = folder.appendingPathComponent("labeled.h5").path
        try labeled.write(to: labeledPath)
        lines.append("features: \(unlabeledPath) (\(unlabeled.count) clips) and \(labeledPath) (\(labeled.count) clips, \(Set(labeled.groups).count) families), \(labeled.mels) mels x \(labeled.frames) frames")

        log("[3/7] pretraining a U-Net by masked reconstruction")
        let context = ComputeContext(threads: threads)
        var pretrainOptions = PretrainOptions(output: folder.appendingPathComponent("pretrain"))
        pretrainOptions.context = context
        pretrainOptions.quiet = quiet
        pretrainOptions.probe = labeled
        pretrainOptions.probeFolds = 4
        let pretrained = try Pretrainer(recipe: pretrain, recipeText: Self.pretrainRecipe, store: unlabeled,
                                        options: pretrainOptions, log: quiet ? { _ in } : log).run()
        lines.append(String(format: "pretrain: %d epochs, validation loss %.4f (%.4f with the skip connections cut), %.1f samples/s; %@",
                            pretrained.epochs, pretrained.validationLoss ?? .nan, pretrained.validationLossWithoutSkips ?? .nan,
                            pretrained.samplesPerSecond, pretrained.checkpoint ?? ""))
        if let probe = pretrained.probe {
            lines.append(String(format: "linear probe: balanced accuracy %.3f pretrained vs %.3f random weights",
                                probe.pretrained.balancedAccuracy, probe.randomWeights.balancedAccuracy))
        }

        log("[4/7] exporting the encoder")
        let exported = folder.appendingPathComponent("encoder.h5").path
        let encoder = try EncoderFile(path: pretrained.checkpoint!, kerasArchitecture: .story, kerasLevels: 4)
        var metadata = try Checkpoint.load(pretrained.checkpoint!).metadata
        metadata.classNames = []
        try Checkpoint.save(encoder.model, metadata: metadata, to: exported)
        lines.append("export-encoder: \(exported) (\(encoder.levels) levels, \(encoder.model.parameterCount) parameters)")

        log("[5/7] fine-tuning with grouped cross-validation")
        let finetuneRecipe = try loadRecipeText(FinetuneRecipe.self, text: Self.finetuneRecipe, file: "demo-finetune")
        var finetuneOptions = FinetuneOptions(output: folder.appendingPathComponent("finetune"))
        finetuneOptions.encoderPath = exported
        finetuneOptions.context = context
        finetuneOptions.quiet = true
        let finetuned = try Finetuner(recipe: finetuneRecipe, recipeText: Self.finetuneRecipe, store: labeled,
                                      options: finetuneOptions, log: quiet ? { _ in } : log).run()
        let pooled = finetuned.crossValidation.pooled
        lines.append(String(format: "finetune: pooled out-of-fold balanced accuracy %.3f, macro-F1 %.3f (baseline %.3f); %@",
                            pooled.balancedAccuracy, pooled.macroF1, finetuned.baseline.pooled.balancedAccuracy,
                            finetuned.report ?? ""))

        log("[6/7] evaluating the final classifier")
        let classifier = try LoadedClassifier(path: finetuned.classifier!, context: context)
        let set = try LabeledSet(store: labeled, classes: classifier.classNames)
        let probabilities = try classifier.predict(store: labeled, indices: set.indices)
        let evaluation = ClassificationReport(truth: set.labels, predicted: probabilities.map(argmax), classNames: classifier.classNames)
        lines.append(String(format: "evaluate: balanced accuracy %.3f on the clips it was trained on (a sanity check, not a result)",
                            evaluation.balancedAccuracy))

        log("[7/7] predicting two recordings")
        let predictions = try [labeledFiles.first!, labeledFiles.last!].map { try classifier.predict(file: $0) }
        for prediction in predictions {
            lines.append("predict: \(URL(fileURLWithPath: prediction.file).lastPathComponent) -> \(prediction.predicted) (\(prediction.windows.count) windows)")
        }
        lines.append("report: \(finetuned.report ?? "")")
        return Result(unlabeledStore: unlabeledPath, labeledStore: labeledPath, pretrain: pretrained, exportedEncoder: exported,
                      finetune: finetuned, evaluation: evaluation, predictions: predictions, lines: lines)
    }
}
