import Foundation
import Testing

/// A fresh temporary folder, removed by `cleanUp()`.
struct TemporaryFolder {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("crylab-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> URL { url.appendingPathComponent(name) }

    func cleanUp() { try? FileManager.default.removeItem(at: url) }
}

/// The Donate-a-Cry corpus beside the project (`../shared/data/donateacry`), when present.
enum Corpus {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/data/donateacry")

    static var isPresent: Bool {
        FileManager.default.fileExists(atPath: root.appendingPathComponent("labeled").path)
    }

    static let absentMessage: Comment = "the Donate-a-Cry corpus is not at ../shared/data/donateacry; skipping the real-data test"

    static func files(in folder: String, withExtension ext: String) -> [URL] {
        let url = root.appendingPathComponent(folder)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: url.path) else { return [] }
        return names.filter { $0.hasSuffix(".\(ext)") }.sorted().map { url.appendingPathComponent($0) }
    }
}

/// frames of a sine at `frequency` Hz, amplitude `amplitude`.
func sine(frequency: Double, sampleRate: Int, seconds: Double, amplitude: Float = 0.5, phase: Double = 0) -> [Float] {
    let count = Int(seconds * Double(sampleRate))
    return (0..<count).map { amplitude * Float(sin(2 * Double.pi * frequency * Double($0) / Double(sampleRate) + phase)) }
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "lengths differ: \(a.count) vs \(b.count)")
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// The dominant frequency of `samples` in Hz, from the mean rate of upward zero crossings.
func zeroCrossingFrequency(_ samples: [Float], sampleRate: Int) -> Double {
    var crossings = 0
    for i in 1..<samples.count where samples[i - 1] < 0 && samples[i] >= 0 { crossings += 1 }
    return Double(crossings) * Double(sampleRate) / Double(samples.count)
}

func runFFmpeg(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y"] + arguments
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    if process.terminationStatus != 0 {
        throw CocoaError(.fileWriteUnknown, userInfo: ["arguments": arguments.joined(separator: " ")])
    }
}
