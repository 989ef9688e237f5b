import CryLabAudio
import Foundation
import Testing

@Suite("Decoding with libsndfile")
struct SndFileDecodingTests {
    /// Largest quantisation error each sample format may add to a value in [-1, 1].
    static let cases: [(AudioWriter.Container, AudioWriter.SampleFormat, Float)] = [
        (.wav, .unsigned8, 1.0 / 128), (.wav, .pcm16, 1.0 / 32768), (.wav, .pcm24, 1.0 / 8_388_608),
        (.wav, .pcm32, 1e-7), (.wav, .float32, 0), (.wav, .float64, 1e-7),
        (.flac, .pcm16, 1.0 / 32768), (.flac, .pcm24, 1.0 / 8_388_608),
        (.aiff, .pcm16, 1.0 / 32768), (.aiff, .unsigned8, 1.0 / 128),
    ]

    @Test("every lossless container and sample format round-trips", arguments: 0..<cases.count)
    func roundTrip(caseIndex: Int) throws {
        let (container, format, tolerance) = Self.cases[caseIndex]
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let original = sine(frequency: 440, sampleRate: 16000, seconds: 0.5)
        let url = folder.file("tone-\(format).\(container)")
        try AudioWriter.write(original, channels: 1, sampleRate: 16000, to: url, container: container, format: format)

        let clip = try loadAudio(url, sampleRate: nil)
        #expect(clip.sampleRate == 16000)
        #expect(clip.sourceChannels == 1)
        #expect(clip.decoder == .libsndfile)
        #expect(clip.samples.count == original.count)
        let difference = maxAbsDifference(clip.samples, original)
        #expect(difference <= tolerance + 1e-7, "\(container) \(format): largest difference \(difference)")
    }

    @Test("WAVE_FORMAT_EXTENSIBLE with 24-bit samples")
    func extensible() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let original = sine(frequency: 300, sampleRate: 8000, seconds: 0.25)
        let url = folder.file("extensible.wav")
        try AudioWriter.write(original, channels: 1, sampleRate: 8000, to: url, format: .pcm24, extensible: true)
        let header = try Data(contentsOf: url)
        #expect(header[20] == 0xFE && header[21] == 0xFF, "format tag should be WAVE_FORMAT_EXTENSIBLE (0xFFFE)")
        let clip = try loadAudio(url, sampleRate: nil)
        #expect(maxAbsDifference(clip.samples, original) <= 1.0 / 8_388_608 + 1e-7)
    }

    @Test("OGG Vorbis decodes to the same tone")
    func vorbis() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let original = sine(frequency: 500, sampleRate: 16000, seconds: 1)
        let url = folder.file("tone.ogg")
        try AudioWriter.write(original, channels: 1, sampleRate: 16000, to: url, container: .ogg, format: .vorbis)
        let clip = try loadAudio(url, sampleRate: nil)
        #expect(abs(clip.samples.count - original.count) <= 1)
        #expect(abs(zeroCrossingFrequency(clip.samples, sampleRate: 16000) - 500) < 5)
    }

    @Test("six channels at 48 kHz down-mix by averaging and resample to 16 kHz")
    func sixChannels48k() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let frames = 48000
        // Channel c carries 1 kHz at amplitude (c + 1) / 10: the mean is 1 kHz at amplitude 0.35.
        var interleaved = [Float](repeating: 0, count: frames * 6)
        for frame in 0..<frames {
            let value = Float(sin(2 * Double.pi * 1000 * Double(frame) / 48000))
            for channel in 0..<6 { interleaved[frame * 6 + channel] = value * Float(channel + 1) / 10 }
        }
        let url = folder.file("six.wav")
        try AudioWriter.write(interleaved, channels: 6, sampleRate: 48000, to: url, format: .float32)

        let native = try loadAudio(url, sampleRate: nil)
        #expect(native.sourceChannels == 6)
        let expectedMono = (0..<frames).map { Float(sin(2 * Double.pi * 1000 * Double($0) / 48000)) * 0.35 }
        #expect(maxAbsDifference(native.samples, expectedMono) < 1e-6)

        let resampled = try loadAudio(url, sampleRate: 16000)
        #expect(resampled.sampleRate == 16000 && resampled.sourceRate == 48000)
        #expect(resampled.samples.count == 16000, "ceil(48000 * 16000 / 48000) samples")
        #expect(abs(zeroCrossingFrequency(resampled.samples, sampleRate: 16000) - 1000) < 2)
        let middle = Array(resampled.samples[4000..<12000])
        let expected = (4000..<12000).map { Float(sin(2 * Double.pi * 1000 * Double($0) / 16000)) * 0.35 }
        #expect(maxAbsDifference(middle, expected) < 2e-3, "soxr HQ keeps a 1 kHz tone's shape")
    }

    @Test("offset and duration select frames like librosa.load")
    func offsetAndDuration() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let ramp = (0..<8000).map { Float($0) / 8000 }
        let url = folder.file("ramp.wav")
        try AudioWriter.write(ramp, channels: 1, sampleRate: 8000, to: url, format: .float32)
        let clip = try loadAudio(url, sampleRate: nil, offset: 0.25, duration: 0.5)
        #expect(clip.samples.count == 4000)
        #expect(clip.samples.first == ramp[2000])
        #expect(clip.samples.last == ramp[5999])
        let pastEnd = try loadAudio(url, sampleRate: nil, offset: 0.9, duration: 5)
        #expect(pastEnd.samples.count == 800)
        #expect(throws: AudioError.self) { try loadAudio(url, sampleRate: nil, offset: -1) }
        #expect(throws: AudioError.self) { try loadAudio(url, sampleRate: nil, duration: 0) }
    }
}

