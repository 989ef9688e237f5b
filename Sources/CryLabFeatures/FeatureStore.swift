import CryLabDSP
import CryLabHDF5
import Foundation

/// Spectrograms of many clips with their labels, sources and front end: what `crylab features`
/// writes and what training reads.
///
/// HDF5 layout (readable with h5py):
/// - `features`: float32 `[clips, mels, frames]`
/// - `label`: int32 `[clips]`, an index into `class_names`, -1 when unlabeled
/// - `path`: UTF-8 strings `[clips]`, relative to the input folder
/// - `group`: UTF-8 strings `[clips]`, the recording source (Donate-a-Cry app instance)
/// - `duration`: float64 `[clips]`, seconds of audio used; `source_rate`: int32 `[clips]`, Hz
/// - `skipped/path`, `skipped/reason`: UTF-8 strings, the files that could not be used and why
/// - root attributes: `format` ("crylab-features"), `format_version` (1), `class_names`,
///   `front_end` (JSON of every front-end parameter) and each parameter on its own
///   (`sample_rate`, `n_fft`, `hop_length`, `n_mels`, ...), `norm_mean`, `norm_std`,
///   `norm_band_mean`, `norm_band_std` (statistics over all stored clips)
public struct FeatureStore: Sendable {
    public static let formatName = "crylab-features"
    public static let formatVersion: Int64 = 1

    public var frontEnd: FrontEnd
    public var classNames: [String]
    /// features: [clips, mels, frames], row-major
    public var features: [Float]
    public var mels: Int
    public var frames: Int
    public var labels: [Int32]
    public var paths: [String]
    public var groups: [String]
    public var durations: [Double]
    public var sourceRates: [Int32]
    public var normalization: NormalizationStats
    public var skipped: [(path: String, reason: String)]

    public var count: Int { labels.count }

    public init(frontEnd: FrontEnd, classNames: [String], features: [Float], mels: Int, frames: Int, labels: [Int32],
                paths: [String], groups: [String], durations: [Double], sourceRates: [Int32],
                normalization: NormalizationStats, skipped: [(path: String, reason: String)]) {
        self.frontEnd = frontEnd
        self.classNames = classNames
        self.features = features
        self.mels = mels
        self.frames = frames
        self.labels = labels
        self.paths = paths
        self.groups = groups
        self.durations = durations
        self.sourceRates = sourceRates
        self.normalization = normalization
        self.skipped = skipped
    }

    /// One clip's spectrogram, [mels, frames].
    public func spectrogram(at index: Int) -> Spectrogram {
        let size = mels * frames
        return Spectrogram(rows: mels, frames: frames, values: Array(features[(index * size)..<((index + 1) * size)]))
    }

    /// The clips at `indices` (in that order) as a store of their own, with the same front end,
    /// class names and normalisation statistics; the skipped list is kept.
    public func subset(_ indices: [Int]) -> FeatureStore {
        let size = mels * frames
        var values: [Float] = []
        values.reserveCapacity(indices.count * size)
        for index in indices { values += features[(index * size)..<((index + 1) * size)] }
        return FeatureStore(frontEnd: frontEnd, classNames: classNames, features: values, mels: mels, frames: frames,
                            labels: indices.map { labels[$0] }, paths: indices.map { paths[$0] },
                            groups: indices.map { groups[$0] }, durations: indices.map { durations[$0] },
                            sourceRates: indices.map { sourceRates[$0] }, normalization: normalization, skipped: skipped)
    }

    /// This store's clips followed by `other`'s (same front end and size; class names must agree
    /// or `other` must be unlabeled, whose clips stay unlabeled).
    public func appending(_ other: FeatureStore) -> FeatureStore {
        precondition(other.frontEnd == frontEnd && other.mels == mels && other.frames == frames,
                     "appending a store of another front end or size")
        let otherLabels: [Int32] = other.labels.map { label in
            guard label >= 0, let index = classNames.firstIndex(of: other.classNames[Int(label)]) else { return -1 }
            return Int32(index)
        }
        return FeatureStore(frontEnd: frontEnd, classNames: classNames, features: features + other.features, mels: mels,
                            frames: frames, labels: labels + otherLabels, paths: paths + other.paths,
                            groups: groups + other.groups, durations: durations + other.durations,
                            sourceRates: sourceRates + other.sourceRates, normalization: normalization,
                            skipped: skipped + other.skipped)
    }

