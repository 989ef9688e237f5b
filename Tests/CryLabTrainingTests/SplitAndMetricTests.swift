import CryLabCore
import CryLabTraining
import Foundation
import Testing

@Suite("Splits and metrics")
struct SplitAndMetricTests {
    @Test("grouped folds never split a group, cover every clip once, and spread rare classes")
    func groupedFolds() {
        var labels: [Int] = [], groups: [String] = []
        for family in 0..<60 {
            let label = family < 45 ? 0 : (family < 53 ? 1 : (family < 57 ? 2 : 3))
            for _ in 0..<(1 + family % 3) { labels.append(label); groups.append("family-\(family)") }
        }
        let folds = groupedStratifiedFolds(labels: labels, groups: groups, folds: 5, seed: 1)
        #expect(folds.count == 5)
        #expect(folds.flatMap(\.test).sorted() == Array(0..<labels.count))
        for fold in folds {
            let trainGroups = Set(fold.train.map { groups[$0] })
            #expect(fold.test.allSatisfy { !trainGroups.contains(groups[$0]) })
            #expect(Set(fold.test.map { labels[$0] }).count >= 3, "every fold holds the rare classes where possible")
        }
        #expect(folds == groupedStratifiedFolds(labels: labels, groups: groups, folds: 5, seed: 1), "same seed, same folds")
    }

    @Test("always answering the majority class: high accuracy, balanced accuracy 1/k")
    func majorityCollapse() {
        let truth = Array(repeating: 0, count: 85) + Array(repeating: 1, count: 5) + Array(repeating: 2, count: 5) + Array(repeating: 3, count: 5)
        let report = ClassificationReport(truth: truth, predicted: Array(repeating: 0, count: 100), classNames: ["a", "b", "c", "d"])
        #expect(report.accuracy == 0.85)
        #expect(report.majorityBaselineAccuracy == 0.85)
        #expect(report.balancedAccuracy == 0.25)
        #expect(abs(report.macroF1 - (2 * 0.85 / 1.85) / 4) < 1e-12)
        #expect(report.neverPredicted == ["b", "c", "d"])
        #expect(report.zeroRecall == ["b", "c", "d"])
        #expect(report.confusion[0][0] == 85 && report.confusion[1][0] == 5)
    }

    @Test("paired comparison: a better model gets a small p, an equal one p = 1, families move together")
    func pairedComparison() {
        // 60 families of 3 clips, 4 classes by family.
        let truth = (0..<180).map { ($0 / 3) % 4 }
        let groups = (0..<180).map { "family-\($0 / 3)" }
        var generator = SeededGenerator(seed: 3)
        let guesses = truth.map { _ in Int.random(in: 0..<4, using: &generator) }
        // Right on 40 of the 60 families, else the guess.
        let better = truth.indices.map { ($0 / 3) % 3 != 0 ? truth[$0] : guesses[$0] }
        let clear = PairedComparison(truth: truth, first: better, second: guesses, classes: 4, groups: groups)
        let expectedDifference = ClassificationReport(truth: truth, predicted: better, classNames: ["a", "b", "c", "d"]).balancedAccuracy
            - ClassificationReport(truth: truth, predicted: guesses, classNames: ["a", "b", "c", "d"]).balancedAccuracy
        #expect(abs(clear.balancedAccuracyDifference - expectedDifference) < 1e-12)
        #expect(clear.pValue < 0.01, "\(clear)")
        let reversed = PairedComparison(truth: truth, first: guesses, second: better, classes: 4, groups: groups)
        #expect(reversed.pValue > 0.99, "one-sided: the worse model first")
        let same = PairedComparison(truth: truth, first: better, second: better, classes: 4, groups: groups)
        #expect(same.balancedAccuracyDifference == 0 && same.pValue == 1)
        // Better on just one family of 3 clips (out of 60 families): swapping that family alone
        // undoes the whole difference half the time, so p stays near 0.5 at the family level.
        var oneFamily = guesses
        for i in 0..<3 { oneFamily[i] = truth[i] }
        let weak = PairedComparison(truth: truth, first: oneFamily, second: guesses, classes: 4, groups: groups)
        #expect(weak.balancedAccuracyDifference > 0 && weak.pValue > 0.3, "\(weak)")
    }

    @Test("per-class precision, recall and F1")
    func perClass() {
        let report = ClassificationReport(truth: [0, 0, 1, 1], predicted: [0, 1, 1, 1], classNames: ["x", "y"])
        #expect(report.perClass[0].precision == 1 && report.perClass[0].recall == 0.5)
        #expect(abs(report.perClass[1].precision - 2.0 / 3) < 1e-12 && report.perClass[1].recall == 1)
        #expect(report.balancedAccuracy == 0.75)
    }

