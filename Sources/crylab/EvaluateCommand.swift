import ArgumentParser
import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import CryLabOneDNN
import CryLabTraining
import Foundation

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Score a classifier on labeled data: balanced accuracy, macro-F1, per-class figures, confusion matrix.")

    @Option(help: "classifier.h5 from `crylab finetune`.")
    var model: String

    @Option(help: "Labeled class folders or a labeled feature store made with the classifier's front end.")
    var data: String

    @Option(help: "Threads (default: every core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let classifier = try LoadedClassifier(path: model, context: ComputeContext(threads: threads))
        let store = try loadData([data], frontEnd: classifier.frontEnd, unlabeled: false, threads: threads, quiet: json)
        let set = try LabeledSet(store: store, classes: classifier.classNames)
        let probabilities = try classifier.predict(store: store, indices: set.indices)
        let report = ClassificationReport(truth: set.labels, predicted: probabilities.map { p in p.indices.max { p[$0] < p[$1] }! },
                                          classNames: classifier.classNames, groups: set.groups)
        if json { try printJSON(report) } else { print(report.text) }
    }
}

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Class probabilities for audio files, per window and for the whole recording.",
        discussion: """
        A recording longer than the model's input is cut into windows (half-overlapping); each \
        window gets probabilities and the recording gets their mean.
        """)

    @Option(help: "classifier.h5 from `crylab finetune`.")
    var model: String

    @Argument(help: "Audio files.")
    var files: [String]

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let classifier = try LoadedClassifier(path: model)
        var results: [Prediction] = []
        var failures = 0
        for file in files {
            do {
                results.append(try classifier.predict(file: URL(fileURLWithPath: file)))
            } catch {
                failures += 1
                FileHandle.standardError.write(Data("\(error)\n".utf8))
            }
        }
        if json {
            try printJSON(results)
        } else {
            for result in results {
                let ranked = zip(classifier.classNames, result.probabilities).sorted { $0.1 > $1.1 }
                print("\(result.file): \(ranked[0].0) " + ranked.map { String(format: "%@ %.2f", $0.0, $0.1) }.joined(separator: ", ")
                      + " (\(result.windows.count) window\(result.windows.count == 1 ? "" : "s"))")
            }
        }
        if failures == files.count { throw ExitCode.failure }
    }
}
