import CryLabAudio
import CryLabCore
import CryLabDSP
import CryLabFeatures
import CryLabHDF5
import Foundation
import Testing

@Suite("Feature store")
struct FeatureStoreTests {
    /// A labeled folder with two classes, two families each, plus every kind of bad file.
    func makeCorpus(in folder: TemporaryFolder) throws -> URL {
        let root = folder.file("cries")
        for (className, frequency) in [("hungry", 400.0), ("tired", 300.0)] {
            let classFolder = root.appendingPathComponent(className)
            try FileManager.default.createDirectory(at: classFolder, withIntermediateDirectories: true)
            for family in 0..<2 {
                let id = String(format: "%08x-aaaa-4bbb-8ccc-%012d", family, 7)
                for take in 0..<2 {
                    let url = classFolder.appendingPathComponent("\(id)-\(1_430_000_000 + take)-1.0-m-04-\(className.prefix(2)).wav")
                    try AudioWriter.write(sine(frequency: frequency, sampleRate: 16000, seconds: 1.5), channels: 1,
                                          sampleRate: 16000, to: url)
                }
            }
        }
        let hungry = root.appendingPathComponent("hungry")
        try "not audio".write(to: hungry.appendingPathComponent("notes.wav"), atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: hungry.appendingPathComponent("empty.wav").path, contents: Data())
        try AudioWriter.write([Float](repeating: 0, count: 8000), channels: 1, sampleRate: 8000,
                              to: hungry.appendingPathComponent("silent.wav"))
        try AudioWriter.write([Float](repeating: .nan, count: 8000), channels: 1, sampleRate: 8000,
                              to: hungry.appendingPathComponent("nan.wav"), format: .float32)
        let cut = hungry.appendingPathComponent("cut.wav")
        try AudioWriter.write(sine(frequency: 200, sampleRate: 8000, seconds: 1), channels: 1, sampleRate: 8000, to: cut)
        let bytes = try Data(contentsOf: cut)
        try bytes.prefix(bytes.count / 2).write(to: cut)
        try "readme".write(to: root.appendingPathComponent("README.txt"), atomically: true, encoding: .utf8)
        return root
    }

    @Test("bad files are skipped with reasons, good ones stored with labels and groups")
    func extractAndStore() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let root = try makeCorpus(in: folder)
        let before = try Data(contentsOf: root.appendingPathComponent("hungry/cut.wav"))

        let sources = try discoverAudio([root])
        #expect(sources.count == 13, "README.txt is not audio by its extension and is not listed")
        let store = try extractFeatures(from: sources, frontEnd: .seed, threads: 2, quiet: true)
        #expect(store.count == 8)
        #expect(store.classNames == ["hungry", "tired"])
        #expect(store.labels.filter { $0 == 0 }.count == 4 && store.labels.filter { $0 == 1 }.count == 4)
        #expect(Set(store.groups).count == 2, "two app instances, shared by both classes' files")
        #expect(store.mels == 128 && store.frames == 128)
        let reasons = Dictionary(uniqueKeysWithValues: store.skipped.map { ($0.path, $0.reason) })
        #expect(reasons.count == 5)
        #expect(reasons["hungry/notes.wav"]?.contains("not an audio file") == true)
        #expect(reasons["hungry/empty.wav"]?.contains("no audio") == true)
        #expect(reasons["hungry/silent.wav"]?.contains("silent") == true)
        #expect(reasons["hungry/nan.wav"]?.contains("NaN") == true)
        #expect(reasons["hungry/cut.wav"]?.contains("truncated") == true)
        #expect(try Data(contentsOf: root.appendingPathComponent("hungry/cut.wav")) == before, "inputs are never modified")