    /// Writes the store atomically: `path` appears only when complete.
    public func write(to path: String) throws {
        try HDF5File.writeAtomically(to: path) { file in
            let root = try file.root
            try root.write(features, shape: [count, mels, frames], as: "features")
            try root.write(labels, shape: [count], as: "label")
            try root.writeStrings(paths, as: "path")
            try root.writeStrings(groups, as: "group")
            try root.write(durations, shape: [count], as: "duration")
            try root.write(sourceRates, shape: [count], as: "source_rate")
            let skippedGroup = try root.createGroup("skipped")
            try skippedGroup.writeStrings(skipped.map(\.path), as: "path")
            try skippedGroup.writeStrings(skipped.map(\.reason), as: "reason")

            try root.setAttribute("format", .string(Self.formatName))
            try root.setAttribute("format_version", .int(Self.formatVersion))
            try root.setAttribute("class_names", .strings(classNames))
            let json = try JSONEncoder.sorted.encode(frontEnd)
            try root.setAttribute("front_end", .string(String(decoding: json, as: UTF8.self)))
            for (name, value) in frontEnd.attributes { try root.setAttribute(name, value) }
            try root.setAttribute("norm_mean", .double(Double(normalization.mean)))
            try root.setAttribute("norm_std", .double(Double(normalization.std)))
            if let means = normalization.bandMeans, let stds = normalization.bandStds {
                try root.setAttribute("norm_band_mean", .doubles(means.map(Double.init)))
                try root.setAttribute("norm_band_std", .doubles(stds.map(Double.init)))
            }
        }
    }

    /// Reads a store, checking its format and that every per-clip dataset has one entry per clip.
    public static func read(from path: String) throws -> FeatureStore {
        try FeatureStoreReader(path: path).store()
    }
}

/// An open feature store whose per-clip metadata (labels, paths, groups, ...) is read and checked
/// when it opens, and whose spectrograms are read on demand: a process that needs some clips
/// (one rank's share of each batch, one fold) reads those alone, through a hyperslab selection,
/// never the whole `features` dataset.
public final class FeatureStoreReader {
    public let path: String
    /// Every clip's metadata, with no spectrograms (`features` empty).
    private let header: FeatureStore
    private let root: HDF5Group

    public var count: Int { header.count }
    public var mels: Int { header.mels }
    public var frames: Int { header.frames }
    public var frontEnd: FrontEnd { header.frontEnd }
    public var classNames: [String] { header.classNames }
    public var labels: [Int32] { header.labels }
    public var paths: [String] { header.paths }
    public var groups: [String] { header.groups }
    public var normalization: NormalizationStats { header.normalization }
    /// Every clip's metadata as a store whose `features` are empty.
    public var metadata: FeatureStore { header }

    /// Opens the store at `path` and checks its format, the shape of `features` and that every
    /// per-clip dataset has one entry per clip.
    public init(path: String) throws {
        self.path = path
        root = try HDF5File.open(path).root
        guard (try? root.stringAttribute("format")) == FeatureStore.formatName else {
            throw FeatureError.invalidStore(path: path, detail: "no format attribute '\(FeatureStore.formatName)'")
        }
        let version = try root.attribute("format_version")
        guard version == .int(FeatureStore.formatVersion) else {
            throw FeatureError.invalidStore(path: path, detail: "format_version \(version), this CryLab reads \(FeatureStore.formatVersion)")
        }
        let shape = try root.shape(of: "features")
        guard shape.count == 3 else {
            throw HDF5Error.wrongShape(file: path, path: "/features", expected: "rank 3", found: shape)
        }
        let clips = shape[0]
        let labels = try root.read("label", as: Int32.self, rank: 1).values
        let paths = try root.readStrings("path")
        let groups = try root.readStrings("group")
        let durations = try root.read("duration", as: Double.self, rank: 1).values
        let rates = try root.read("source_rate", as: Int32.self, rank: 1).values
        for (name, count) in [("label", labels.count), ("path", paths.count), ("group", groups.count),
                              ("duration", durations.count), ("source_rate", rates.count)] where count != clips {
            throw FeatureError.invalidStore(path: path, detail: "'\(name)' has \(count) entries for \(clips) clips")
        }
        let classNames = try root.stringsAttribute("class_names").filter { !$0.isEmpty }
        if let bad = labels.first(where: { $0 < -1 || Int($0) >= classNames.count }) {
            throw FeatureError.invalidStore(path: path, detail: "label \(bad) but \(classNames.count) class names")
        }
        let frontEndJSON = try root.stringAttribute("front_end")
        let frontEnd: FrontEnd
        do { frontEnd = try JSONDecoder().decode(FrontEnd.self, from: Data(frontEndJSON.utf8)) } catch {
            throw FeatureError.invalidStore(path: path, detail: "front_end attribute is not valid JSON: \(error)")
        }
        var normalization = NormalizationStats(mean: Float(try root.doubleAttribute("norm_mean")),
                                               std: Float(try root.doubleAttribute("norm_std")))
        if root.hasAttribute("norm_band_mean"), case .doubles(let means) = try root.attribute("norm_band_mean"),
           case .doubles(let stds) = try root.attribute("norm_band_std"), means.count == shape[1], stds.count == shape[1] {
            normalization.bandMeans = means.map(Float.init)
            normalization.bandStds = stds.map(Float.init)
        }
        var skipped: [(String, String)] = []
        if root.contains("skipped") {
            let group = try root.openGroup("skipped")
            skipped = Array(zip(try group.readStrings("path"), try group.readStrings("reason")))
        }
        header = FeatureStore(frontEnd: frontEnd, classNames: classNames, features: [], mels: shape[1],
                              frames: shape[2], labels: labels, paths: paths, groups: groups, durations: durations,
                              sourceRates: rates, normalization: normalization, skipped: skipped)
    }

