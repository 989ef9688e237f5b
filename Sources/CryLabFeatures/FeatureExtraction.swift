import CryLabAudio
import CryLabCore
import CryLabDSP
import Foundation

/// What happened to one file.
enum ClipOutcome: Sendable {
    case used(spectrogram: [Float], duration: Double, sourceRate: Int)
    case skipped(reason: String)
}

/// Decodes, checks and analyses one file with `frontEnd` (the evaluation way: centre crops).
/// A file that cannot be used gives a reason instead of an error, so a batch run goes on.
func analyse(_ url: URL, frontEnd: FrontEnd) -> ClipOutcome {
    let clip: AudioClip
    do {
        clip = try loadAudio(url, sampleRate: frontEnd.sampleRate, duration: frontEnd.duration)
    } catch let error as AudioError {
        return .skipped(reason: error.reason)
    } catch {
        return .skipped(reason: "\(error)")
    }
    let (peak, finite) = peakAndFiniteness(clip.samples)
    guard finite else { return .skipped(reason: "contains NaN or infinite samples") }
    if peak < 1e-6 { return .skipped(reason: "silent (peak amplitude \(peak))") }
    do {
        let spectrogram = try features(samples: clip.samples, config: frontEnd)
        return .used(spectrogram: spectrogram.values, duration: clip.duration, sourceRate: clip.sourceRate)
    } catch {
        return .skipped(reason: "\(error)")
    }
}

/// The largest absolute sample, and whether every sample is finite, in one vectorisable pass.
func peakAndFiniteness(_ samples: [Float]) -> (peak: Float, finite: Bool) {
    var peak: Float = 0
    var poison: Float = 0  // stays 0 unless a sample is NaN or infinite
    samples.withUnsafeBufferPointer { buffer in
        for sample in buffer {
            peak = max(peak, abs(sample))
            poison += sample * 0
        }
    }
    return (peak, poison == 0)
}

extension AudioError {
    /// The description without the leading path (the feature store lists the path beside it).
    var reason: String {
        let text = description
        if let range = text.range(of: ": ") { return String(text[range.upperBound...]) }
        return text
    }
}

/// Turns audio files into a `FeatureStore`, using `threads` threads, reporting progress on
/// standard error. Files that cannot be used are listed in `skipped` with their reason.
///
/// - Throws: `FeatureError.noUsableFile` only when no file at all could be used.
public func extractFeatures(from sources: [AudioSource], frontEnd: FrontEnd, threads: Int,
                            quiet: Bool = false) throws -> FeatureStore {
    guard let frames = frontEnd.frames else {
        throw FeatureError.invalidOption("a feature store needs a fixed number of frames: set `frames` in the front end (--frames N)")
    }
    try frontEnd.validate()
    _ = MemoryPolicy.applied
    let mels = frontEnd.nMels
    let outcomes = OutcomeSlots(count: sources.count)
    let progress = ProgressReporter(label: "features", total: sources.count, quiet: quiet)
    let tasks = decodingTasks(sources)
    parallelFor(tasks.count, threads: threads) { task in
        let indices = tasks[task]
        if indices.count > 1, let converted = convertBatch(indices.map { sources[$0].url }) {
            for (index, wav) in zip(indices, converted.files) { outcomes[index] = analyse(wav, frontEnd: frontEnd) }
            try? FileManager.default.removeItem(at: converted.folder)
        } else {
            for index in indices { outcomes[index] = analyse(sources[index].url, frontEnd: frontEnd) }
        }
        progress.advance(by: indices.count)
    }
    progress.finish()

    let classNames = sortedClassNames(sources.compactMap(\.className))
    let classIndex = Dictionary(uniqueKeysWithValues: classNames.enumerated().map { ($1, Int32($0)) })
    var store = FeatureStore(frontEnd: frontEnd, classNames: classNames, features: [], mels: mels, frames: frames,
                             labels: [], paths: [], groups: [], durations: [], sourceRates: [],
                             normalization: NormalizationStats(mean: 0, std: 1), skipped: [])
    store.features.reserveCapacity(sources.count * mels * frames)
    var accumulator = NormalizationAccumulator(rows: mels)
    for (index, source) in sources.enumerated() {
        switch outcomes[index] {
        case .used(let values, let duration, let rate):
            store.features.append(contentsOf: values)
            store.labels.append(source.className.flatMap { classIndex[$0] } ?? -1)
            store.paths.append(source.relativePath)
            store.groups.append(source.group)
            store.durations.append(duration)
            store.sourceRates.append(Int32(rate))
            try accumulator.add(Spectrogram(rows: mels, frames: frames, values: values))
        case .skipped(let reason):
            store.skipped.append((source.relativePath, reason))
        case nil:
            store.skipped.append((source.relativePath, "not analysed"))
        }
    }
    guard store.count > 0 else {
        throw FeatureError.noUsableFile(total: sources.count, firstReason: store.skipped.first.map { "\($0.path): \($0.reason)" } ?? "none")
    }
    store.normalization = accumulator.stats(perBand: true)
    return store
}

/// Work items: files ffmpeg decodes go in batches of 16 (one ffmpeg run each), others alone.
func decodingTasks(_ sources: [AudioSource]) -> [[Int]] {
    var phone: [Int] = [], other: [[Int]] = []
    for (index, source) in sources.enumerated() {
        if FFmpegBatch.needsFFmpeg(source.url) { phone.append(index) } else { other.append([index]) }
    }
    let batches = stride(from: 0, to: phone.count, by: 16).map { Array(phone[$0..<min($0 + 16, phone.count)]) }
    return batches + other
}

/// Converts a batch with one ffmpeg run into a fresh temporary folder; nil if that failed.
func convertBatch(_ urls: [URL]) -> (folder: URL, files: [URL])? {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-decode-\(UUID().uuidString)")
    guard (try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)) != nil else { return nil }
    guard let files = FFmpegBatch.convertToWAV(urls, into: folder) else {
        try? FileManager.default.removeItem(at: folder)
        return nil
    }
    return (folder, files)
}

/// One result slot per file, filled from many threads (each index by exactly one thread).
final class OutcomeSlots: @unchecked Sendable {
    private var slots: [ClipOutcome?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    subscript(index: Int) -> ClipOutcome? {
        get { lock.withLock { slots[index] } }
        set { lock.withLock { slots[index] = newValue } }
    }
}
