import Foundation

extension Finetuner {
    /// report.html: the protocol, pooled and per-fold figures next to the baseline, per-class
    /// figures and the confusion matrix as a heat map.
    func writeReport(_ summary: FinetuneSummary) throws -> String {
        var page = HTMLReport(title: "CryLab fine-tuning: \(summary.recipe)")
        page.paragraph("Encoder: \(summary.encoder). \(summary.clips) clips of \(summary.classes.joined(separator: ", ")) from \(summary.groups) recording sources. Protocol: \(summary.protocolDescription). Test folds never took part in training, early stopping or model selection (a grouped share of each training fold was held out for that).")
        for warning in summary.warnings { page.paragraph("Warning: \(warning)") }
        let pooled = summary.crossValidation.pooled, baseline = summary.baseline.pooled
        func row(_ name: String, _ r: ClassificationReport) -> [String] {
            [name, String(format: "%.3f", r.balancedAccuracy), String(format: "%.3f", r.macroF1), String(format: "%.3f", r.accuracy),
             String(format: "%.3f", r.majorityBaselineAccuracy), String(format: "%.3f", r.chance.balancedAccuracy95thPercentile),
             String(format: "%.3f", r.chance.balancedAccuracyPValue)]
        }
        page.heading("Pooled out-of-fold figures")
        page.table(header: ["model", "balanced accuracy", "macro-F1", "accuracy", "always-majority accuracy",
                            "chance: 95th percentile of balanced accuracy", "p"],
                   rows: [row(summary.recipe, pooled), row("baseline: logistic regression on log-mel statistics", baseline)])
        page.paragraph("Chance: the answers shuffled against the true labels 1,000 times, whole families trading answers with families of the same size (clips of one family are not independent); p is the share of shuffles that score at least as well.")
        page.heading("Per class")
        page.table(header: ["class", "precision", "recall", "F1", "support", "predicted"], rows: pooled.perClass.map {
            [$0.name, String(format: "%.3f", $0.precision), String(format: "%.3f", $0.recall), String(format: "%.3f", $0.f1), "\($0.support)", "\($0.predicted)"]
        })
        page.heading("Learning curves")
        page.paragraph("One chart per measure: a line per cross-validation fold, their mean in bold. Validation is the grouped share of each fold's training clips held out for early stopping, never the fold's test clips.")
        for (key, title, axis) in [("train_loss", "training loss", "loss"), ("val_loss", "validation loss", "loss"),
                                   ("val_balanced_accuracy", "validation balanced accuracy", "balanced accuracy")] {
            page.foldChart(title: title, yTitle: axis, folds: summary.histories.map { $0[key] ?? [] })
        }
        page.heading("Confusion matrix")
        page.confusionMatrix(pooled.confusion, classNames: pooled.classNames)
        page.heading("Per fold")
        page.table(header: ["fold", "balanced accuracy", "macro-F1", "accuracy", "best epoch"],
                   rows: summary.crossValidation.folds.enumerated().map { index, fold in
                       ["\(index + 1)", String(format: "%.3f", fold.balancedAccuracy), String(format: "%.3f", fold.macroF1),
                        String(format: "%.3f", fold.accuracy), index < summary.bestEpochs.count ? "\(summary.bestEpochs[index])" : ""]
                   })
        page.heading("Recipe")
        page.preformatted(recipeText)
        let path = options.output.appendingPathComponent("report.html").path
        try page.write(to: path)
        return path
    }
}
