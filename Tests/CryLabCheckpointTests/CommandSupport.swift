import CryLabDSP
import CryLabFeatures
import CryLabHDF5
import Foundation
import Testing

/// What a run of the `crylab` executable did.
struct CommandRun {
    var status: Int32
    /// False when the process died of a signal (a crash) instead of exiting.
    var exited: Bool
    var output: String
    var errors: String

    /// The libraries' own error reports must never reach the user: CryLab reports errors itself.
    var printedLibraryErrors: Bool { errors.contains("HDF5-DIAG") || errors.contains("#000:") }
}

/// Runs `crylab` (built beside the test bundle) with `arguments`, its output collected in `folder`.
func runCrylab(_ arguments: [String], in folder: URL) throws -> CommandRun {
    try #require(FileManager.default.isExecutableFile(atPath: crylabExecutable.path),
                 "the crylab executable is not built at \(crylabExecutable.path); run `swift build -c release` first")
    return try StartedProcess(crylabExecutable, arguments, in: folder).finish()
}

/// A program started with its standard output and error going to files in a folder.
struct StartedProcess {
    let process = Process()
    let outputURL: URL, errorURL: URL

    init(_ executable: URL, _ arguments: [String], in folder: URL) throws {
        let name = UUID().uuidString
        outputURL = folder.appendingPathComponent("\(name).out")
        errorURL = folder.appendingPathComponent("\(name).err")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        process.executableURL = executable
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: outputURL)
        process.standardError = try FileHandle(forWritingTo: errorURL)
        try process.run()
    }

    /// What it has written to standard output so far.
    var outputSoFar: String { (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "" }

    func finish() throws -> CommandRun {
        process.waitUntilExit()
        return CommandRun(status: process.terminationStatus, exited: process.terminationReason == .exit,
                          output: try String(contentsOf: outputURL, encoding: .utf8),
                          errors: try String(contentsOf: errorURL, encoding: .utf8))
    }
}

/// A temporary folder for the files one test gives `crylab`, removed by `remove()`.
struct Workspace {
    let folder: URL

    init() throws { folder = try temporaryFolder() }

    func remove() { try? FileManager.default.removeItem(at: folder) }

    func path(_ name: String) -> String { folder.appendingPathComponent(name).path }

    /// Writes `store` as `name`; returns its path.
    func write(_ store: FeatureStore, as name: String = "store.h5") throws -> String {
        try store.write(to: path(name))
        return path(name)
    }

    /// Writes `text` (a recipe) as `name`; returns its path.
    func write(_ text: String, as name: String) throws -> String {
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        return path(name)
    }

    func run(_ arguments: [String]) throws -> CommandRun { try runCrylab(arguments, in: folder) }
}

/// A labeled feature store of `clips` clips of `mels` x `frames`: two classes whose clips differ
/// in where their energy sits, in `groups` recording sources; normalisation from its values.
func labeledStore(clips: Int = 24, mels: Int = 16, frames: Int = 24, groups: Int = 6) -> FeatureStore {
    var frontEnd = FrontEnd.recommended
    frontEnd.nMels = mels
    frontEnd.frames = frames
    var features: [Float] = []
    for clip in 0..<clips {
        let centre = Float(clip % 2 == 0 ? mels / 4 : 3 * mels / 4)
        for m in 0..<mels {
            for t in 0..<frames {
                let wobble = Float((clip * 7 + t * 3) % 5) * 0.1
                features.append(exp(-pow(Float(m) - centre, 2) / 6) * 20 - 40 + wobble)
            }
        }
    }
    let mean = features.reduce(0, +) / Float(features.count)
    let std = (features.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(features.count)).squareRoot()
    return FeatureStore(frontEnd: frontEnd, classNames: ["a", "b"], features: features, mels: mels, frames: frames,
                        labels: (0..<clips).map { Int32($0 % 2) }, paths: (0..<clips).map { "clip\($0).wav" },
                        groups: (0..<clips).map { "family\($0 % groups)" }, durations: Array(repeating: 5, count: clips),
                        sourceRates: Array(repeating: 8000, count: clips), normalization: NormalizationStats(mean: mean, std: std),
                        skipped: [])
}
