import ArgumentParser
import CryLabCheckpoint
import Foundation

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a checkpoint or Keras .h5 holds: layers, shapes, parameters, trainable flags, front end, classes, training state.")

    @Argument(help: "A .h5 file written by CryLab or Keras.")
    var file: String

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let description = try Checkpoint.describe(file)
        if json { try printJSON(description) } else { print(description.text) }
    }
}
