import CryLabCore
import CryLabFeatures
import Foundation

/// Train/test index sets that keep every recording source (family) on one side.
public struct Fold: Sendable, Equatable {
    public var train: [Int]
    public var test: [Int]
}

/// k folds, grouped and stratified: every group lands in exactly one test fold, and groups are
/// dealt so each fold's class counts are as close as possible to the whole set's (groups are
/// taken rarest-class first, largest first, each to the fold that needs its class most).
///
/// - Parameters:
///   - labels: class index per clip
///   - groups: recording source per clip (clips of one group never straddle train and test)
///   - seed: breaks ties between equal groups, so folds are reproducible
public func groupedStratifiedFolds(labels: [Int], groups: [String], folds k: Int, seed: UInt64) -> [Fold] {
    precondition(labels.count == groups.count && k >= 2, "need one group per label and at least 2 folds")
    let classes = (labels.max() ?? 0) + 1
    var members: [String: [Int]] = [:]
    for (index, group) in groups.enumerated() { members[group, default: []].append(index) }
    var generator = SeededGenerator(seed: seed)
    var groupNames = members.keys.sorted()
    groupNames.shuffle(using: &generator)
    let classTotals = (0..<classes).map { c in labels.filter { $0 == c }.count }
    func counts(_ group: String) -> [Int] {
        var result = [Int](repeating: 0, count: classes)
        for index in members[group]! { result[labels[index]] += 1 }
        return result
    }
    // The rarest class a group holds decides its order: rare classes are dealt first.
    let ordered = groupNames.enumerated().sorted { lhs, rhs in
        let a = counts(lhs.element), b = counts(rhs.element)
        let rareA = (0..<classes).filter { a[$0] > 0 }.map { classTotals[$0] }.min() ?? Int.max
        let rareB = (0..<classes).filter { b[$0] > 0 }.map { classTotals[$0] }.min() ?? Int.max
        if rareA != rareB { return rareA < rareB }
        let sizeA = a.reduce(0, +), sizeB = b.reduce(0, +)
        if sizeA != sizeB { return sizeA > sizeB }
        return lhs.offset < rhs.offset
    }.map(\.element)
    var foldCounts = [[Int]](repeating: [Int](repeating: 0, count: classes), count: k)
    var foldGroups = [[String]](repeating: [], count: k)
    for group in ordered {
        let c = counts(group)
        // The fold whose share of this group's classes is furthest below target; ties: smaller fold.
        let best = (0..<k).min { f, g in
            let deficitF = (0..<classes).reduce(0.0) { $0 + Double(c[$1]) * (Double(foldCounts[f][$1]) - Double(classTotals[$1]) / Double(k)) }
            let deficitG = (0..<classes).reduce(0.0) { $0 + Double(c[$1]) * (Double(foldCounts[g][$1]) - Double(classTotals[$1]) / Double(k)) }
            if deficitF != deficitG { return deficitF < deficitG }
            return foldCounts[f].reduce(0, +) < foldCounts[g].reduce(0, +)
        }!
        foldGroups[best].append(group)
        for cls in 0..<classes { foldCounts[best][cls] += c[cls] }
    }
    return (0..<k).map { f in
        let test = foldGroups[f].flatMap { members[$0]! }.sorted()
        let testSet = Set(test)
        return Fold(train: (0..<labels.count).filter { !testSet.contains($0) }, test: test)
    }
}

/// A held-out share of whole groups (for validation inside a training set): `fraction` of the
/// groups, chosen by `seed`.
public func groupedHoldout(groups: [String], indices: [Int], fraction: Double, seed: UInt64) -> (train: [Int], holdout: [Int]) {
    var names = Array(Set(indices.map { groups[$0] })).sorted()
    var generator = SeededGenerator(seed: seed)
    names.shuffle(using: &generator)
    let count = max(1, Int((Double(names.count) * fraction).rounded()))
    let held = Set(names.prefix(count))
    return (indices.filter { !held.contains(groups[$0]) }, indices.filter { held.contains(groups[$0]) })
}

/// The story's split: a random share of clips, ignoring groups (leaks families across the split;
/// kept only to reproduce the seed recipe).
public func randomSplit(count: Int, testFraction: Double, seed: UInt64) -> Fold {
    var indices = Array(0..<count)
    var generator = SeededGenerator(seed: seed)
    indices.shuffle(using: &generator)
    let testCount = Int((Double(count) * testFraction).rounded())
    return Fold(train: Array(indices[testCount...]).sorted(), test: Array(indices[..<testCount]).sorted())
}

/// One fold per recording source: each group is the test set once, every other group trains.
/// The honest protocol when there are few groups (FSDD's five speakers), where k-fold would put
/// several groups together in a test fold and leave fewer to train on.
public func leaveOneGroupOutFolds(groups: [String]) -> [Fold] {
    let names = Array(Set(groups)).sorted()
    return names.map { name in
        Fold(train: groups.indices.filter { groups[$0] != name }, test: groups.indices.filter { groups[$0] == name })
    }
}

/// `perClass` labeled clips of every class, drawn without replacement from `positions` (a
/// training fold: the draw never reaches outside it), or every clip of a class that has fewer.
/// The same `seed` gives the same draw, so every model compared on a curve sees the same labels.
/// - Returns: the drawn positions, sorted.
public func drawLabels(from positions: [Int], labels: [Int], perClass: Int, seed: UInt64) -> [Int] {
    var byClass: [Int: [Int]] = [:]
    for position in positions { byClass[labels[position], default: []].append(position) }
    var generator = SeededGenerator(seed: seed)
    var drawn: [Int] = []
    for label in byClass.keys.sorted() {
        drawn += byClass[label]!.shuffled(using: &generator).prefix(perClass)
    }
    return drawn.sorted()
}
