import ArgumentParser

@main
struct CryLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crylab",
        abstract: "Self-supervised pretraining and fine-tuning on infant-cry audio.",
        version: "0.1.0",
        subcommands: [DemoCommand.self, FeaturesCommand.self, PretrainCommand.self, ExportEncoderCommand.self, FinetuneCommand.self, EvaluateCommand.self, PredictCommand.self, EmbedCommand.self, InspectCommand.self, BaselineCommand.self])
}
