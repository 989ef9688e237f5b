import ArgumentParser
import CryLabFeatures
import CryLabTraining
import Foundation

struct BaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baseline",
        abstract: "Cross-validate the reference baseline: logistic regression on log-mel band statistics.",
        discussion: """
        Every model should beat this. Folds are grouped by recording source (the store's 'group') \
        and stratified by class, exactly as `crylab finetune` makes them for the same seed.
        """)

    @Option(name: .shortAndLong, help: "A labeled feature store from `crylab features`.")
    var data: String

    @Option(help: "What to predict: folder (the class folders), age or gender (from Donate-a-Cry file names).")
    var target: LabelSource = .folder

    @Option(help: "Comma-separated classes to use, in order (default: every labeled class).")
    var classes: String?

    @Option(help: "Number of cross-validation folds.")
    var folds: Int = 5

    @Option(help: "L2 penalty of the logistic regression.")
    var l2: Double = 1e-2

    @Option(help: "Seed for the fold assignment.")
    var seed: UInt64 = 0

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        let store = try FeatureStore.read(from: data)
        let set = try LabeledSet(store: store, source: target, classes: classes?.split(separator: ",").map(String.init))
        let split = groupedStratifiedFolds(labels: set.labels, groups: set.groups, folds: folds, seed: seed)
        let result = logisticRegressionBaseline(store: store, set: set, folds: split, l2: l2)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            var copy = result
            copy.probabilities = []
            print(String(decoding: try encoder.encode(copy), as: UTF8.self))
        } else {
            print(result.summary)
        }
    }
}
