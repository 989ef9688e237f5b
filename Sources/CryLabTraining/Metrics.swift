import CryLabCore
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
    /// Where chance lies for these labels and this spread of answers.
    public var chance: ChanceLevel

    /// `groups` (the recording source of each clip), if given, makes the chance test shuffle
    /// whole families instead of single clips (see `ChanceLevel`).
    public init(truth: [Int], predicted: [Int], classNames: [String], groups: [String]? = nil) {
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
            let (precision, recall, f1) = classFigures(hits: confusion[c][c], support: support, answered: predictedCount)
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
        chance = ChanceLevel(truth: truth, predicted: predicted, classes: k, groups: groups,
                             observedBalancedAccuracy: balancedAccuracy, observedMacroF1: macroF1)
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
        lines.append(chance.text)
        if !neverPredicted.isEmpty { lines.append("warning: never predicted: \(neverPredicted.joined(separator: ", "))") }
        return lines.joined(separator: "\n")
    }
}

/// Precision, recall and F1 of one class from its correct answers, its true clips and how often it
/// was answered; 0 where a ratio is undefined. Shared by the report and its chance test.
private func classFigures(hits: Int, support: Int, answered: Int) -> (precision: Double, recall: Double, f1: Double) {
    let precision = answered > 0 ? Double(hits) / Double(answered) : 0
    let recall = support > 0 ? Double(hits) / Double(support) : 0
    return (precision, recall, precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0)
}

/// A permutation test: the answers are shuffled against the true labels, keeping how often each
/// class was answered, and scored again. On a few hundred imbalanced clips a balanced accuracy of
/// 0.30 can be luck; this says how often luck does as well.
///
/// Clips of one family are not independent: shuffled one by one, they make the spread of chance
/// too narrow and p too small. Given the clips' groups, whole families trade answers instead:
/// a family takes over the answers of another family with as many clips (families of a size no
/// other family has keep their own, which only makes p larger).
public struct ChanceLevel: Codable, Sendable, Equatable {
    public var permutations: Int
    /// What was shuffled: "clip" or "family".
    public var unit: String
    public var balancedAccuracyMedian: Double
    public var balancedAccuracy95thPercentile: Double
    /// Share of shuffles (counting the observed order) scoring at least the observed figure.
    public var balancedAccuracyPValue: Double
    public var macroF1Median: Double
    public var macroF195thPercentile: Double
    public var macroF1PValue: Double

    /// Deterministic: the shuffles come from a fixed seed.
    public init(truth: [Int], predicted: [Int], classes: Int, groups: [String]? = nil,
                observedBalancedAccuracy: Double, observedMacroF1: Double, permutations: Int = 1000, seed: UInt64 = 0x5EED) {
        precondition(groups == nil || groups!.count == truth.count, "one group per clip")
        self.permutations = permutations
        unit = groups == nil ? "clip" : "family"
        var generator = SeededGenerator(seed: seed)
        var shuffled = predicted
        // Families (positions in order of appearance), bucketed by size.
        var families: [[Int]] = []
        if let groups {
            var index: [String: Int] = [:]
            for (position, group) in groups.enumerated() {
                if let f = index[group] { families[f].append(position) } else { index[group] = families.count; families.append([position]) }
            }
        }
        let bySize = Dictionary(grouping: families.indices, by: { families[$0].count }).values.map { $0 }.filter { $0.count > 1 }
            .sorted { $0[0] < $1[0] }
        var balanced: [Double] = [], macro: [Double] = []
        balanced.reserveCapacity(permutations)
        macro.reserveCapacity(permutations)
        let support = (0..<classes).map { c in truth.reduce(0) { $0 + ($1 == c ? 1 : 0) } }
        let answered = (0..<classes).map { c in predicted.reduce(0) { $0 + ($1 == c ? 1 : 0) } }
        let present = (0..<classes).filter { support[$0] > 0 }
        var hits = [Int](repeating: 0, count: classes)
        for _ in 0..<permutations {
            if families.isEmpty {
                shuffled.shuffle(using: &generator)
            } else {
                for stratum in bySize {
                    for (family, source) in zip(stratum, stratum.shuffled(using: &generator)) {
                        for (to, from) in zip(families[family], families[source]) { shuffled[to] = predicted[from] }
                    }
                }
            }
            for c in 0..<classes { hits[c] = 0 }
            for (t, p) in zip(truth, shuffled) where t == p { hits[t] += 1 }
            var recallSum = 0.0, f1Sum = 0.0
            for c in present {
                let figures = classFigures(hits: hits[c], support: support[c], answered: answered[c])
                recallSum += figures.recall
                f1Sum += figures.f1
            }
            balanced.append(present.isEmpty ? 0 : recallSum / Double(present.count))
            macro.append(present.isEmpty ? 0 : f1Sum / Double(present.count))
        }
        func summary(_ values: [Double], observed: Double) -> (median: Double, p95: Double, p: Double) {
            guard !values.isEmpty else { return (0, 0, 1) }
            let sorted = values.sorted()
            let atLeast = values.reduce(0) { $0 + ($1 >= observed - 1e-12 ? 1 : 0) }
            return (sorted[sorted.count / 2], sorted[min(sorted.count - 1, Int((0.95 * Double(sorted.count)).rounded(.up)) - 1)],
                    Double(atLeast + 1) / Double(values.count + 1))
        }
        let b = summary(balanced, observed: observedBalancedAccuracy), m = summary(macro, observed: observedMacroF1)
        balancedAccuracyMedian = b.median
        balancedAccuracy95thPercentile = b.p95
        balancedAccuracyPValue = b.p
        macroF1Median = m.median
        macroF195thPercentile = m.p95
        macroF1PValue = m.p
    }

