import ArgumentParser
import CryLabFeatures
import Foundation

struct FeaturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "features",
        abstract: "Turn audio files and folders into a feature store (HDF5).",
        discussion: """
        Walks every INPUT recursively. Labels come from class folders by default: files inside \
        INPUT/<class>/... are labeled with the folder name, unless --unlabeled is given. \
        --label-pattern takes them from the file name instead (the first capture group of a \
        regular expression; every file must match), and --manifest from a CSV with the header \
        file_name,label[,group] (the Hugging Face audiofolder metadata.csv layout, file_name \
        relative to the CSV's folder; every file needs a row, and a group cell overrides \
        --group-pattern). Class folders are ignored with either. Class names are stored sorted, \
        numerically when every one is an integer.

        For the Free Spoken Digit Dataset ({digit}_{speaker}_{index}.wav), label by digit and \
        group by speaker with:
          --label-pattern '^(\\d+)_' --group-pattern '^\\d+_([a-z]+)_'

        Files that cannot be used (empty, truncated, not audio, silent, NaN) are skipped and listed \
        with their reason; the run fails only when no file at all is usable. The output file \
        appears only when complete.
        """)

    @Argument(help: "Audio files or folders.")
    var inputs: [String]

    @Option(name: .shortAndLong, help: "The feature store to write (.h5).")
    var output: String

    @OptionGroup var frontEnd: FrontEndOptions

    @Flag(help: "Ignore class folders: every clip is unlabeled.")
    var unlabeled = false

    @Option(name: .customLong("label-pattern"), help: ArgumentHelp(
        "Regular expression on the file name (not its folders) whose first capture group, or whole match, is the class label; every file must match. Replaces class folders.",
        valueName: "regex"))
    var labelPattern: String?

    @Option(help: ArgumentHelp(
        "CSV naming each file's label: header file_name,label and optionally group; file_name is relative to the CSV's folder. Every audio file needs a row. Replaces class folders.",
        valueName: "csv"))
    var manifest: String?

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
        if labelPattern != nil && manifest != nil {
            throw ValidationError("--label-pattern and --manifest both give the labels; use one of them")
        }
        if unlabeled && (labelPattern != nil || manifest != nil) {
            let option = labelPattern != nil ? "--label-pattern" : "--manifest"
            throw ValidationError("--unlabeled drops every label, but \(option) gives them; use one of the two")
        }
        for (option, pattern) in [("--label-pattern", labelPattern), ("--group-pattern", groupPattern)] {
            guard let pattern else { continue }
            do { _ = try NSRegularExpression(pattern: pattern) } catch {
                throw ValidationError("\(option) '\(pattern)' is not a valid regular expression: \(error.localizedDescription)")
            }
        }
    }

    /// Where the labels come from, per the options; reads the manifest.
    func labelRule() throws -> LabelRule {
        if let labelPattern { return .pattern(labelPattern) }
        if let manifest { return .manifest(try LabelManifest.read(from: manifest)) }
        return .folders
    }

    func run() throws {
        let config = try frontEnd.resolved()
        let labels = try labelRule()
        let sources = try discoverAudio(inputs.map { URL(fileURLWithPath: $0) }, unlabeled: unlabeled,
                                        groups: groupPattern.map { .pattern($0) } ?? .automatic, labels: labels)
        guard !sources.isEmpty else { throw FeatureError.noAudio(inputs) }
        var notes: [String] = []
        if case .manifest(let manifest) = labels {
            let unused = manifest.unmatchedRowCount(for: sources)
            notes.append("labels from \(manifest.path): \(manifest.entries.count) rows"
                         + (unused > 0 ? ", \(unused) naming files not under the inputs (ignored)" : ""))
        }
        let started = Date()
        let store = try extractFeatures(from: sources, frontEnd: config, threads: threads, quiet: quiet)
        try store.write(to: output)
        let seconds = Date().timeIntervalSince(started)
        print(summary(store, seconds: seconds, notes: notes))
    }

    /// What was written; `notes` are extra lines about where labels came from.
    func summary(_ store: FeatureStore, seconds: Double, notes: [String] = []) -> String {
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
        lines += notes
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
