import ArgumentParser
import CryLabDSP
import CryLabFeatures
import CryLabNN
import CryLabTraining
import Foundation

/// Reads `paths` as training data: one feature store (`.h5`), or audio files and folders that
/// are analysed now with `frontEnd` (labels from class folders unless `unlabeled`).
func loadData(_ paths: [String], frontEnd: FrontEnd, unlabeled: Bool, threads: Int, quiet: Bool) throws -> FeatureStore {
    if paths.count == 1, isFeatureStore(paths[0]) {
        return try FeatureStore.read(from: paths[0])
    }
    if let store = paths.first(where: isFeatureStore) {
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

/// Whether `path` names a feature store (HDF5) rather than audio.
func isFeatureStore(_ path: String) -> Bool {
    path.hasSuffix(".h5") || path.hasSuffix(".hdf5")
}

/// A CryLab encoder file and labeled data computed with its front end (a store must match it).
/// `command` names the subcommand in the error for a file without a front end.
func loadEncoderAndData(encoder path: String, data: [String], command: String, threads: Int, quiet: Bool) throws -> (EncoderFile, FeatureStore) {
    ComputeThreads.set(threads)
    let file = try EncoderFile(path: path, kerasArchitecture: .story, kerasLevels: 4)
    guard let frontEnd = file.frontEnd else {
        throw ValidationError("\(path) has no front end (a Keras file?); \(command) needs a CryLab encoder, e.g. Checkpoints/<run>/encoder.h5")
    }
    return (file, try loadData(data, frontEnd: frontEnd, unlabeled: false, threads: threads, quiet: quiet))
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
