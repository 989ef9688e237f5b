import ArgumentParser
import CryLabDSP
import CryLabFeatures
import CryLabNN
import CryLabOneDNN
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

/// An encoder file and labeled data computed with its front end (a store must match it). A file
/// without a front end (a Keras `model.save`) takes a feature store's front end and
/// normalisation; audio cannot be analysed for it.
func loadEncoderAndData(encoder path: String, data: [String], threads: Int, quiet: Bool) throws -> (EncoderFile, FeatureStore) {
    var file = try EncoderFile(path: path, kerasArchitecture: .story, kerasLevels: 4)
    file.model.context = ComputeContext(threads: threads)
    if let frontEnd = file.frontEnd {
        return (file, try loadData(data, frontEnd: frontEnd, unlabeled: false, threads: threads, quiet: quiet))
    }
    guard data.count == 1, isFeatureStore(data[0]) else {
        throw noFrontEndError(encoder: path, isKeras: file.isKeras,
                              inputShape: file.origin == .kerasWeights ? nil : file.configuration.inputShape, fix: """
            pass a feature store (.h5) made with the front end the encoder was trained with instead, e.g. \
            `crylab features AUDIO --preset seed --n-mels \(file.inputMels) --frames \(file.inputFrames) -o store.h5`
            """)
    }
    let store = try FeatureStore.read(from: data[0])
    try file.adoptFrontEnd(of: store, storePath: data[0])
    if !quiet {
        let crop = store.frames > file.inputFrames ? "; its clips of \(store.frames) frames are cropped to their middle \(file.inputFrames)" : ""
        FileHandle.standardError.write(Data(String(format: "%@ has no CryLab front end: using %@'s front end and normalisation (mean %.5g, std %.5g)%@\n",
                                                   path, data[0], store.normalization.mean, store.normalization.std, crop).utf8))
    }
    return (file, store)
}

/// The error for audio given with an encoder file that has no front end to analyse it with.
/// `inputShape`: [mels, frames, ...] when the file says what it takes.
func noFrontEndError(encoder path: String, isKeras: Bool, inputShape: [Int]?, fix: String) -> ValidationError {
    let input = inputShape.map { "the \($0[0]) mels x \($0[1]) frames it takes" } ?? "spectrograms"
    return ValidationError("""
        \(path) has no CryLab front end (\(isKeras ? "a Keras file" : "none in its metadata")), so audio cannot be \
        turned into \(input) the way it was trained; \(fix)
        """)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