    /// The spectrograms of `clips` (in that order, repeats allowed), `[clips.count, mels, frames]`
    /// row-major; only those clips are read.
    public func features(of clips: [Int]) throws -> [Float] {
        guard !clips.isEmpty else { return [] }
        return try root.readRows("features", rows: clips, as: Float.self, rank: 3).values
    }

    /// The clips at `clips` (in that order; every clip when nil) as a store, reading only their
    /// spectrograms; front end, class names, normalisation and the skipped list as the file's.
    public func store(clips: [Int]? = nil) throws -> FeatureStore {
        var store = header
        if let clips {
            store.features = try features(of: clips)
            store.labels = clips.map { header.labels[$0] }
            store.paths = clips.map { header.paths[$0] }
            store.groups = clips.map { header.groups[$0] }
            store.durations = clips.map { header.durations[$0] }
            store.sourceRates = clips.map { header.sourceRates[$0] }
        } else {
            let (features, shape) = try root.read("features", as: Float.self, rank: 3)
            guard shape == [header.count, header.mels, header.frames] else {
                throw HDF5Error.wrongShape(file: path, path: "/features", expected: "\([header.count, header.mels, header.frames])", found: shape)
            }
            store.features = features
        }
        return store
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

extension FrontEnd {
    /// Every parameter as a root attribute with librosa's name, for readers without JSON.
    var attributes: [(String, HDF5AttributeValue)] {
        var list: [(String, HDF5AttributeValue)] = [
            ("sample_rate", .int(Int64(sampleRate))), ("n_fft", .int(Int64(nFFT))),
            ("hop_length", .int(Int64(resolvedHopLength))), ("win_length", .int(Int64(resolvedWinLength))),
            ("n_mels", .int(Int64(nMels))), ("fmin", .double(fMin)), ("fmax", .double(resolvedFMax)),
            ("power", .double(Double(power))), ("mel_scale", .string(melScale.rawValue)),
            ("mel_norm", .string(melNorm.rawValue)), ("to_db", .int(toDB ? 1 : 0)),
            ("amin", .double(Double(amin))), ("fit", .string(fit.rawValue)),
        ]
        if let duration { list.append(("duration", .double(duration))) }
        if let frames { list.append(("frames", .int(Int64(frames)))) }
        if let topDB { list.append(("top_db", .double(Double(topDB)))) }
        return list
    }
}

extension FeatureStore {
    /// Writes per-clip `values` (first axis: clips) with this store's path, group and label
    /// columns and class names, atomically: e.g. embeddings for other tools.
    public static func writeTable(to path: String, values: [Float], shape: [Int], name: String, like store: FeatureStore) throws {
        try HDF5File.writeAtomically(to: path) { file in
            let root = try file.root
            try root.write(values, shape: shape, as: name)
            try root.write(store.labels, shape: [store.count], as: "label")
            try root.writeStrings(store.paths, as: "path")
            try root.writeStrings(store.groups, as: "group")
            try root.setAttribute("class_names", .strings(store.classNames))
        }
    }
}
