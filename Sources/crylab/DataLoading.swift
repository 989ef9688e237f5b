import CryLabDSP
import CryLabFeatures
import Foundation

/// Reads `paths` as training data: one feature store (`.h5`), or audio files and folders that
/// are analysed now with `frontEnd` (labels from class folders unless `unlabeled`).
func loadData(_ paths: [String], frontEnd: FrontEnd, unlabeled: Bool, threads: Int, quiet: Bool) throws -> FeatureStore {
    if paths.count == 1, paths[0].hasSuffix(".h5") || paths[0].hasSuffix(".hdf5") {
        return try FeatureStore.read(from: paths[0])
    }
    if let store = paths.first(where: { $0.hasSuffix(".h5") }) {
        throw FeatureError.invalidOption("give either one feature store or audio folders, not both ('\(store)' with \(paths.count - 1) more)")
    }
    let sources = try discoverAudio(paths.map { URL(fileURLWithPath: $0) }, unlabeled: unlabeled)
    guard !sources.isEmpty else { throw FeatureError.noAudio(paths) }
    let store = try extractFeatures(from: sources, frontEnd: frontEnd, threads: threads, quiet: quiet)
    if !store.skipped.isEmpty && !quiet {
        FileHandle.standardError.write(Data("skipped \(store.skipped.count) unusable files (first: \(store.skipped[0].path): \(store.skipped[0].reason))\n".utf8))
    }
    return store
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
