import ArgumentParser
import CryLabNN
import CryLabTraining
import Foundation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the whole workflow on generated cry-like audio; needs no data.",
        discussion: """
        Generates an unlabeled pool and a labeled four-class set of cry-like recordings (varied \
        sample rates and channel counts), then runs features, pretraining, encoder export, \
        fine-tuning with grouped cross-validation, evaluation and prediction on them, and \
        summarises what each step produced. The same steps on real data: see the README.
        """)

    @Option(name: .shortAndLong, help: "Folder for the generated audio and every artefact.")
    var output: String = "Checkpoints/demo"

    @Option(help: "Seed for the generated audio.")
    var seed: UInt64 = 7

    @Option(help: "Threads (default: every core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func run() throws {
        let started = Date()
        let result = try DemoPipeline(folder: URL(fileURLWithPath: output), seed: seed, threads: threads).run()
        print("\nsummary (\(Int(Date().timeIntervalSince(started))) s):")
        for line in result.lines { print("  \(line)") }
        print("\nopen \(result.finetune.report ?? "") in a browser for the fine-tuning report, \(result.pretrain.report ?? "") for pretraining.")
    }
}
