import Foundation

/// One audio file found under an input, with what its location says about it.
public struct AudioSource: Sendable, Equatable {
    public var url: URL
    /// Path relative to the input it was found under (the file name for a file input).
    public var relativePath: String
    /// Class label (the class folder name `INPUT/<class>/...`, or from a `LabelRule`), nil when unlabeled.
    public var className: String?
    /// Recording source, used to keep one family's clips on one side of a split.
    public var group: String
}

/// File extensions CryLab treats as audio when walking folders.
public let audioExtensions: Set<String> = [
    "wav", "wave", "flac", "ogg", "oga", "aif", "aiff", "aifc", "au", "snd",
    "caf", "3gp", "3g2", "mp4", "m4a", "aac", "amr", "mp3",
]

/// How the recording source (`group`) of a file is found.
public enum GroupRule: Sendable {
    /// Donate-a-Cry names start with the app-instance UUID (one family's phone); other names
    /// use the file stem, so every file is its own group.
    case automatic
    /// The first capture group of a regular expression on the file name (or the whole match).
    case pattern(String)

    private static let instanceID = try! NSRegularExpression(
        pattern: "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

    public func group(forFileName name: String) throws -> String {
        let stem = (name as NSString).deletingPathExtension
        let range = NSRange(name.startIndex..., in: name)
        switch self {
        case .automatic:
            if let match = Self.instanceID.firstMatch(in: name, range: range), let found = Range(match.range, in: name) {
                return name[found].lowercased()
            }
            return stem
        case .pattern(let pattern):
            let expression: NSRegularExpression
            do { expression = try NSRegularExpression(pattern: pattern) } catch {
                throw FeatureError.invalidOption("--group-pattern '\(pattern)' is not a valid regular expression: \(error.localizedDescription)")
            }
            return firstCapture(of: expression, in: name) ?? stem
        }
    }
}

/// The first capture group of `expression`'s first match in `name`, or the whole match when the
/// expression has no group; nil when it does not match or the group took no part in the match.
func firstCapture(of expression: NSRegularExpression, in name: String) -> String? {
    guard let match = expression.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) else { return nil }
    let captured = match.numberOfRanges > 1 ? match.range(at: 1) : match.range
    return Range(captured, in: name).map { String(name[$0]) }
}

/// Where the class label of a file comes from.
public enum LabelRule: Sendable {
    /// The first folder below the input (`INPUT/<class>/...`); files directly in the input, and
    /// file inputs, are unlabeled.
    case folders
    /// The first capture group (or the whole match) of a regular expression on the file name,
    /// for corpora that encode the class in the name, such as the Free Spoken Digit Dataset's
    /// `{digit}_{speaker}_{index}.wav` with `^(\d+)_`. Every file must match; folders are ignored.
    case pattern(String)
    /// A row per file in a CSV manifest, which may also give the file's group.
    case manifest(LabelManifest)

    /// Sets the label (and, from a manifest, the group) of every source.
    ///
    /// - Throws: `FeatureError.invalidOption` for an invalid pattern, a file name the pattern does
    ///   not match (or a pattern that matches no file at all), or a file the manifest has no row for.
    func apply(to sources: [AudioSource]) throws -> [AudioSource] {
        switch self {
        case .folders:
            return sources
        case .pattern(let pattern):
            return try Self.labelByPattern(pattern, sources)
        case .manifest(let manifest):
            return try Self.labelByManifest(manifest, sources)
        }
    }

    private static func labelByPattern(_ pattern: String, _ sources: [AudioSource]) throws -> [AudioSource] {
        let expression: NSRegularExpression
        do { expression = try NSRegularExpression(pattern: pattern) } catch {
            throw FeatureError.invalidOption("--label-pattern '\(pattern)' is not a valid regular expression: \(error.localizedDescription)")
        }
        var labeled = sources
        var unmatched: [Int] = []
        for index in labeled.indices {
            let label = firstCapture(of: expression, in: labeled[index].url.lastPathComponent)
            if let label, !label.isEmpty { labeled[index].className = label } else { unmatched.append(index) }
        }
        guard let first = unmatched.first else { return labeled }
        let name = sources[first].url.lastPathComponent
        if unmatched.count == sources.count {
            throw FeatureError.invalidOption("""
                --label-pattern '\(pattern)' gives a label for none of the \(sources.count) audio files (for example \
                '\(name)'); it is matched against the file name only, not its folders, and its first capture group \
                (or the whole match) must be non-empty: change the pattern to fit names like that one
                """)
        }
        let others = andOthers(unmatched.count - 1)
        throw FeatureError.invalidOption("""
            \(sources[first].url.path): the file name '\(name)' does not match --label-pattern '\(pattern)'\(others), \
            so it has no label; change the pattern so it matches every audio file name, or move the file out of the input
            """)
    }

