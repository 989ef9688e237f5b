import CryLabFeatures
import Foundation

/// What a clip's class is read from.
public enum LabelSource: String, Sendable, CaseIterable, Codable {
    /// The class folder the clip was found in (the feature store's labels).
    case folder
    /// The baby's age in a Donate-a-Cry file name (`uuid-timestamp-version-gender-age-reason`):
    /// 04 (0-4 weeks), 48 (4-8 weeks), 26 (2-6 months), 72 (7 months-2 years), 22 (over 2 years).
    case age
    /// The baby's gender in a Donate-a-Cry file name: m or f.
    case gender

    /// The classes this source can give, in their natural order.
    public var allClasses: [String]? {
        switch self {
        case .folder: nil
        case .age: ["04", "48", "26", "72", "22"]
        case .gender: ["m", "f"]
        }
    }

    /// The class of the clip stored from `path`, or an error naming the file and the expected form.
    public func label(ofPath path: String) throws -> String {
        let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let fields = name.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        let value: String? = switch self {
        case .folder: nil
        case .age: fields.count >= 3 ? fields[fields.count - 2] : nil
        case .gender: fields.count >= 3 ? fields[fields.count - 3] : nil
        }
        guard let value, let classes = allClasses, classes.contains(value) else {
            throw FeatureError.invalidOption("'\(path)': no \(rawValue) in the file name; --probe-target \(rawValue) reads Donate-a-Cry names (uuid-timestamp-version-gender-age-reason, e.g. ...-1.7-m-26-hu.3gp), where \(rawValue) is one of \((allClasses ?? []).joined(separator: ", "))")
        }
        return value
    }
}

/// The clips of a feature store that a classification run uses, with labels remapped to the
/// chosen classes (in the order given), and everything else dropped.
public struct LabeledSet: Sendable {
    public var classNames: [String]
    /// Indices into the store, and the class (into `classNames`) of each.
    public var indices: [Int]
    public var labels: [Int]
    public var groups: [String]

    /// - Parameters:
    ///   - classes: class names to keep, in output order; `nil` keeps every labeled class.
    ///   - merge: extra store class names folded into a kept class (e.g. `["colic": "belly_pain"]`).
    public init(store: FeatureStore, classes: [String]?, merge: [String: String] = [:]) throws {
        let wanted = classes ?? store.classNames
        for name in wanted where !store.classNames.contains(name) && !merge.values.contains(name) {
            throw FeatureError.invalidOption("class '\(name)' is not in the feature store; it has: \(store.classNames.joined(separator: ", "))")
        }
        classNames = wanted
        indices = []
        labels = []
        groups = []
        for index in 0..<store.count where store.labels[index] >= 0 {
            let name = store.classNames[Int(store.labels[index])]
            guard let target = wanted.firstIndex(of: merge[name] ?? name) else { continue }
            indices.append(index)
            labels.append(target)
            groups.append(store.groups[index])
        }
        guard !indices.isEmpty else {
            throw FeatureError.invalidOption("no labeled clip of the classes \(wanted.joined(separator: ", ")) in the feature store")
        }
    }

    /// Every clip of `store` labeled by `source` read from its file name (folder labels play no
    /// part), keeping `classes` (in that order; `nil` keeps every class that occurs).
    public init(store: FeatureStore, source: LabelSource, classes: [String]?) throws {
        guard let all = source.allClasses else {
            try self.init(store: store, classes: classes)
            return
        }
        let names = try store.paths.map { try source.label(ofPath: $0) }
        if let classes, let unknown = classes.first(where: { !all.contains($0) }) {
            throw FeatureError.invalidOption("class '\(unknown)' is not among the \(source.rawValue) classes \(all.joined(separator: ", "))")
        }
        let wanted = classes ?? all.filter(names.contains)
        let kept = names.indices.filter { wanted.contains(names[$0]) }
        guard !kept.isEmpty else {
            throw FeatureError.invalidOption("no clip of the \(source.rawValue) classes \(wanted.joined(separator: ", ")) in the feature store")
        }
        self.init(classNames: wanted, indices: kept, labels: kept.map { wanted.firstIndex(of: names[$0])! },
                  groups: kept.map { store.groups[$0] })
    }

    init(classNames: [String], indices: [Int], labels: [Int], groups: [String]) {
        self.classNames = classNames
        self.indices = indices
        self.labels = labels
        self.groups = groups
    }