@Suite("Bad input gives a clear error naming the file")
struct BadInputTests {
    @Test("a text file named .wav is not audio")
    func textFile() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let url = folder.file("notes.wav")
        try "this is not a recording\n".write(to: url, atomically: true, encoding: .utf8)
        let error = loadError(url)
        #expect(error?.description.contains("notes.wav") == true)
        #expect(error?.description.contains("not an audio file") == true)
    }

    @Test("an empty file and a WAV with no frames are empty")
    func emptyFiles() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let zeroBytes = folder.file("zero.wav")
        FileManager.default.createFile(atPath: zeroBytes.path, contents: Data())
        #expect(throws: AudioError.empty(path: zeroBytes.path)) { try loadAudio(zeroBytes) }
        let noFrames = folder.file("noframes.wav")
        try AudioWriter.write([], channels: 1, sampleRate: 8000, to: noFrames)
        #expect(throws: AudioError.empty(path: noFrames.path)) { try loadAudio(noFrames) }
    }

    @Test("a WAV cut short is reported as truncated")
    func truncated() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let url = folder.file("cut.wav")
        try AudioWriter.write(sine(frequency: 440, sampleRate: 8000, seconds: 1), channels: 1, sampleRate: 8000, to: url)
        let bytes = try Data(contentsOf: url)
        try bytes.prefix(bytes.count / 2).write(to: url)
        let error = loadError(url)
        guard case .truncated(let path, let declared, let present) = error else {
            Issue.record("expected .truncated, got \(String(describing: error))")
            return
        }
        #expect(path == url.path)
        #expect(declared == 8000)
        #expect(present < 8000)
    }

    @Test("a missing file says so")
    func missing() {
        let url = URL(fileURLWithPath: "/nonexistent/cry.wav")
        #expect(throws: AudioError.fileNotFound(path: url.path)) { try loadAudio(url) }
    }
}

@Suite("Decoding phone formats through ffmpeg")
struct FFmpegDecodingTests {
    static let hasFFmpeg = installedFFmpeg != nil

    @Test("MP4/M4A (AAC), MP3 and CAF (IMA4) decode through ffmpeg",
          .enabled(if: hasFFmpeg, "ffmpeg is not installed; run Scripts/setup.sh"),
          arguments: [("m4a", "aac"), ("mp3", "libmp3lame"), ("caf", "adpcm_ima_qt"), ("3gp", "aac")])
    func phoneFormats(ext: String, codec: String) throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let source = folder.file("tone.wav")
        try AudioWriter.write(sine(frequency: 600, sampleRate: 16000, seconds: 1), channels: 1, sampleRate: 16000, to: source)
        let encoded = folder.file("tone.\(ext)")
        try runFFmpeg(["-i", source.path, "-c:a", codec, encoded.path])
        // Named like the corpus's iOS uploads: the extension says nothing about the contents.
        let disguised = folder.file("upload.caf")
        try FileManager.default.moveItem(at: encoded, to: disguised)

        let clip = try loadAudio(disguised, sampleRate: 8000)
        #expect(clip.decoder == .ffmpeg)
        #expect(clip.sourceRate == 16000 && clip.sampleRate == 8000)
        #expect(clip.samples.count > 7000)
        let steady = Array(clip.samples[1000..<6000])
        #expect(abs(zeroCrossingFrequency(steady, sampleRate: 8000) - 600) < 10)
    }

    @Test("without ffmpeg the error names the file and how to install it")
    func missingFFmpeg() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let url = folder.file("upload.3gp")
        var header = Data([0, 0, 0, 0x18]) + Data("ftyp3gp4".utf8)
        header.append(Data(count: 64))
        try header.write(to: url)
        let error = loadError(url, ffmpeg: nil)
        #expect(error == .ffmpegMissing(path: url.path, container: "MP4/3GP"))
        #expect(error?.description.contains("Scripts/setup.sh") == true)
    }

    @Test("the corpus's raw iOS and Android uploads decode",
          .enabled(if: Corpus.isPresent && hasFFmpeg, Corpus.absentMessage))
    func corpusUploads() throws {
        let ios = Corpus.files(in: "raw-ios", withExtension: "caf").prefix(3)
        let android = Corpus.files(in: "raw-android", withExtension: "3gp").prefix(3)
        #expect(ios.count == 3 && android.count == 3)
        for url in ios + android {
            let clip = try loadAudio(url, sampleRate: 16000)
            #expect(clip.decoder == .ffmpeg, "\(url.lastPathComponent)")
            #expect(clip.duration > 0.5, "\(url.lastPathComponent): \(clip.duration) s")
            #expect(clip.samples.allSatisfy { $0.isFinite && abs($0) <= 1.5 })
        }
    }
}

/// The error loading `url` throws, or nil (recorded as a test failure) when it loads.
func loadError(_ url: URL, ffmpeg: String? = installedFFmpeg) -> AudioError? {
    do {
        let clip = try loadAudio(url, ffmpeg: ffmpeg)
        Issue.record("\(url.lastPathComponent) loaded (\(clip.samples.count) samples) but should have failed")
        return nil
    } catch let error as AudioError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)")
        return nil
    }
}