    private static func labelByManifest(_ manifest: LabelManifest, _ sources: [AudioSource]) throws -> [AudioSource] {
        var labeled = sources
        var missing: [Int] = []
        for index in labeled.indices {
            guard let entry = manifest.entry(for: labeled[index].url) else {
                missing.append(index)
                continue
            }
            labeled[index].className = entry.label
            if let group = entry.group { labeled[index].group = group }
        }
        guard let first = missing.first else { return labeled }
        let others = andOthers(missing.count - 1)
        throw FeatureError.invalidOption("""
            \(sources[first].url.path): no row in the manifest \(manifest.path)\(others); add a row with file_name \
            '\(manifest.fileName(for: sources[first].url))' and its label, or remove the file from the input
            """)
    }
}

/// " (nor do 3 other files)", for an error about one file of several; empty when there are none.
private func andOthers(_ count: Int) -> String {
    switch count {
    case ...0: return ""
    case 1: return " (nor does 1 other file)"
    default: return " (nor do \(count) other files)"
    }
}

/// Class names in the order a feature store numbers them: numerically when every name is an
/// integer (so "2" comes before "10"), else lexicographically.
public func sortedClassNames(_ names: some Sequence<String>) -> [String] {
    let unique = Array(Set(names))
    let numbers = unique.compactMap { Int($0) }
    guard numbers.count == unique.count else { return unique.sorted() }
    return unique.sorted { (Int($0)!, $0) < (Int($1)!, $1) }
}

/// Finds the audio files under `inputs` (files or folders, walked recursively, sorted by path),
/// labeled by `labels`: with `.folders`, a file inside `INPUT/<class>/` or deeper is labeled
/// `<class>` unless `unlabeled`; a pattern or manifest labels every file and ignores folders.
///
/// - Throws: `FeatureError.inputNotFound` for a missing input; `FeatureError.invalidOption` when
///   `unlabeled` is combined with a pattern or manifest, or when `labels` cannot label every file.
public func discoverAudio(_ inputs: [URL], unlabeled: Bool = false, groups: GroupRule = .automatic,
                          labels: LabelRule = .folders) throws -> [AudioSource] {
    let byFolder: Bool
    if case .folders = labels { byFolder = true } else { byFolder = false }
    if unlabeled && !byFolder {
        throw FeatureError.invalidOption("unlabeled discovery cannot also take labels from a pattern or manifest; drop one of the two")
    }
    var sources: [AudioSource] = []
    let manager = FileManager.default
    for input in inputs {
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: input.path, isDirectory: &isDirectory) else {
            throw FeatureError.inputNotFound(input.path)
        }
        if !isDirectory.boolValue {
            sources.append(AudioSource(url: input, relativePath: input.lastPathComponent, className: nil,
                                       group: try groups.group(forFileName: input.lastPathComponent)))
            continue
        }
        guard let walker = manager.enumerator(at: input, includingPropertiesForKeys: [.isRegularFileKey],
                                              options: [.skipsHiddenFiles]) else {
            throw FeatureError.inputNotFound(input.path)
        }
        let rootComponents = input.standardizedFileURL.pathComponents
        var found: [AudioSource] = []
        for case let url as URL in walker {
            guard audioExtensions.contains(url.pathExtension.lowercased()),
                  (try? url.resolvingSymlinksInPath().resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true
            else { continue }
            let components = Array(url.standardizedFileURL.pathComponents.dropFirst(rootComponents.count))
            let className = (byFolder && !unlabeled && components.count >= 2) ? components[0] : nil
            found.append(AudioSource(url: url, relativePath: components.joined(separator: "/"), className: className,
                                     group: try groups.group(forFileName: url.lastPathComponent)))
        }
        sources.append(contentsOf: found.sorted { $0.relativePath < $1.relativePath })
    }
    return try labels.apply(to: sources)
}

/// Errors of the feature pipeline, each saying how to fix the problem.
public enum FeatureError: Error, CustomStringConvertible, Equatable {
    case inputNotFound(String)
    case noAudio([String])
    case noUsableFile(total: Int, firstReason: String)
    case invalidOption(String)
    case invalidStore(path: String, detail: String)
    /// A label manifest (CSV) that cannot be used; `line` is 1-based, nil for the file as a whole.
    case invalidManifest(path: String, line: Int?, detail: String)

    public var description: String {
        switch self {
        case .inputNotFound(let path):
            return "\(path): no such file or folder; check the path."
        case .noAudio(let inputs):
            return "no audio files under \(inputs.joined(separator: ", ")) (looked for \(audioExtensions.sorted().joined(separator: ", ")))."
        case .noUsableFile(let total, let reason):
            return "none of the \(total) audio files could be used; the first failure: \(reason)"
        case .invalidOption(let message):
            return message
        case .invalidStore(let path, let detail):
            return "\(path): not a usable CryLab feature store (\(detail)); re-create it with `crylab features`."
        case .invalidManifest(let path, let line, let detail):
            return "\(path)\(line.map { ", line \($0)" } ?? ""): not a usable label manifest: \(detail)"
        }
    }
}
