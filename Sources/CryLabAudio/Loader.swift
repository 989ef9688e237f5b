import Foundation

/// Loads any supported audio file as mono float samples, like `librosa.load`.
///
/// - Parameters:
///   - url: a file; WAV/FLAC/OGG/AIFF are read by libsndfile, phone formats (3GP/AMR, MP4, CAF,
///     MP3, M4A) by the `ffmpeg` program. The container is recognised from the file's first bytes,
///     not its extension.
///   - sampleRate: target rate in Hz (librosa's default is 22050); `nil` keeps the file's rate.
///     Resampling uses libsoxr at high quality.
///   - offset: seconds to skip from the start (default 0).
///   - duration: seconds to read after `offset`; `nil` reads to the end.
///   - ffmpeg: the `ffmpeg` program used for phone formats; by default the one on `PATH`.
/// - Throws: `AudioError`, naming the file, what went wrong and how to fix it.
public func loadAudio(_ url: URL, sampleRate: Int? = 22050, offset: Double = 0, duration: Double? = nil,
                      ffmpeg: String? = installedFFmpeg) throws -> AudioClip {
    let path = url.path
    guard offset >= 0, offset.isFinite else {
        throw AudioError.invalidRequest(path: path, detail: "offset must be a finite number of seconds >= 0, got \(offset)")
    }
    if let duration, !(duration > 0 && duration.isFinite) {
        throw AudioError.invalidRequest(path: path, detail: "duration must be a positive number of seconds, got \(duration)")
    }
    if let sampleRate, sampleRate <= 0 {
        throw AudioError.invalidRequest(path: path, detail: "sample rate must be positive, got \(sampleRate)")
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
        throw AudioError.fileNotFound(path: path)
    }
    let container = try Container.sniff(fileAt: path)

    var decoded: (interleaved: [Float], channels: Int, rate: Int)
    var decoder = AudioDecoderKind.libsndfile
    if container.needsFFmpeg {
        decoded = try FFmpegDecoder.decode(path: path, container: container, executable: ffmpeg)
        decoder = .ffmpeg
        let start = min(decoded.interleaved.count / decoded.channels, Int(offset * Double(decoded.rate)))
        var end = decoded.interleaved.count / decoded.channels
        if let duration { end = min(end, start + Int(duration * Double(decoded.rate))) }
        decoded.interleaved = Array(decoded.interleaved[(start * decoded.channels)..<(end * decoded.channels)])
    } else if container == .unknown {
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        if size == 0 { throw AudioError.empty(path: path) }
        throw AudioError.notAudio(path: path, detail: "its first bytes match no audio format CryLab reads")
    } else {
        decoded = try SndFileDecoder.decode(path: path, offset: offset, duration: duration)
    }

    let mono = downmix(decoded.interleaved, channels: decoded.channels)
    if mono.isEmpty && offset == 0 { throw AudioError.empty(path: path) }
    var samples = mono
    var rate = decoded.rate
    if let sampleRate, sampleRate != decoded.rate {
        do {
            samples = try Resampler.resample(mono, from: decoded.rate, to: sampleRate)
        } catch {
            throw AudioError.resampleFailed(path: path, detail: "\(error)")
        }
        rate = sampleRate
    }
    return AudioClip(samples: samples, sampleRate: rate, sourceRate: decoded.rate,
                     sourceChannels: decoded.channels, decoder: decoder)
}

/// interleaved: [frames * channels] -> [frames], the mean over channels (librosa's `to_mono`).
func downmix(_ interleaved: [Float], channels: Int) -> [Float] {
    if channels == 1 { return interleaved }
    let frames = interleaved.count / channels
    var mono = [Float](repeating: 0, count: frames)
    let count = Float(channels)
    interleaved.withUnsafeBufferPointer { x in
        for frame in 0..<frames {
            var sum: Float = 0
            for channel in 0..<channels { sum += x[frame * channels + channel] }
            mono[frame] = sum / count
        }
    }
    return mono
}

/// The `ffmpeg` program found on `PATH`, or nil when it is not installed.
public let installedFFmpeg: String? = FFmpegDecoder.installed
