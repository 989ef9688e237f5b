import Foundation

/// Decodes what libsndfile cannot (3GP/AMR-NB, MP4 with IMA4 ADPCM, CAF, MP3, M4A) by running the
/// `ffmpeg` program and reading 16-bit PCM WAV from its output, as librosa's audioread fallback
/// does (samples are int16 / 32768).
enum FFmpegDecoder {
    /// The `ffmpeg` found on `PATH` when the process started, or nil.
    static let installed: String? = {
        let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in searchPath.split(separator: ":") {
            let candidate = "\(directory)/ffmpeg"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }()

    /// Returns interleaved samples, frames x channels, of the whole file.
    static func decode(path: String, container: Container, executable: String?) throws -> (interleaved: [Float], channels: Int, rate: Int) {
        guard let ffmpeg = executable else {
            throw AudioError.ffmpegMissing(path: path, container: container.displayName)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ffmpeg)
        process.arguments = ["-nostdin", "-hide_banner", "-v", "error", "-i", path,
                             "-map", "0:a:0", "-f", "wav", "-acodec", "pcm_s16le", "-"]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw AudioError.ffmpegFailed(path: path, detail: "cannot start \(ffmpeg): \(error)")
        }
        // Drain stderr on another thread so a chatty ffmpeg never blocks on a full pipe.
        let errorOutput = ErrorOutput()
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            errorOutput.data = errors.fileHandleForReading.readDataToEndOfFile()
            drained.signal()
        }
        let wav = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        drained.wait()
        if process.terminationStatus != 0 {
            let message = String(decoding: errorOutput.data, as: UTF8.self)
                .split(separator: "\n").last.map(String.init) ?? "exit status \(process.terminationStatus)"
            throw AudioError.ffmpegFailed(path: path, detail: message)
        }
        return try parsePCM16WAV(wav, path: path)
    }

    /// Parses the streamed WAV ffmpeg writes to a pipe (its size fields may be unset).
    static func parsePCM16WAV(_ data: Data, path: String) throws -> (interleaved: [Float], channels: Int, rate: Int) {
        let bytes = [UInt8](data)
        func u32(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24 }
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        guard bytes.count >= 12, bytes[0..<4].elementsEqual("RIFF".utf8), bytes[8..<12].elementsEqual("WAVE".utf8) else {
            throw AudioError.ffmpegFailed(path: path, detail: "ffmpeg produced no audio")
        }
        var position = 12
        var channels = 0
        var rate = 0
        while position + 8 <= bytes.count {
            let id = String(decoding: bytes[position..<position + 4], as: UTF8.self)
            let size = u32(position + 4)
            let body = position + 8
            if id == "fmt " {
                guard body + 16 <= bytes.count else { break }
                channels = u16(body + 2)
                rate = u32(body + 4)
            } else if id == "data" {
                guard channels > 0, rate > 0 else { break }
                let sampleCount = (bytes.count - body) / 2
                var interleaved = [Float](repeating: 0, count: sampleCount - sampleCount % channels)
                bytes.withUnsafeBufferPointer { raw in
                    for i in 0..<interleaved.count {
                        let value = Int16(bitPattern: UInt16(raw[body + 2 * i]) | UInt16(raw[body + 2 * i + 1]) << 8)
                        interleaved[i] = Float(value) / 32768
                    }
                }
                return (interleaved, channels, rate)
            }
            position = body + size + (size & 1)
        }
        throw AudioError.ffmpegFailed(path: path, detail: "ffmpeg output has no audio stream")
    }
}

/// What ffmpeg wrote to standard error, handed from the draining thread (ordered by a semaphore).
private final class ErrorOutput: @unchecked Sendable {
    var data = Data()
}

/// Phone recordings in bulk: one `ffmpeg` process converts a whole batch of files to 16-bit WAV
/// (the same samples `loadAudio` gets from ffmpeg one file at a time), since starting ffmpeg
/// costs far more than decoding a few seconds of AMR or IMA4.
public enum FFmpegBatch {
    /// Whether `url` is decoded through ffmpeg, judged by its content.
    public static func needsFFmpeg(_ url: URL) -> Bool {
        (try? Container.sniff(fileAt: url.path).needsFFmpeg) ?? false
    }

    /// Converts `urls` to WAV files in `folder` with one ffmpeg run; returns them in order, or
    /// nil when ffmpeg is missing or the run failed (then decode the files one by one to learn
    /// which of them is at fault).
    public static func convertToWAV(_ urls: [URL], into folder: URL, ffmpeg: String? = installedFFmpeg) -> [URL]? {
        guard let ffmpeg, !urls.isEmpty else { return nil }
        var arguments = ["-nostdin", "-hide_banner", "-v", "error", "-y"]
        for url in urls { arguments += ["-i", url.path] }
        let outputs = urls.indices.map { folder.appendingPathComponent("\($0).wav") }
        for (index, output) in outputs.enumerated() {
            arguments += ["-map", "\(index):a:0", "-f", "wav", "-acodec", "pcm_s16le", output.path]
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ffmpeg)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        process.waitUntilExit()
        guard process.terminationStatus == 0, outputs.allSatisfy({ FileManager.default.fileExists(atPath: $0.path) }) else { return nil }
        return outputs
    }
}