        let path = folder.file("store.h5").path
        try store.write(to: path)
        let loaded = try FeatureStore.read(from: path)
        #expect(loaded.features == store.features)
        #expect(loaded.labels == store.labels && loaded.paths == store.paths && loaded.groups == store.groups)
        #expect(loaded.frontEnd == .seed)
        #expect(loaded.skipped.map(\.path) == store.skipped.map(\.path))
        #expect(loaded.normalization == store.normalization)
        #expect(loaded.durations.allSatisfy { abs($0 - 1.5) < 1e-9 })
        #expect(loaded.sourceRates.allSatisfy { $0 == 16000 })
        let root5 = try HDF5File.open(path).root
        #expect(try root5.attribute("n_mels") == .int(128))
        #expect(try root5.attribute("sample_rate") == .int(16000))
    }

    @Test("the seed front end gives the stored spectrogram of each clip")
    func storedEqualsDirect() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let url = folder.file("tone.wav")
        try AudioWriter.write(sine(frequency: 440, sampleRate: 8000, seconds: 7), channels: 1, sampleRate: 8000, to: url)
        let store = try extractFeatures(from: discoverAudio([url]), frontEnd: .seed, threads: 1, quiet: true)
        let clip = try loadAudio(url, sampleRate: 16000, duration: 5)
        let direct = try features(samples: clip.samples, config: .seed)
        #expect(store.spectrogram(at: 0).values == direct.values)
        #expect(store.labels == [-1], "a file input is unlabeled")
    }

    @Test("groups: Donate-a-Cry instance ids, file stems, or a pattern")
    func groups() throws {
        #expect(try GroupRule.automatic.group(forFileName: "021DCB9F-2FC6-4247-859F-E58EDB682B79-1429977251-1.0-f-26-dk.caf")
                == "021dcb9f-2fc6-4247-859f-e58edb682b79")
        #expect(try GroupRule.automatic.group(forFileName: "baby_3_take2.wav") == "baby_3_take2")
        #expect(try GroupRule.pattern("^(baby_\\d+)_").group(forFileName: "baby_3_take2.wav") == "baby_3")
        #expect(throws: FeatureError.self) { try GroupRule.pattern("(").group(forFileName: "x.wav") }
    }

    @Test("nothing usable is an error; a store never appears half written")
    func nothingUsable() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let bad = folder.file("bad.wav")
        try "x".write(to: bad, atomically: true, encoding: .utf8)
        #expect(throws: FeatureError.self) { try extractFeatures(from: discoverAudio([bad]), frontEnd: .seed, threads: 1, quiet: true) }
    }

    @Test("a feature store that is damaged or of another kind gives a clear error")
    func damagedStore() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("other.h5").path
        try HDF5File.writeAtomically(to: path) { try $0.root.write([Float(1)], shape: [1], as: "features") }
        #expect(throws: FeatureError.self) { try FeatureStore.read(from: path) }
    }

    @Test("the labeled corpus: every clip usable, 5 classes, grouped by app instance",
          .enabled(if: Corpus.isPresent, Corpus.absentMessage))
    func labeledCorpus() throws {
        let sources = try discoverAudio([Corpus.root.appendingPathComponent("labeled")])
        #expect(sources.count == 457)
        let store = try extractFeatures(from: sources, frontEnd: .seed, threads: 2, quiet: true)
        #expect(store.count == 457, "skipped: \(store.skipped.prefix(3))")
        #expect(store.classNames == ["belly_pain", "burping", "discomfort", "hungry", "tired"])
        #expect(store.labels.filter { $0 == 3 }.count == 382)
        #expect(Set(store.groups).count == 221)
        #expect(store.sourceRates.allSatisfy { $0 == 8000 })
        #expect(store.features.allSatisfy { $0.isFinite })
    }

    @Test("a sample of the raw uploads: decoded through ffmpeg, silent ones skipped",
          .enabled(if: Corpus.isPresent && installedFFmpeg != nil, Corpus.absentMessage))
    func rawUploads() throws {
        let ios = Corpus.files(in: "raw-ios", withExtension: "caf")
        let android = Corpus.files(in: "raw-android", withExtension: "3gp")
        let sample = Array(ios.prefix(12)) + Array(android.prefix(12))
        let store = try extractFeatures(from: discoverAudio(sample), frontEnd: .recommended, threads: 2, quiet: true)
        #expect(store.count + store.skipped.count == sample.count)
        #expect(store.count >= 20)
        #expect(store.features.allSatisfy { $0.isFinite })
    }
}

@Suite("Damaged feature stores")
struct DamagedFeatureStoreTests {
    @Test("hundreds of truncated and bit-flipped stores give errors, never crashes")
    func corruptedStores() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let url = folder.file("tone.wav")
        try AudioWriter.write(sine(frequency: 440, sampleRate: 8000, seconds: 2), channels: 1, sampleRate: 8000, to: url)
        let store = try extractFeatures(from: try discoverAudio([url, url]), frontEnd: .recommended, threads: 1, quiet: true)
        let path = folder.file("store.h5").path
        try store.write(to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var generator = SeededGenerator(seed: 99)
        var rejected = 0
        for index in 0..<300 {
            var copy = index < 20 ? bytes.prefix(bytes.count * index / 20) : bytes
            if index >= 20 {
                for _ in 0..<(1 + index % 16) {
                    let offset = Int(generator.next() % UInt64(copy.count))
                    copy[offset] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
                }
            }
            let damaged = folder.file("damaged.h5")
            try copy.write(to: damaged)
            do { _ = try FeatureStore.read(from: damaged.path) } catch { rejected += 1 }
        }
        #expect(rejected >= 20, "every truncated store is rejected; \(rejected) of 300 rejected in all")
    }
}

