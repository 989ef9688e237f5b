import ArgumentParser
import CryLabFeatures
import Foundation

struct FeaturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "features",
        abstract: "Turn audio files and folders into a feature store (HDF5).",
        discussion: """
        Walks every INPUT recursively. Files inside class folders (INPUT/<class>/...) are labeled \
        with the folder name unless --unlabeled is given. Files that cannot be used (empty, \
        truncated, not audio, silent, NaN) are skipped and listed with their reason; the run fails \
        only when no file at all is usable. The output file appears only when complete.
        """)

    @Argument(help: "Audio files or folders.")
    var inputs: [String]

    @Option(name: .shortAndLong, help: "The feature store to write (.h5).")
    var output: String

    @OptionGroup var frontEnd: FrontEndOptions

    @Flag(help: "Ignore class folders: every clip is unlabeled.")
    var unlabeled = false

    @Option(name: .customLong("group-pattern"), help: "Regular expression on the file name whose first capture group names the recording source (default: the Donate-a-Cry app-instance id, else the file stem).")
    var groupPattern: String?

    @Option(help: "Threads used (default: every core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "No progress output.")
    var quiet = false

    func validate() throws {
        guard output.hasSuffix(".h5") || output.hasSuffix(".hdf5") else {
            throw ValidationError("--output should name an HDF5 file ending in .h5, got '\(output)'")
        }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func run() throws {
        let config = try frontEnd.resolved()
        let sources = try discoverAudio(inputs.map { URL(fileURLWithPath: $0) }, unlabeled: unlabeled,
                                        groups: groupPattern.map { .pattern($0) } ?? .automatic)
        guard !sources.isEmpty else { throw FeatureError.noAudio(inputs) }
        let started = Date()
        let store = try extractFeatures(from: sources, frontEnd: config, threads: threads, quiet: quiet)
        try store.write(to: output)
        let seconds = Date().timeIntervalSince(started)
        print(summary(store, seconds: seconds))
    }

    func summary(_ store: FeatureStore, seconds: Double) -> String {
        var lines = ["wrote \(output): \(store.count) clips x \(store.mels) mels x \(store.frames) frames "
                     + "in \(String(format: "%.1f", seconds)) s (\(String(format: "%.0f", Double(store.count + store.skipped.count) / seconds)) files/s)"]
        if store.classNames.isEmpty {
            lines.append("unlabeled; \(Set(store.groups).count) recording sources")
        } else {
            let counts = store.classNames.indices.map { index in
                "\(store.classNames[index]) \(store.labels.filter { $0 == Int32(index) }.count)"
            }
            lines.append("classes: " + counts.joined(separator: ", ") + "; \(Set(store.groups).count) recording sources")
        }
        // Resampling is never silent: say which source rates were converted.
        let converted = Dictionary(grouping: store.sourceRates.filter { Int($0) != store.frontEnd.sampleRate }, by: { $0 })
        if !converted.isEmpty {
            let rates = converted.keys.sorted().map { "\(converted[$0]!.count) at \($0) Hz" }.joined(separator: ", ")
            lines.append("resampled to \(store.frontEnd.sampleRate) Hz with soxr HQ: \(rates)")
        }
        if !store.skipped.isEmpty {
            lines.append("skipped \(store.skipped.count):")
            for item in store.skipped.prefix(20) { lines.append("  \(item.path): \(item.reason)") }
            if store.skipped.count > 20 { lines.append("  ... and \(store.skipped.count - 20) more (see the 'skipped' table)") }
        }
        return lines.joined(separator: "\n")
    }
}
