import Foundation

/// Classification figures that stay honest on imbalanced data: balanced accuracy and macro-F1
/// first, per-class precision, recall and F1 with support, the confusion matrix, and accuracy
/// beside the majority-class baseline.
public struct ClassificationReport: Codable, Sendable, Equatable {
    public struct ClassFigures: Codable, Sendable, Equatable {
        public var name: String
        public var precision: Double
        public var recall: Double
        public var f1: Double
        public var support: Int
        /// Times the model answered this class.
        public var predicted: Int
    }

    public var classNames: [String]
    /// confusion[true][predicted]
    public var confusion: [[Int]]
    public var perClass: [ClassFigures]
    public var accuracy: Double
    public var balancedAccuracy: Double
    public var macroF1: Double
    /// Accuracy of always answering the most frequent true class.
    public var majorityBaselineAccuracy: Double
    /// Classes with support that the model never predicted: a sign of collapse.
    public var neverPredicted: [String]
    /// Classes with support whose recall is zero.
    public var zeroRecall: [String]

    public init(truth: [Int], predicted: [Int], classNames: [String]) {
        precondition(truth.count == predicted.count, "\(truth.count) labels for \(predicted.count) predictions")
        let k = classNames.count
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
        for (t, p) in zip(truth, predicted) { confusion[t][p] += 1 }
        self.classNames = classNames
        self.confusion = confusion
        var figures: [ClassFigures] = []
        for c in 0..<k {
            let support = confusion[c].reduce(0, +)
            let predictedCount = (0..<k).reduce(0) { $0 + confusion[$1][c] }
            let hits = confusion[c][c]
            let precision = predictedCount > 0 ? Double(hits) / Double(predictedCount) : 0
            let recall = support > 0 ? Double(hits) / Double(support) : 0
            let f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
            figures.append(ClassFigures(name: classNames[c], precision: precision, recall: recall, f1: f1,
                                        support: support, predicted: predictedCount))
        }
        perClass = figures
        let present = figures.filter { $0.support > 0 }
        let total = truth.count
        accuracy = total > 0 ? Double((0..<k).reduce(0) { $0 + confusion[$1][$1] }) / Double(total) : 0
        balancedAccuracy = present.isEmpty ? 0 : present.map(\.recall).reduce(0, +) / Double(present.count)
        macroF1 = present.isEmpty ? 0 : present.map(\.f1).reduce(0, +) / Double(present.count)
        majorityBaselineAccuracy = total > 0 ? Double(present.map(\.support).max() ?? 0) / Double(total) : 0
        neverPredicted = present.filter { $0.predicted == 0 }.map(\.name)
        zeroRecall = present.filter { $0.recall == 0 }.map(\.name)
    }

    /// A short text table for terminals.
    public var text: String {
        var lines: [String] = []
        lines.append(String(format: "balanced accuracy %.3f   macro-F1 %.3f   accuracy %.3f (always-majority %.3f)",
                            balancedAccuracy, macroF1, accuracy, majorityBaselineAccuracy))
        let width = max(8, classNames.map(\.count).max() ?? 8)
        lines.append("\("class".padding(toLength: width, withPad: " ", startingAt: 0))  precision  recall     f1  support")
        for c in perClass {
            lines.append(String(format: "%@  %9.3f %7.3f %6.3f %8d", c.name.padding(toLength: width, withPad: " ", startingAt: 0),
                                c.precision, c.recall, c.f1, c.support))
        }
        if !neverPredicted.isEmpty { lines.append("warning: never predicted: \(neverPredicted.joined(separator: ", "))") }
        return lines.joined(separator: "\n")
    }
}