    /// True when the balanced accuracy is not above what shuffled answers reach one time in twenty.
    public var indistinguishableFromChance: Bool { balancedAccuracyPValue > 0.05 }

    public var text: String {
        String(format: "chance (answers shuffled %d times, %@ by %@): balanced accuracy median %.3f, 95th percentile %.3f, p = %.3f%@",
               permutations, unit, unit, balancedAccuracyMedian, balancedAccuracy95thPercentile, balancedAccuracyPValue,
               indistinguishableFromChance ? ": not distinguishable from chance" : "")
    }
}

/// Whether one model's answers beat another's on the same clips by more than chance: a paired
/// permutation test. Each shuffle swaps the two models' answers for every clip of a random half
/// of the families (a family's clips move together, as they are not independent) and recomputes
/// the difference in balanced accuracy. p is the share of shuffles, counting the observed
/// answers, whose difference is at least the observed one: one-sided, `first` better than `second`.
public struct PairedComparison: Codable, Sendable, Equatable {
    public var permutations: Int
    /// Balanced accuracy of `first` minus that of `second`.
    public var balancedAccuracyDifference: Double
    public var pValue: Double

    /// Deterministic: the swaps come from a fixed seed.
    public init(truth: [Int], first: [Int], second: [Int], classes: Int, groups: [String],
                permutations: Int = 1000, seed: UInt64 = 0x9A1_2ED) {
        precondition(truth.count == first.count && truth.count == second.count && truth.count == groups.count,
                     "one answer of each model and one group per clip")
        self.permutations = permutations
        let support = (0..<classes).map { c in truth.reduce(0) { $0 + ($1 == c ? 1 : 0) } }
        let present = (0..<classes).filter { support[$0] > 0 }
        // Per clip: 1 where only the first model is right, -1 where only the second is, scaled by
        // the clip's class weight in balanced accuracy; the difference is their sum.
        let weights = truth.map { 1 / (Double(support[$0]) * Double(max(present.count, 1))) }
        let contribution = truth.indices.map { i in
            ((first[i] == truth[i] ? 1.0 : 0) - (second[i] == truth[i] ? 1.0 : 0)) * weights[i]
        }
        var familyOf: [String: Int] = [:]
        var families: [Double] = []
        for (i, group) in groups.enumerated() {
            if let f = familyOf[group] { families[f] += contribution[i] } else { familyOf[group] = families.count; families.append(contribution[i]) }
        }
        let observed = families.reduce(0, +)
        var generator = SeededGenerator(seed: seed)
        var atLeast = 1  // the observed answers count as one arrangement
        for _ in 0..<permutations {
            var difference = 0.0
            for value in families { difference += Bool.random(using: &generator) ? -value : value }
            if difference >= observed - 1e-12 { atLeast += 1 }
        }
        balancedAccuracyDifference = observed
        pValue = Double(atLeast) / Double(permutations + 1)
    }
}
