import Foundation

/// One audio file found under an input, with what its location says about it.
public struct AudioSource: Sendable, Equatable {
    public var url: URL
    /// Path relative to the input it was found under (the file name for a file input).
    public var relativePath: String
    /// Class folder name (`INPUT/<class>/...`), or nil when unlabeled.
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
            guard let match = expression.firstMatch(in: name, range: range) else { return stem }
            let captured = match.numberOfRanges > 1 ? match.range(at: 1) : match.range
            return Range(captured, in: name).map { String(name[$0]) } ?? stem
        }
    }
}

/// Finds the audio files under `inputs` (files or folders, walked recursively, sorted by path).
/// A file directly inside `INPUT/<class>/` or deeper is labeled `<class>` unless `unlabeled`.
public func discoverAudio(_ inputs: [URL], unlabeled: Bool = false, groups: GroupRule = .automatic) throws -> [AudioSource] {
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
            let className = (!unlabeled && components.count >= 2) ? components[0] : nil
            found.append(AudioSource(url: url, relativePath: components.joined(separator: "/"), className: className,
                                     group: try groups.group(forFileName: url.lastPathComponent)))
        }
        sources.append(contentsOf: found.sorted { $0.relativePath < $1.relativePath })
    }
    return sources
}

/// Errors of the feature pipeline, each saying how to fix the problem.
public enum FeatureError: Error, CustomStringConvertible, Equatable {
    case inputNotFound(String)
    case noAudio([String])
    case noUsableFile(total: Int, firstReason: String)
    case invalidOption(String)
    case invalidStore(path: String, detail: String)

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
        }
    }
}
