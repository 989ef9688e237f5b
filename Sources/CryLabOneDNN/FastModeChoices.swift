import CDNNL
import CryLabTensor
import Foundation
import Synchronization

/// `ConvolutionPrecision.fast`'s timed choices, kept in a JSON file so that later processes on the
/// same machine reuse them instead of timing every candidate again: the story U-Net's first fast
/// step then costs what a Winograd one does (about 2 s instead of 16-17), and the same kernels run,
/// so a run repeated with the same seed and thread count gives the same bits.
///
/// Each entry is one decision: a convolution pass of one shape among a set of candidate kinds, or a
/// transposed convolution's product in fp32 or bf16, with the times it was decided on. Entries
/// timed on another machine (CPU model or oneDNN's instruction set differ) or by another oneDNN
/// version are ignored and, at the next choice recorded, replaced. Delete the file (or call
/// `forget()`) to time again, e.g. after a choice was timed while the machine was busy.
///
/// A file that cannot be read as such JSON is reported on standard error and replaced at the next
/// choice; it holds nothing a new timing cannot recreate. Writes are atomic (a temporary file
/// renamed over the old one), so a crash never leaves it half written.
public final class FastModeChoices: Sendable {
    public let file: URL
    private let state: Mutex<Stored>
    /// Whether a failed write was reported already: once per process is enough.
    private let reportedWriteFailure = Mutex(false)

    struct Stored: Codable, Equatable {
        var machine: String
        var choices: [String: Choice]
    }

    struct Choice: Codable, Equatable {
        /// A `FastModeCandidates` kind name, or "fp32"/"bf16" for products.
        var choice: String
        /// Each candidate's best timed run as compared: with the reorders it is charged, and bf16's
        /// divided by `ConvolutionPrecision.fastModeBFloat16Margin`.
        var milliseconds: [String: Double]
    }

    /// Reads `file` if it exists. Nothing is written until a choice is recorded.
    public init(file: URL) {
        self.file = file
        var stored = Stored(machine: Self.machine, choices: [:])
        if let data = try? Data(contentsOf: file) {
            if let found = try? JSONDecoder().decode(Stored.self, from: data) {
                if found.machine == Self.machine { stored = found }
            } else {
                FileHandle.standardError.write(Data(
                    "warning: \(file.path) is not a CryLab fast-mode choice file; it will be replaced by new timings\n".utf8))
            }
        }
        state = Mutex(stored)
    }

    /// The number of stored choices that apply to this machine.
    public var count: Int { state.withLock { $0.choices.count } }

    /// Drops every stored choice (the file too), so that each is timed again when next needed.
    public func forget() {
        state.withLock { $0.choices = [:] }
        try? FileManager.default.removeItem(at: file)
    }

    /// The decision `key` names among the candidates `names`: the stored one if `choices` holds
    /// one of them, else the index of the least of `timing()` (each candidate's time, in
    /// nanoseconds; the first on a tie), stored in `choices` with the times if given.
    static func choose(_ key: String, among names: [String], in choices: FastModeChoices?, timing: () -> [Double]) -> Int {
        if let stored = choices?.state.withLock({ $0.choices[key]?.choice }), let index = names.firstIndex(of: stored) {
            return index
        }
        let times = timing()
        let winner = times.indices.min { times[$0] < times[$1] }!
        choices?.record(names[winner], nanoseconds: Dictionary(uniqueKeysWithValues: zip(names, times)), for: key)
        return winner
    }

    /// Stores a decision, with each candidate's time, and rewrites the file. A file that cannot be
    /// written is reported on standard error once; the choices still hold for this process. Two
    /// processes recording at once each write what they know: the last one's file stands, and
    /// choices only the other made are timed again by a later run.
    private func record(_ choice: String, nanoseconds: [String: Double], for key: String) {
        // Milliseconds to the microsecond. A candidate without a usable kernel timed as infinite
        // is left out, since JSON has no infinity.
        let milliseconds = nanoseconds.filter { $0.value.isFinite }.mapValues { ($0 / 1e3).rounded() / 1e3 }
        let data = state.withLock { stored -> Data? in
            stored.choices[key] = Choice(choice: choice, milliseconds: milliseconds)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return try? encoder.encode(stored)
        }
        guard let data else { return }
        do {
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: file, options: .atomic)
        } catch {
            guard !reportedWriteFailure.withLock({ reported in defer { reported = true }; return reported }) else { return }
            FileHandle.standardError.write(Data(
                "warning: the fast mode's choices hold for this run only: could not write \(file.path): \(error.localizedDescription)\n".utf8))
        }
    }

    /// What makes a timing transferable: the CPU model, the instruction set oneDNN uses on it, and oneDNN's version.
    static let machine: String = {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let v = dnnl_version()!.pointee
        return "\(cpu); oneDNN \(v.major).\(v.minor).\(v.patch), ISA \(dnnl_get_effective_cpu_isa().rawValue)"
    }()

    /// The default place: $XDG_CACHE_HOME/crylab/fast-mode-choices.json, else ~/.cache/crylab/...
    public static var defaultFile: URL {
        let environment = ProcessInfo.processInfo.environment
        let cache = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
        return cache.appendingPathComponent("crylab").appendingPathComponent("fast-mode-choices.json")
    }
}
