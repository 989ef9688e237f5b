import ArgumentParser
import CryLabNN

@main
struct CryLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crylab",
        abstract: "Self-supervised pretraining and fine-tuning on infant-cry audio.",
        discussion: """
        The workflow: `features` turns audio into a feature store, `pretrain` trains a U-Net \
        autoencoder on unlabeled clips, `export-encoder` keeps its encoder, `finetune` puts a \
        classifier head on it and evaluates it by grouped cross-validation, `evaluate` and \
        `predict` use the classifier. `demo` runs all of it on generated audio.
        """,
        version: "0.1.0",
        subcommands: [DemoCommand.self, FeaturesCommand.self, PretrainCommand.self, ExportEncoderCommand.self,
                      FinetuneCommand.self, EvaluateCommand.self, PredictCommand.self, EmbedCommand.self,
                      InspectCommand.self, BaselineCommand.self, ProbeCommand.self, LabelCurveCommand.self])

    static func main() {
        // Idle OpenMP threads must sleep, not spin: with another process on a core, spinning made
        // training several times slower (see ComputeThreads).
        ComputeThreads.relaunchWithPassiveOpenMPWaitIfNeeded()
        main(nil)
    }
}