    public var count: Int { indices.count }
}

/// Per-fold and pooled out-of-fold figures of a cross-validation.
public struct CrossValidationResult: Codable, Sendable {
    public var method: String
    public var folds: [ClassificationReport]
    /// Every clip predicted once, by the model that did not see its fold.
    public var pooled: ClassificationReport
    /// Out-of-fold class probabilities per clip (rows follow the labeled set's order).
    public var probabilities: [[Double]]

    public var summary: String {
        var lines = ["\(method): pooled out-of-fold over \(folds.count) folds"]
        lines.append(pooled.text)
        for (index, fold) in folds.enumerated() {
            lines.append(String(format: "  fold %d: balanced accuracy %.3f, macro-F1 %.3f, accuracy %.3f",
                                index + 1, fold.balancedAccuracy, fold.macroF1, fold.accuracy))
        }
        return lines.joined(separator: "\n")
    }
}

/// Cross-validates any classifier given as `fit(trainPositions, foldIndex) -> predictor`, where
/// positions index `set` and the predictor returns class probabilities for a list of positions.
public func crossValidate(_ set: LabeledSet, folds: [Fold], method: String,
                          fit: (_ train: [Int], _ fold: Int) throws -> ([Int]) -> [[Double]]) rethrows -> CrossValidationResult {
    var probabilities = [[Double]](repeating: [], count: set.count)
    var reports: [ClassificationReport] = []
    var tested: [Int] = []
    for (foldIndex, fold) in folds.enumerated() {
        let predictor = try fit(fold.train, foldIndex)
        let predictions = predictor(fold.test)
        var truth: [Int] = [], predicted: [Int] = []
        for (position, p) in zip(fold.test, predictions) {
            probabilities[position] = p
            truth.append(set.labels[position])
            predicted.append(argmax(p))
        }
        tested += fold.test
        reports.append(ClassificationReport(truth: truth, predicted: predicted, classNames: set.classNames,
                                            groups: fold.test.map { set.groups[$0] }))
    }
    // Pooled over every clip that was in a test fold (all clips for k-fold, the test share for one split).
    let pooledPositions = tested.sorted()
    return CrossValidationResult(method: method, folds: reports,
                                 pooled: ClassificationReport(truth: pooledPositions.map { set.labels[$0] },
                                                              predicted: pooledPositions.map { argmax(probabilities[$0]) },
                                                              classNames: set.classNames, groups: pooledPositions.map { set.groups[$0] }),
                                 probabilities: probabilities)
}

func argmax(_ values: [Double]) -> Int {
    values.indices.max { values[$0] < values[$1] } ?? 0
}

/// Per-clip mean and standard deviation of each log-mel band: the baseline's features.
/// Power spectrograms are converted to dB first (10 log10 max(x, 1e-10)).
public func bandStatistics(_ store: FeatureStore, index: Int) -> [Double] {
    let spectrogram = store.spectrogram(at: index)
    var features: [Double] = []
    features.reserveCapacity(2 * store.mels)
    var stds: [Double] = []
    for band in 0..<store.mels {
        var sum = 0.0, squares = 0.0
        for frame in 0..<store.frames {
            var value = Double(spectrogram.values[band * store.frames + frame])
            if !store.frontEnd.toDB { value = 10 * log10(max(value, 1e-10)) }
            sum += value
            squares += value * value
        }
        let mean = sum / Double(store.frames)
        features.append(mean)
        stds.append(max(0, squares / Double(store.frames) - mean * mean).squareRoot())
    }
    return features + stds
}

/// The baseline in the repository: logistic regression (class-balanced, L2) on per-clip mean
/// and standard deviation of log-mel bands, cross-validated on `folds`.
public func logisticRegressionBaseline(store: FeatureStore, set: LabeledSet, folds: [Fold], l2: Double = 1e-2) -> CrossValidationResult {
    let features = set.indices.map { bandStatistics(store, index: $0) }
    return crossValidate(set, folds: folds, method: "logistic regression on log-mel band mean+std") { train, _ in
        let model = LogisticRegression(x: train.map { features[$0] }, y: train.map { set.labels[$0] },
                                       classes: set.classNames.count, l2: l2)
        return { positions in positions.map { model.probabilities(features[$0]) } }
    }
}
