import Foundation

/// What the first bytes of a file say it is. Used to route a file to libsndfile or ffmpeg without
/// trusting its extension (the corpus's iOS `.caf` files are really 3GP/MP4).
enum Container: Equatable {
    case wav, aiff, flac, ogg, au   // libsndfile
    case mp4, amr, mp3, caf          // ffmpeg
    case unknown

    var needsFFmpeg: Bool {
        switch self {
        case .mp4, .amr, .mp3, .caf: return true
        default: return false
        }
    }

    var displayName: String {
        switch self {
        case .wav: return "WAV"
        case .aiff: return "AIFF"
        case .flac: return "FLAC"
        case .ogg: return "OGG"
        case .au: return "AU"
        case .mp4: return "MP4/3GP"
        case .amr: return "AMR"
        case .mp3: return "MP3"
        case .caf: return "CAF"
        case .unknown: return "unrecognised"
        }
    }

    /// header: the first 16 bytes of the file (fewer if the file is shorter)
    static func sniff(_ header: [UInt8]) -> Container {
        func ascii(_ range: Range<Int>) -> String {
            guard header.count >= range.upperBound else { return "" }
            return String(decoding: header[range], as: UTF8.self)
        }
        let first4 = ascii(0..<4)
        switch first4 {
        case "RIFF", "RIFX", "RF64": return ascii(8..<12) == "WAVE" ? .wav : .unknown
        case "FORM": return (ascii(8..<12) == "AIFF" || ascii(8..<12) == "AIFC") ? .aiff : .unknown
        case "fLaC": return .flac
        case "OggS": return .ogg
        case ".snd": return .au
        case "caff": return .caf
        case "ID3": return .mp3
        default: break
        }
        if ascii(0..<3) == "ID3" { return .mp3 }
        if ascii(0..<5) == "#!AMR" { return .amr }
        if ascii(4..<8) == "ftyp" { return .mp4 }
        if header.count >= 2, header[0] == 0xFF, header[1] & 0xE0 == 0xE0 { return .mp3 }
        return .unknown
    }

    static func sniff(fileAt path: String) throws -> Container {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw AudioError.unreadable(path: path, detail: "cannot open for reading")
        }
        defer { try? handle.close() }
        let data = (try? handle.read(upToCount: 16)) ?? Data()
        return sniff([UInt8](data ?? Data()))
    }
}
