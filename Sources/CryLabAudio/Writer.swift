import CSndFile
import Foundation

/// Writes audio files through libsndfile, for generated corpora and tests.
public enum AudioWriter {
    public enum Container: String, Sendable, CaseIterable {
        case wav, flac, ogg, aiff
    }

    public enum SampleFormat: String, Sendable, CaseIterable {
        case unsigned8, pcm16, pcm24, pcm32, float32, float64, vorbis
    }

    /// interleaved: [frames * channels], values in [-1, 1].
    /// Writes to a temporary name beside `url` and renames, so a reader never sees a partial file.
    public static func write(_ interleaved: [Float], channels: Int, sampleRate: Int, to url: URL,
                             container: Container = .wav, format: SampleFormat = .pcm16,
                             extensible: Bool = false) throws {
        precondition(channels > 0 && interleaved.count % channels == 0, "samples must hold whole frames")
        var major: Int32
        switch container {
        case .wav: major = Int32(extensible ? SF_FORMAT_WAVEX : SF_FORMAT_WAV)
        case .flac: major = Int32(SF_FORMAT_FLAC)
        case .ogg: major = Int32(SF_FORMAT_OGG)
        case .aiff: major = Int32(SF_FORMAT_AIFF)
        }
        let minor: Int32
        switch format {
        case .unsigned8: minor = Int32(container == .aiff ? SF_FORMAT_PCM_S8 : SF_FORMAT_PCM_U8)
        case .pcm16: minor = Int32(SF_FORMAT_PCM_16)
        case .pcm24: minor = Int32(SF_FORMAT_PCM_24)
        case .pcm32: minor = Int32(SF_FORMAT_PCM_32)
        case .float32: minor = Int32(SF_FORMAT_FLOAT)
        case .float64: minor = Int32(SF_FORMAT_DOUBLE)
        case .vorbis: minor = Int32(SF_FORMAT_VORBIS)
        }
        var info = SF_INFO()
        info.samplerate = Int32(sampleRate)
        info.channels = Int32(channels)
        info.format = major | minor
        guard sf_format_check(&info) != 0 else {
            throw AudioError.invalidRequest(path: url.path, detail: "libsndfile cannot write \(format) samples in a \(container) file")
        }
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
        guard let file = sf_open(temporary.path, Int32(SFM_WRITE), &info) else {
            throw AudioError.unreadable(path: url.path, detail: "cannot create: \(String(cString: sf_strerror(nil)))")
        }
        let frames = interleaved.count / channels
        let written = interleaved.withUnsafeBufferPointer { sf_writef_float(file, $0.baseAddress, sf_count_t(frames)) }
        sf_close(file)
        guard written == frames else {
            try? FileManager.default.removeItem(at: temporary)
            throw AudioError.unreadable(path: url.path, detail: "wrote \(written) of \(frames) frames")
        }
        if rename(temporary.path, url.path) != 0 {
            try? FileManager.default.removeItem(at: temporary)
            throw AudioError.unreadable(path: url.path, detail: "cannot rename into place: \(String(cString: strerror(errno)))")
        }
    }
}
