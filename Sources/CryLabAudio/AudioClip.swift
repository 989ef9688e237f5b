import Foundation

/// Mono audio as `librosa.load` returns it: float samples in [-1, 1] at `sampleRate`.
public struct AudioClip: Sendable {
    /// samples: [frames], mono
    public var samples: [Float]
    /// Rate of `samples`, in Hz.
    public var sampleRate: Int
    /// Rate of the file as stored, in Hz (equal to `sampleRate` when no resampling happened).
    public var sourceRate: Int
    /// Channel count of the file as stored (down-mixed to mono by averaging).
    public var sourceChannels: Int
    /// Which decoder read the file.
    public var decoder: AudioDecoderKind

    public init(samples: [Float], sampleRate: Int, sourceRate: Int, sourceChannels: Int, decoder: AudioDecoderKind) {
        self.samples = samples
        self.sampleRate = sampleRate
        self.sourceRate = sourceRate
        self.sourceChannels = sourceChannels
        self.decoder = decoder
    }

    /// Duration in seconds.
    public var duration: Double { Double(samples.count) / Double(sampleRate) }
}

public enum AudioDecoderKind: String, Sendable, Codable {
    case libsndfile
    case ffmpeg
}

/// Why a file could not be turned into audio. Every case names the file and says how to fix it.
public enum AudioError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(path: String)
    case notAudio(path: String, detail: String)
    case unreadable(path: String, detail: String)
    case truncated(path: String, declaredFrames: Int, readFrames: Int)
    case empty(path: String)
    case ffmpegMissing(path: String, container: String)
    case ffmpegFailed(path: String, detail: String)
    case invalidRequest(path: String, detail: String)
    case resampleFailed(path: String, detail: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "\(path): no such file; check the path."
        case .notAudio(let path, let detail):
            return "\(path): not an audio file (\(detail)); remove it from the input or convert it to WAV/FLAC."
        case .unreadable(let path, let detail):
            return "\(path): cannot be read (\(detail)); check permissions or re-export the file."
        case .truncated(let path, let declared, let read):
            return "\(path): truncated: the header declares \(declared) frames but only \(read) are present; re-copy or re-export the file."
        case .empty(let path):
            return "\(path): contains no audio samples; remove it from the input."
        case .ffmpegMissing(let path, let container):
            return "\(path): \(container) audio needs the ffmpeg program, which is not installed; install it with `Scripts/setup.sh` (or `apt-get install ffmpeg`)."
        case .ffmpegFailed(let path, let detail):
            return "\(path): ffmpeg could not decode it (\(detail)); the file is probably damaged."
        case .invalidRequest(let path, let detail):
            return "\(path): \(detail)"
        case .resampleFailed(let path, let detail):
            return "\(path): resampling failed (\(detail))."
        }
    }
}
