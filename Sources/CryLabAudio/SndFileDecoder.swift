import CSndFile
import Foundation

/// Decodes WAV (8-bit unsigned, 16/24/32-bit integer, 32/64-bit float, WAVE_FORMAT_EXTENSIBLE),
/// FLAC, OGG and AIFF through libsndfile, with `librosa.load`'s framing of `offset` and `duration`
/// (both in seconds, converted to frames by truncation at the file's own rate).
enum SndFileDecoder {
    /// Returns interleaved samples, frames x channels.
    static func decode(path: String, offset: Double, duration: Double?) throws -> (interleaved: [Float], channels: Int, rate: Int) {
        var info = SF_INFO()
        guard let file = sf_open(path, Int32(SFM_READ), &info) else {
            let reason = String(cString: sf_strerror(nil))
            throw AudioError.notAudio(path: path, detail: reason)
        }
        defer { sf_close(file) }
        let channels = Int(info.channels)
        let rate = Int(info.samplerate)
        guard channels > 0, rate > 0 else {
            throw AudioError.notAudio(path: path, detail: "header declares \(channels) channels at \(rate) Hz")
        }
        let declared = Int(info.frames)
        if let declaredByHeader = declaredFramesIfTruncated(file: file) {
            throw AudioError.truncated(path: path, declaredFrames: declaredByHeader, readFrames: declared)
        }
        let start = min(declared, Int(offset * Double(rate)))
        var wanted = declared - start
        if let duration { wanted = min(wanted, Int(duration * Double(rate))) }
        if start > 0, sf_seek(file, sf_count_t(start), SEEK_SET) < 0 {
            throw AudioError.unreadable(path: path, detail: "cannot seek to frame \(start)")
        }
        var interleaved = [Float](repeating: 0, count: max(0, wanted) * channels)
        let read = interleaved.withUnsafeMutableBufferPointer { buffer in
            Int(sf_readf_float(file, buffer.baseAddress, sf_count_t(wanted)))
        }
        if read < wanted {
            if sf_error(file) != 0 {
                throw AudioError.unreadable(path: path, detail: String(cString: sf_strerror(file)))
            }
            interleaved.removeLast((wanted - read) * channels)
        }
        return (interleaved, channels, rate)
    }

    /// libsndfile quietly shortens a WAV whose data chunk runs past the end of the file, noting
    /// "data : DECLARED (should be PRESENT)" in its log; a file cut short in copying is damaged, so
    /// CryLab reports it instead of using part of it. Returns the frame count the header declares.
    private static func declaredFramesIfTruncated(file: OpaquePointer) -> Int? {
        var log = [CChar](repeating: 0, count: 8192)
        let length = sf_command(file, Int32(SFC_GET_LOG_INFO), &log, Int32(log.count))
        guard length > 0 else { return nil }
        let lines = String(cString: log).split(separator: "\n")
        var blockAlign = 0
        for line in lines where line.contains("Block Align") {
            blockAlign = Int(line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
        }
        for line in lines where line.hasPrefix("data") && line.contains("(should be") {
            let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            if numbers.count >= 2, numbers[0] > numbers[1] {
                return blockAlign > 0 ? numbers[0] / blockAlign : numbers[0]
            }
        }
        return nil
    }
}
