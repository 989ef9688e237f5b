import CryLabCheckpoint
import CryLabNN
import Foundation
import Testing

/// The `crylab` executable built beside the test bundle.
let crylabExecutable = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("crylab")

@Suite("Crash-safe writes")
struct KillTests {
    @Test("a writer killed with SIGKILL at any moment leaves the old checkpoint or the new one",
          .enabled(if: FileManager.default.isExecutableFile(atPath: crylabExecutable.path), "the crylab executable is not built"))
    func killWriterRepeatedly() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // A U-Net big enough that writing its encoder takes a few tens of milliseconds.
        let source = folder.appendingPathComponent("unet.h5").path
        try Checkpoint.save(try Model.uNet(UNetConfiguration(inputShape: [32, 32, 1], widths: [32, 64, 128, 256, 512])),
                            metadata: CheckpointMetadata(epoch: 1), to: source)
        let output = folder.appendingPathComponent("encoder.h5").path
        func writer() throws -> Process {
            let process = Process()
            process.executableURL = crylabExecutable
            process.arguments = ["export-encoder", source, "--output", output]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        // How long one whole write takes here and now (start-up included, which is what a busy
        // machine stretches): the kills are spread from early in it to past its end.
        let started = Date()
        let calibration = try writer()
        calibration.waitUntilExit()
        #expect(calibration.terminationReason == .exit && calibration.terminationStatus == 0)
        let whole = max(Date().timeIntervalSince(started), 0.02)
        let earliest = UInt32(whole * 0.05 * 1e6), latest = UInt32(whole * 1.5 * 1e6)
        var generator = SystemRandomNumberGenerator()
        var killed = 0, completed = 0
        for _ in 0..<30 {
            let process = try writer()
            usleep(UInt32.random(in: earliest...latest, using: &generator))
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                killed += 1
            }
            process.waitUntilExit()
            if process.terminationReason == .exit && process.terminationStatus == 0 { completed += 1 }
            if FileManager.default.fileExists(atPath: output) {
                let encoder = try Checkpoint.load(output)  // throws if the file were damaged
                #expect(encoder.model.configuration?.kind == .encoder)
            }
        }
        print(String(format: "a whole write took %.0f ms; killed \(killed) writers, \(completed) completed", whole * 1000))
        #expect(killed >= 5, "the test must really interrupt writers")
        // On a loaded machine every writer may have been killed (writes then take longer than the
        // calibration said): one more, left to finish, must replace whatever the killed ones left.
        if completed == 0 {
            let last = try writer()
            last.waitUntilExit()
            #expect(last.terminationReason == .exit && last.terminationStatus == 0)
        }
        #expect(try Checkpoint.load(output).model.configuration?.kind == .encoder, "a completed write leaves a readable encoder")
        // The next writer removes what killed writers left behind.
        try Checkpoint.save(try Model.encoder(.story, levels: 1), metadata: CheckpointMetadata(), to: output)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty, "stray temporary files: \(leftovers)")
    }
}
