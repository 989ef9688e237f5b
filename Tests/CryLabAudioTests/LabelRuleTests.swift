import CryLabAudio
import CryLabFeatures
import Foundation
import Testing

/// The Free Spoken Digit Dataset beside the project (`../shared/data/fsdd/recordings`), when present.
enum SpokenDigits {
    static let recordings: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("../shared/data/fsdd/recordings").standardizedFileURL

    static var isPresent: Bool { FileManager.default.fileExists(atPath: recordings.path) }

    static let absentMessage: Comment = "the Free Spoken Digit Dataset is not present at ../shared/data/fsdd/recordings; skipping the real-data test"

    /// FSDD names are `{digit}_{speaker}_{index}.wav`.
    static let labelPattern = #"^(\d+)_"#
    static let groupPattern = #"^\d+_([a-z]+)_"#
}

@Suite("Labels from file names and manifests")
struct LabelRuleTests {
    /// Empty files with audio extensions: discovery looks at names only, never decodes.
    func touch(_ names: [String], in folder: URL) throws {
        for name in names {
            let url = folder.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: url.path, contents: Data()), "could not create \(url.path)")
        }
    }

    func writeManifest(_ text: String, to url: URL) throws {
        try text.write(to: url, atomically: true, encoding: .utf8)
    }

    // MARK: Patterns

    @Test("a pattern labels FSDD-like names, ignoring folders; a second pattern gives the speaker")
    func patternLabelsAndGroups() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let root = folder.file("digits")
        let names = ["0_george_0.wav", "0_theo_1.wav", "2_george_3.wav", "10_theo_0.wav", "looks-like-a-class/2_theo_7.wav"]
        for name in names {
            let url = root.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try AudioWriter.write(sine(frequency: 300, sampleRate: 8000, seconds: 0.5), channels: 1, sampleRate: 8000, to: url)
        }
        let sources = try discoverAudio([root], groups: .pattern(SpokenDigits.groupPattern),
                                        labels: .pattern(SpokenDigits.labelPattern))
        let byPath = Dictionary(uniqueKeysWithValues: sources.map { ($0.relativePath, $0) })
        #expect(sources.count == 5)
        #expect(byPath["0_george_0.wav"]?.className == "0")
        #expect(byPath["10_theo_0.wav"]?.className == "10")
        #expect(byPath["looks-like-a-class/2_theo_7.wav"]?.className == "2", "the folder is not the label")
        #expect(byPath["0_george_0.wav"]?.group == "george")
        #expect(byPath["10_theo_0.wav"]?.group == "theo")

        // The store numbers integer labels numerically: "2" before "10".
        let store = try extractFeatures(from: sources, frontEnd: .seed, threads: 2, quiet: true)
        #expect(store.classNames == ["0", "2", "10"])
        #expect(store.labels.sorted() == [0, 0, 1, 1, 2])
        #expect(Set(store.groups) == ["george", "theo"])
    }

    @Test("a pattern without a capture group labels with the whole match")
    func patternWholeMatch() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["cat-01.wav", "dog-02.wav"], in: folder.url)
        let sources = try discoverAudio([folder.url], labels: .pattern("^[a-z]+"))
        #expect(sources.map(\.className) == ["cat", "dog"])
    }

    @Test("a file the pattern does not match is an error naming the file, the pattern and the fix")
    func patternMismatch() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["0_george_0.wav", "1_theo_2.wav", "notes-take2.wav"], in: folder.url)
        let error = try #require(throws: FeatureError.self) {
            try discoverAudio([folder.url], labels: .pattern(SpokenDigits.labelPattern))
        }
        let message = error.description
        #expect(message.contains("notes-take2.wav"), "\(message)")
        #expect(message.contains(SpokenDigits.labelPattern), "\(message)")
        #expect(message.contains("change the pattern") && message.contains("move the file out"), "\(message)")
        #expect(!message.contains("none of the"), "some files match, so this is not the no-match error: \(message)")
    }

    @Test("a pattern that matches no file says so, with an example name")
    func patternMatchesNothing() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["0_george_0.wav", "1_theo_2.wav"], in: folder.url)
        let error = try #require(throws: FeatureError.self) {
            try discoverAudio([folder.url], labels: .pattern("^speaker-(\\w+)"))
        }
        let message = error.description
        #expect(message.contains("none of the 2 audio files"), "\(message)")
        #expect(message.contains("^speaker-(\\w+)"), "\(message)")
        #expect(message.contains("0_george_0.wav"), "one example file name: \(message)")
    }

    @Test("an invalid pattern, or a pattern with --unlabeled, is an error")
    func patternMisuse() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["0_george_0.wav"], in: folder.url)
        let invalid = try #require(throws: FeatureError.self) { try discoverAudio([folder.url], labels: .pattern("(")) }
        #expect(invalid.description.contains("--label-pattern"), "\(invalid)")
        #expect(throws: FeatureError.self) {
            try discoverAudio([folder.url], unlabeled: true, labels: .pattern(SpokenDigits.labelPattern))
        }
    }

    @Test("class names sort numerically only when every one is an integer")
    func classNameOrder() {
        #expect(sortedClassNames(["10", "2", "0", "2"]) == ["0", "2", "10"])
        #expect(sortedClassNames(["10", "2", "b"]) == ["10", "2", "b"])
        #expect(sortedClassNames(["tired", "hungry"]) == ["hungry", "tired"])
    }

    // MARK: Manifests

    @Test("a manifest without a group column labels files; the group rule gives the groups")
    func manifestWithoutGroups() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["clips/a.wav", "clips/b.wav", "clips/sub/c.flac"], in: folder.url)
        let csv = folder.file("metadata.csv")
        try writeManifest("""
            file_name,label
            clips/a.wav,hungry
            ./clips/b.wav,tired
            clips/sub/../sub/c.flac,hungry
            clips/gone.wav,tired
            """, to: csv)
        let manifest = try LabelManifest.read(from: csv.path)
        #expect(!manifest.hasGroupColumn)
        #expect(manifest.entries.count == 4)

        // Folders ("sub") are not labels; a file's name gives its group.
        let sources = try discoverAudio([folder.file("clips")], labels: .manifest(manifest))
        #expect(sources.map(\.relativePath) == ["a.wav", "b.wav", "sub/c.flac"])
        #expect(sources.map(\.className) == ["hungry", "tired", "hungry"])
        #expect(sources.map(\.group) == ["a", "b", "c"])
        #expect(manifest.unmatchedRowCount(for: sources) == 1, "clips/gone.wav is listed but not found, and ignored")
    }

    @Test("a manifest group column overrides the group rule; an empty group cell falls back to it")
    func manifestWithGroups() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["1_x.wav", "2_y.wav", "3_z.wav"], in: folder.url)
        let csv = folder.file("metadata.csv")
        try writeManifest("group,file_name,label\nfamily-a,1_x.wav,yes\nfamily-b,2_y.wav,no\n,3_z.wav,no\n", to: csv)
        let manifest = try LabelManifest.read(from: csv.path)
        #expect(manifest.hasGroupColumn)
        let sources = try discoverAudio([folder.url], groups: .pattern("^(\\d+)_"), labels: .manifest(manifest))
        #expect(sources.map(\.className) == ["yes", "no", "no"])
        #expect(sources.map(\.group) == ["family-a", "family-b", "3"])
    }

    @Test("quoted fields hold commas, doubled quotes and line ends; a BOM and \\r are dropped")
    func manifestQuotedFields() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["take 1, loud.wav", "say \"hi\".wav", "plain.wav"], in: folder.url)
        let csv = folder.file("metadata.csv")
        let text = "\u{FEFF}file_name,label,group\r\n"
            + "\"take 1, loud.wav\",\"hungry, very\",\"mum \"\"A\"\"\"\r\n"
            + "\r\n"
            + "\"say \"\"hi\"\".wav\",\"two\nlines\",b\r\n"
            + "plain.wav,tired,c"
        try writeManifest(text, to: csv)
        let manifest = try LabelManifest.read(from: csv.path)
        let sources = try discoverAudio([folder.url], labels: .manifest(manifest))
        let byName = Dictionary(uniqueKeysWithValues: sources.map { ($0.relativePath, $0) })
        #expect(byName["take 1, loud.wav"]?.className == "hungry, very")
        #expect(byName["take 1, loud.wav"]?.group == "mum \"A\"")
        #expect(byName["say \"hi\".wav"]?.className == "two\nlines")
        #expect(byName["plain.wav"]?.className == "tired", "no \\r left on the last field")
        #expect(byName["plain.wav"]?.group == "c")
        #expect(manifest.entry(for: folder.file("plain.wav"))?.line == 6, "lines count from the header, including the blank line and the quoted line end")
    }

    @Test("an unknown column names the column, the file and the allowed columns")
    func manifestUnknownColumn() throws {
        let error = try #require(throws: FeatureError.self) {
            try LabelManifest.parse("file_name,label,speaker\na.wav,x,bob\n", path: "meta.csv", folder: URL(fileURLWithPath: "/data"))
        }
        let message = error.description
        #expect(message.contains("'speaker'") && message.contains("meta.csv"), "\(message)")
        #expect(message.contains("file_name, label, group"), "\(message)")
    }

    @Test("a missing file_name or label column, or an empty label, is an error")
    func manifestMissingColumnsAndLabels() throws {
        let folder = URL(fileURLWithPath: "/data")
        let noLabel = try #require(throws: FeatureError.self) {
            try LabelManifest.parse("file_name,group\na.wav,g\n", path: "meta.csv", folder: folder)
        }
        #expect(noLabel.description.contains("no label column"), "\(noLabel)")
        let noFile = try #require(throws: FeatureError.self) {
            try LabelManifest.parse("label\nx\n", path: "meta.csv", folder: folder)
        }
        #expect(noFile.description.contains("no file_name column"), "\(noFile)")
        let emptyLabel = try #require(throws: FeatureError.self) {
            try LabelManifest.parse("file_name,label\na.wav,x\nb.wav,  \n", path: "meta.csv", folder: folder)
        }
        #expect(emptyLabel.description.contains("line 3") && emptyLabel.description.contains("label of 'b.wav' is empty"),
                "\(emptyLabel)")
        #expect(throws: FeatureError.self) { try LabelManifest.parse("", path: "meta.csv", folder: folder) }
        #expect(throws: FeatureError.self) { try LabelManifest.read(from: "/nonexistent/metadata.csv") }
    }

    @Test("an audio file with no row names the file and the manifest")
    func manifestMissingRow() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try touch(["a.wav", "extra/b.wav"], in: folder.url)
        let csv = folder.file("metadata.csv")
        try writeManifest("file_name,label\na.wav,x\n", to: csv)
        let manifest = try LabelManifest.read(from: csv.path)
        let error = try #require(throws: FeatureError.self) { try discoverAudio([folder.url], labels: .manifest(manifest)) }
        let message = error.description
        #expect(message.contains("extra/b.wav") && message.contains(csv.path), "\(message)")
        #expect(message.contains("add a row") && message.contains("remove the file"), "\(message)")
    }

    @Test("two rows naming the same file give both line numbers")
    func manifestDuplicateRow() throws {
        let error = try #require(throws: FeatureError.self) {
            try LabelManifest.parse("file_name,label\na.wav,x\nb.wav,y\n./a.wav,z\n", path: "meta.csv",
                                    folder: URL(fileURLWithPath: "/data"))
        }
        let message = error.description
        #expect(message.contains("line 4") && message.contains("line 2"), "\(message)")
    }

    @Test("a row with the wrong number of fields gives its line number")
    func manifestWrongFieldCount() throws {
        let error = try #require(throws: FeatureError.self) {
            try LabelManifest.parse("file_name,label\na.wav,x\nb, c.wav,y\n", path: "meta.csv", folder: URL(fileURLWithPath: "/data"))
        }
        let message = error.description
        #expect(message.contains("line 3") && message.contains("expected 2 fields") && message.contains("found 3"), "\(message)")
        let unclosed = try #require(throws: FeatureError.self) {
            try LabelManifest.parse("file_name,label\n\"a.wav,x\n", path: "meta.csv", folder: URL(fileURLWithPath: "/data"))
        }
        #expect(unclosed.description.contains("line 2") && unclosed.description.contains("never closed"), "\(unclosed)")
    }

    // MARK: Real data

    @Test("the Free Spoken Digit Dataset: 2,500 files, digits 0-9 with 250 each, 5 speakers",
          .enabled(if: SpokenDigits.isPresent, SpokenDigits.absentMessage))
    func spokenDigits() throws {
        let sources = try discoverAudio([SpokenDigits.recordings], groups: .pattern(SpokenDigits.groupPattern),
                                        labels: .pattern(SpokenDigits.labelPattern))
        #expect(sources.count == 2500)
        let labels = sources.compactMap(\.className)
        #expect(labels.count == 2500, "every file is labeled")
        #expect(sortedClassNames(labels) == (0...9).map(String.init))
        let counts = Dictionary(grouping: labels, by: { $0 }).mapValues(\.count)
        #expect(counts.values.allSatisfy { $0 == 250 }, "\(counts)")
        #expect(Set(sources.map(\.group)) == ["george", "jackson", "lucas", "nicolas", "theo"])
    }
}
