import CryLabNN
import CryLabOneDNN
import Foundation
import Testing

/// The fast mode's choices kept in a file: later processes take them without timing.
@Suite struct FastModeChoicesTests {
    // Shapes no other test prepares: the prepared passes are cached process-wide, per shape.
    static let timed = ConvolutionGeometry(batch: 2, inputHeight: 13, inputWidth: 11, inputChannels: 16, outputChannels: 32,
                                           kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
    static let stored = ConvolutionGeometry(batch: 3, inputHeight: 13, inputWidth: 11, inputChannels: 16, outputChannels: 32,
                                            kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
    static let corrupt = ConvolutionGeometry(batch: 4, inputHeight: 13, inputWidth: 11, inputChannels: 16, outputChannels: 32,
                                             kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
    static let unwritable = ConvolutionGeometry(batch: 5, inputHeight: 13, inputWidth: 11, inputChannels: 16, outputChannels: 32,
                                                kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)

    func temporaryFile(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("crylab-fast-choices-\(UUID().uuidString)")
            .appendingPathComponent(name)
    }

    func implementations(_ g: ConvolutionGeometry, _ choices: FastModeChoices) -> [String] {
        oneDNN(.fast, choices: choices).implementationNames(g)
    }

    /// The kind of pass an implementation name reports.
    func kind(_ implementation: String) -> String {
        if implementation.contains("bf16") { return "bf16" }
        if implementation.contains("wino") { return "winograd" }
        return implementation.contains("(blocked)") ? "direct-blocked" : "direct"
    }

    /// One shape timed into a file; the file rewritten to choose each pass's slowest kind, for a
    /// second shape; that shape then runs those kinds, and nothing is timed or written again.
    @Test func storedChoicesAreTakenWithoutTiming() throws {
        let file = temporaryFile("choices.json")
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let first = FastModeChoices(file: file)
        let timedNames = implementations(Self.timed, first)
        #expect(first.count == 3, "forward, backward-data and backward-weights each timed once, got \(first.count) choices")

        // The timed choices, moved to the second shape, each switched to the kind that timed slowest.
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        let choices = try #require(json["choices"] as? [String: [String: Any]])
        var moved: [String: [String: Any]] = [:]
        // Per pass, in the order implementationNames reports them.
        var expected = ["?", "?", "?"]
        for (key, entry) in choices {
            let times = try #require(entry["milliseconds"] as? [String: Double])
            #expect(times.count >= 2, "\(key): expected several candidates timed, got \(times)")
            #expect(entry["choice"] as? String == times.min { $0.value < $1.value }?.key, "\(key): the fastest kind must be chosen")
            let slowest = times.max { $0.value < $1.value }!.key
            let pass = try #require(["forward", "backwardData", "backwardWeights"].firstIndex { key.contains(", \($0)") },
                                    "\(key) names no pass")
            expected[pass] = slowest
            moved[key.replacingOccurrences(of: "\(Self.timed)", with: "\(Self.stored)")] = ["choice": slowest, "milliseconds": times]
        }
        #expect(Set(moved.keys).count == 3 && moved.keys.allSatisfy { $0.contains("\(Self.stored)") })
        json["choices"] = moved
        try JSONSerialization.data(withJSONObject: json).write(to: file)
        let written = try Data(contentsOf: file)

        let second = FastModeChoices(file: file)
        #expect(second.count == 3)
        let storedNames = implementations(Self.stored, second)
        print("fast mode timed \(timedNames) for \(Self.timed); stored slowest kinds \(expected) gave \(storedNames)")
        #expect(storedNames.map(kind) == expected, "the passes must run the stored kinds \(expected), got \(storedNames)")
        #expect(try Data(contentsOf: file) == written, "a stored choice must not be timed or written again")
    }

    /// Choices timed on another machine are ignored; a file that is not a choice file is replaced.
    @Test func foreignAndCorruptFilesAreReplaced() throws {
        let file = temporaryFile("choices.json")
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let foreign = #"{"machine": "another CPU; oneDNN 9.9.9, ISA 1", "choices": {"k": {"choice": "direct", "milliseconds": {}}}}"#
        try Data(foreign.utf8).write(to: file)
        #expect(FastModeChoices(file: file).count == 0, "choices timed on another machine must not apply here")

        try Data("not JSON".utf8).write(to: file)
        let choices = FastModeChoices(file: file)
        #expect(choices.count == 0)
        _ = implementations(Self.corrupt, choices)
        let reread = FastModeChoices(file: file)
        #expect(reread.count == 3, "the corrupt file must be replaced by the new timings, got \(reread.count) choices")

        reread.forget()
        #expect(reread.count == 0 && !FileManager.default.fileExists(atPath: file.path))
    }

    /// A place that cannot be written (here: below a regular file) keeps the choices in memory.
    @Test func unwritableFileKeepsChoicesForTheProcess() throws {
        let folder = temporaryFile("not-a-folder")
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        try FileManager.default.createDirectory(at: folder.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data("a regular file".utf8).write(to: folder)
        let choices = FastModeChoices(file: folder.appendingPathComponent("choices.json"))
        _ = implementations(Self.unwritable, choices)
        #expect(choices.count == 3, "the choices must hold in memory when the file cannot be written, got \(choices.count)")
        #expect(!FileManager.default.fileExists(atPath: choices.file.path))
    }
}