    @Test("chance level: shuffled answers score about 1/k; a real signal gets a small p, noise does not")
    func chanceLevel() {
        // 300 clips, 3 classes 200/60/40.
        let truth = Array(repeating: 0, count: 200) + Array(repeating: 1, count: 60) + Array(repeating: 2, count: 40)
        var generator = SeededGenerator(seed: 4)
        let noise = truth.map { _ in Int(generator.next() % 3) }
        let noisy = ClassificationReport(truth: truth, predicted: noise, classNames: ["a", "b", "c"])
        #expect(abs(noisy.chance.balancedAccuracyMedian - 1.0 / 3) < 0.03)
        #expect(noisy.chance.balancedAccuracy95thPercentile > noisy.chance.balancedAccuracyMedian)
        #expect(noisy.chance.indistinguishableFromChance, "random answers: p = \(noisy.chance.balancedAccuracyPValue)")
        // Right 60 % of the time, random otherwise: balanced accuracy near 0.73.
        let informed = truth.enumerated().map { index, label in index % 5 < 3 ? label : noise[index] }
        let good = ClassificationReport(truth: truth, predicted: informed, classNames: ["a", "b", "c"])
        #expect(good.balancedAccuracy > 0.6)
        #expect(!good.chance.indistinguishableFromChance)
        #expect(good.chance.balancedAccuracyPValue == 1.0 / 1001, "no shuffle reaches a real signal")
        #expect(good.chance == ClassificationReport(truth: truth, predicted: informed, classNames: ["a", "b", "c"]).chance, "deterministic")
    }

    @Test("chance by family: answers that follow families, not classes, are not mistaken for skill")
    func chanceByFamily() {
        // 40 families of 5 clips, each family one class (20 and 20). The answers are right for 26 of
        // the 40 families: clip by clip that looks like strong skill, family by family much less so.
        var truth: [Int] = [], predicted: [Int] = [], groups: [String] = []
        for family in 0..<40 {
            let label = family % 2
            let answer = family < 26 ? label : 1 - label
            for _ in 0..<5 { truth.append(label); predicted.append(answer); groups.append("family\(family)") }
        }
        let byClip = ClassificationReport(truth: truth, predicted: predicted, classNames: ["a", "b"])
        let byFamily = ClassificationReport(truth: truth, predicted: predicted, classNames: ["a", "b"], groups: groups)
        #expect(byClip.balancedAccuracy == byFamily.balancedAccuracy)
        #expect(byClip.chance.unit == "clip" && byFamily.chance.unit == "family")
        #expect(byClip.chance.balancedAccuracyPValue < 0.001, "clip by clip: p = \(byClip.chance.balancedAccuracyPValue)")
        #expect(byFamily.chance.balancedAccuracyPValue > 0.02, "family by family: p = \(byFamily.chance.balancedAccuracyPValue)")
        #expect(byFamily.chance.balancedAccuracy95thPercentile > byClip.chance.balancedAccuracy95thPercentile + 0.05,
                "families make a wider band of chance")
        // Families of a size no other family has keep their answers: with every family unique in
        // size nothing moves, and every shuffle scores exactly the observed figure.
        let unique = ClassificationReport(truth: [0, 1, 1, 0, 0, 0], predicted: [0, 1, 1, 1, 0, 0], classNames: ["a", "b"],
                                          groups: ["x", "y", "y", "z", "z", "z"])
        #expect(unique.chance.balancedAccuracyPValue == 1)
    }

    @Test("logistic regression separates separable classes and is balanced by default")
    func logistic() {
        var x: [[Double]] = [], y: [Int] = []
        for i in 0..<90 { x.append([Double(i % 7) * 0.1, 1 + Double(i % 5) * 0.05]); y.append(0) }
        for i in 0..<10 { x.append([Double(i % 7) * 0.1, -1 - Double(i % 5) * 0.05]); y.append(1) }
        let model = LogisticRegression(x: x, y: y, classes: 2)
        let predicted = x.map { model.predict($0) }
        let report = ClassificationReport(truth: y, predicted: predicted, classNames: ["big", "small"])
        #expect(report.balancedAccuracy == 1)
        let p = model.probabilities([0.3, -1.1])
        #expect(p[1] > 0.9 && abs(p.reduce(0, +) - 1) < 1e-9)
    }
}
