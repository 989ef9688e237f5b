import CryLabCheckpoint
import CryLabFeatures
import Foundation
import Testing

@Suite("Ctrl-C during pretraining")
struct InterruptTests {
    /// The `crylab` executable built beside the test bundle.
    static let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("crylab")

    @Test("SIGINT saves interrupted.h5 and exits cleanly; last.h5 stays a complete epoch",
          .enabled(if: FileManager.default.isExecutableFile(atPath: executable.path), "the crylab executable is not built"))
    func interrupt() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let storePath = folder.appendingPathComponent("store.h5").path
        try syntheticStore(clips: 64).write(to: storePath)
        let recipe = folder.appendingPathComponent("recipe.yaml")
        let (_, text) = try tinyRecipe(epochs: 1000)
        try text.write(to: recipe, atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["pretrain", "--recipe", recipe.path, "--data", storePath, "--output", folder.appendingPathComponent("run").path,
                             "--quiet", "--threads", "1"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let last = folder.appendingPathComponent("run/last.h5").path
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: last) && Date() < deadline && process.isRunning { usleep(50_000) }
        #expect(FileManager.default.fileExists(atPath: last), "a first epoch should have been saved")
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "exit status \(process.terminationStatus)")
        let interrupted = try Checkpoint.load(folder.appendingPathComponent("run/interrupted.h5").path)
        let complete = try Checkpoint.load(last)
        #expect(interrupted.metadata.step >= complete.metadata.step)
        #expect(complete.metadata.epoch >= 1)
    }
}