@Suite("Phone recordings in batches")
struct FFmpegBatchTests {
    @Test("a batch decodes like single files; one bad file sends its batch back to single files",
          .enabled(if: installedFFmpeg != nil, "ffmpeg is not installed; run Scripts/setup.sh"))
    func batches() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let source = folder.file("tone.wav")
        try AudioWriter.write(sine(frequency: 500, sampleRate: 16000, seconds: 1.5), channels: 1, sampleRate: 16000, to: source)
        var urls: [URL] = []
        for index in 0..<5 {
            let url = folder.file("upload\(index).caf")
            try runFFmpeg(["-i", source.path, "-c:a", "adpcm_ima_qt", "-f", "caf", url.path])
            urls.append(url)
        }
        let single = try urls.map { try loadAudio($0, sampleRate: 8000).samples }
        let converted = try #require(FFmpegBatch.convertToWAV(urls, into: folder.url))
        for (wav, samples) in zip(converted, single) {
            #expect(try loadAudio(wav, sampleRate: 8000).samples == samples, "batch and single decoding must agree")
        }

        // A damaged upload among good ones: its batch fails, the files are retried one by one.
        let broken = folder.file("upload-broken.caf")
        var bytes = Data([0, 0, 0, 0x18]) + Data("ftyp3gp4".utf8)
        bytes.append(Data(repeating: 7, count: 200))
        try bytes.write(to: broken)
        #expect(FFmpegBatch.convertToWAV(urls + [broken], into: folder.url) == nil)
        let store = try extractFeatures(from: discoverAudio(urls + [broken]), frontEnd: .recommended, threads: 2, quiet: true)
        #expect(store.count == 5)
        #expect(store.skipped.map(\.path) == ["upload-broken.caf"])
    }
}

@Suite("Reading some clips of a store")
struct FeatureStoreReaderTests {
    /// A store of `clips` clips of 3 mels x 4 frames whose every value names its clip, band and
    /// frame (clip * 100 + band * 10 + frame), with labels, paths and groups that name the clip.
    func numberedStore(clips: Int) -> FeatureStore {
        var features: [Float] = []
        for clip in 0..<clips { for band in 0..<3 { for frame in 0..<4 { features.append(Float(clip * 100 + band * 10 + frame)) } } }
        return FeatureStore(frontEnd: .recommended, classNames: ["a", "b"], features: features, mels: 3, frames: 4,
                            labels: (0..<clips).map { Int32($0 % 2) }, paths: (0..<clips).map { "clip\($0).wav" },
                            groups: (0..<clips).map { "family\($0 / 3)" }, durations: (0..<clips).map(Double.init),
                            sourceRates: Array(repeating: 8000, count: clips),
                            normalization: NormalizationStats(mean: 1, std: 2), skipped: [(path: "bad.wav", reason: "empty")])
    }

    @Test("the clips asked for, in any order with repeats and runs, equal the whole store's subset, field by field",
          arguments: [[5, 6, 7, 2, 2, 11, 0], [3], [], Array(0..<12), [11, 10, 9, 1]])
    func someClips(clips: [Int]) throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("store.h5").path
        let whole = numberedStore(clips: 12)
        try whole.write(to: path)
        let reader = try FeatureStoreReader(path: path)
        #expect(reader.count == 12 && reader.mels == 3 && reader.frames == 4)
        let some = try reader.store(clips: clips)
        let expected = try FeatureStore.read(from: path).subset(clips)
        #expect(some.features == expected.features)
        #expect(some.features.count == clips.count * 12)
        if let first = clips.first { #expect(some.features[0] == Float(first * 100), "the first value names the first clip asked for") }
        #expect(some.labels == expected.labels && some.paths == expected.paths && some.groups == expected.groups)
        #expect(some.durations == expected.durations && some.sourceRates == expected.sourceRates)
        #expect(some.normalization == expected.normalization && some.frontEnd == expected.frontEnd)
        #expect(some.classNames == ["a", "b"] && some.skipped.map(\.path) == ["bad.wav"])
        #expect(try reader.features(of: clips) == expected.features)
    }

    @Test("a clip past the end is an error naming the file, the dataset and the clip")
    func pastTheEnd() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("store.h5").path
        try numberedStore(clips: 4).write(to: path)
        let reader = try FeatureStoreReader(path: path)
        #expect {
            try reader.features(of: [1, 4])
        } throws: { error in
            let text = "\(error)"
            return text.contains(path) && text.contains("features") && text.contains("entry 4 was asked for") && text.contains("[4, 3, 4]")
        }
    }
}
