import ArgumentParser
import CryLabMPI
import CryLabNN
import Foundation

@main
struct CryLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crylab",
        abstract: "Self-supervised pretraining and fine-tuning on infant-cry audio.",
        discussion: """
        The workflow: `features` turns audio into a feature store, `pretrain` trains a U-Net \
        autoencoder on unlabeled clips, `export-encoder` keeps its encoder, `finetune` puts a \
        classifier head on it and evaluates it by grouped cross-validation, `evaluate` and \
        `predict` use the classifier. `demo` runs all of it on generated audio. Under mpirun, \
        `pretrain` trains one model on every rank (data-parallel), and `finetune` and \
        `label-curve` run their folds on separate ranks (docs/distributed.md).
        """,
        version: "0.1.0",
        subcommands: [DemoCommand.self, FeaturesCommand.self, PretrainCommand.self, ExportEncoderCommand.self,
                      FinetuneCommand.self, EvaluateCommand.self, PredictCommand.self, EmbedCommand.self,
                      InspectCommand.self, BaselineCommand.self, ProbeCommand.self, LabelCurveCommand.self,
                      MPICheckCommand.self])

    static func main() {
        // Idle OpenMP threads must sleep, not spin: with another process on a core, spinning made
        // training several times slower (see ComputeThreads).
        ComputeThreads.relaunchWithPassiveOpenMPWaitIfNeeded()
        // The one communicator of this process, or nil (one environment check) without a launcher.
        let communicator: Communicator?
        do {
            communicator = try Communicator.initializeIfLaunched()
        } catch {
            FileHandle.standardError.write(Data("crylab: cannot start MPI: \(error)\n".utf8))
            Foundation.exit(1)
        }
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
            if let communicator, communicator.size > 1, !(command is any DistributedCommand) {
                throw ValidationError("""
                    this command does not run on several MPI ranks (\(communicator.size) were started): \
                    run it without mpirun; under mpirun, `pretrain` trains one model on every rank, and `finetune` and `label-curve` run their folds on separate ranks
                    """)
            }
        } catch {
            // Every rank parsed the same arguments: rank 0 alone says what is wrong.
            exitQuietly(unlessRoot: communicator, error: error)
        }
        do {
            if let distributed = command as? any DistributedCommand {
                try distributed.run(communicator: communicator)
            } else {
                try command.run()
            }
        } catch {
            guard let communicator, communicator.size > 1 else { exit(withError: error) }
            if error is RankFailures {
                // Every rank threw the same verdict and leaves cleanly; rank 0 reports it.
                exitQuietly(unlessRoot: communicator, error: error)
            }
            // This rank alone failed: the others may be waiting for it, so the job ends now.
            FileHandle.standardError.write(Data("crylab: \(communicator.name): error: \(error)\n".utf8))
            communicator.abort(code: exitCode(for: error).rawValue)
        }
    }

    /// Exits as ArgumentParser would, printing only on rank 0 (or without MPI).
    static func exitQuietly(unlessRoot communicator: Communicator?, error: any Error) -> Never {
        guard let communicator, communicator.rank != 0 else { exit(withError: error) }
        Foundation.exit(exitCode(for: error).rawValue)
    }
}

/// A subcommand that can run on several MPI ranks: `main` hands it the job's communicator
/// (nil when no launcher started the process).
protocol DistributedCommand: ParsableCommand {
    func run(communicator: Communicator?) throws
}

extension DistributedCommand {
    func run() throws { try run(communicator: nil) }
}
