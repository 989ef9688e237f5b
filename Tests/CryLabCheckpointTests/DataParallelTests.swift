import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import Foundation
import Testing

/// `crylab pretrain` on the ranks of `mpirun -np 2` (one model, each rank its share of every
/// batch), against one process, both with one engine thread per process.
@Suite("Data-parallel pretraining", .serialized,
       .enabled(if: mpirunPath != nil, "mpirun is not installed (Debian's openmpi-bin, which Scripts/setup.sh installs): MPI tests skipped"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: crylabExecutable.path), "the crylab executable is not built"))
struct DataParallelTests {
    /// No BatchNorm; every random draw of the objective in use (crop, gain, time shift, mixing,
    /// masks, noise) and the masked loss; 25 training clips in global batches of 7 (shares of 3
    /// and 4) and a last batch of 4 (shares of 2 and 2).
    static let recipe = """
        name: tiny-data-parallel
        frontEnd: {preset: recommended, nMels: 16, frames: 32}
        model: {widths: [4, 8], frames: 24}
        objective: {timeMasks: {count: 1, width: 4}, frequencyMasks: {count: 1, width: 3}, mixing: {probability: 0.5},
                    gainDB: 3, timeShift: 2, noise: 0.05, loss: masked}
        training: {epochs: 2, batchSize: 7, validationFraction: 0.2, seed: 5, optimizer: {learningRate: 0.003}}
        """

    /// The two runs may differ by float summation order alone: each rank sums the loss and the
    /// weight gradients over its share, and the allreduce adds the two shares, where one process
    /// sums over the whole batch at once; the convolutions may also pick other kernels for a
    /// smaller batch. The weights part in their last bits after the first step and the gap grows
    /// a little with each of the 8 steps. Measured here: losses 2.4e-9 apart (relative), weights
    /// 4.5e-8 (absolute; a weight moved by at most 0.023 in training). A share, draw or scaling
    /// that is wrong moves the losses by 1 % or more and the weights by 0.01 or more (tried:
    /// per-rank loss denominators, a rank mixing without its neighbour clip). Hence 1e-6 for both,
    /// 20 to 400 times the rounding seen.
    static let lossTolerance = 1e-6
    static let weightTolerance: Float = 1e-6

    func history(_ folder: String) throws -> [String: [Double]] {
        try JSONDecoder().decode([String: [Double]].self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/history.json")))
    }

    /// The recipe and a 30-clip store written into `workspace`; returns the pretrain command line
    /// for an output folder, after running it once in one process into `alone`.
    func setUp(_ workspace: Workspace) throws -> (String) -> [String] {
        let recipe = try workspace.write(Self.recipe, as: "recipe.yaml")
        let store = try workspace.write(labeledStore(clips: 30, mels: 16, frames: 32, groups: 6))
        let arguments = { (output: String) in
            ["pretrain", "--recipe", recipe, "--data", store, "--threads", "1", "--quiet", "-o", workspace.path(output)]
        }
        let alone = try workspace.run(arguments("alone"))
        #expect(alone.status == 0, "\(alone.errors)")
        return arguments
    }

    /// The largest relative difference of the two runs' per-epoch losses (both must have 2
    /// epochs) and the largest difference of their final weights.
    func differences(_ one: String, _ other: String, in workspace: Workspace) throws -> (loss: Double, weight: Float) {
        let a = try history(workspace.path(one)), b = try history(workspace.path(other))
        var largestLoss = 0.0
        for key in ["train_loss", "val_loss"] {
            let x = try #require(a[key]), y = try #require(b[key])
            #expect(x.count == 2 && y.count == 2, "\(key): \(x) and \(y)")
            for (u, v) in zip(x, y) { largestLoss = max(largestLoss, abs(u - v) / abs(u)) }
        }
        let first = try Checkpoint.load(workspace.path(one + "/last.h5")).model
        let second = try Checkpoint.load(workspace.path(other + "/last.h5")).model
        var largestWeight: Float = 0
        for (p, q) in zip(first.namedWeights, second.namedWeights) {
            #expect(p.path == q.path)
            for (u, v) in zip(p.parameter.value.values, q.parameter.value.values) { largestWeight = max(largestWeight, abs(u - v)) }
        }
        return (largestLoss, largestWeight)
    }

    @Test("pretrain on 2 ranks ends where one process ends, within float rounding; rank 0 alone writes")
    func equalsOneProcess() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let arguments = try setUp(workspace)
        // One job, two command lines: rank 1 is given its own output folder, which must stay absent.
        let parallel = try runMPI(launcherOptions + ["-np", "1", crylabExecutable.path] + arguments("ranks")
                                  + [":", "-np", "1", crylabExecutable.path] + arguments("rank1"), in: workspace)
        #expect(parallel.status == 0, "\(parallel.output)\n\(parallel.errors)")
        #expect(!FileManager.default.fileExists(atPath: workspace.path("rank1")), "rank 1 wrote nothing")
        let files = { (folder: String) in try FileManager.default.contentsOfDirectory(atPath: workspace.path(folder)).sorted() }
        #expect(try files("ranks") == files("alone"), "rank 0 wrote the run folder of one process")
        #expect(parallel.output.components(separatedBy: "checkpoint: ").count == 2, "one summary, from rank 0: \(parallel.output)")

        let (largestLoss, largestWeight) = try differences("alone", "ranks", in: workspace)
        let trained = try Checkpoint.load(workspace.path("alone/last.h5")).model
        let initial = try Model.uNet(try #require(trained.configuration?.uNet))
        var changed: Float = 0
        for (a, c) in zip(trained.namedWeights, initial.namedWeights) {
            for (x, z) in zip(a.parameter.value.values, c.parameter.value.values) { changed = max(changed, abs(x - z)) }
        }
        print("data-parallel pretraining, 2 ranks against one process: largest relative loss difference \(largestLoss), "
              + "largest weight difference \(largestWeight) (largest change of a weight in training \(changed))")
        #expect(largestLoss <= Self.lossTolerance)
        #expect(largestWeight <= Self.weightTolerance)
        #expect(changed > 1000 * Self.weightTolerance, "training moved the weights (\(changed)): the comparison means something")
    }

    @Test("a run begun on 2 ranks and resumed in one process ends where one process ends")
    func resumeOnFewerRanks() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let arguments = try setUp(workspace)
        // Epoch 1 on two ranks, stopped there; epoch 2 resumed by one process from its last.h5.
        let begun = try runMPI(launcherOptions + ["-np", "2", crylabExecutable.path] + arguments("resumed") + ["--epochs", "1"],
                               in: workspace)
        #expect(begun.status == 0, "\(begun.output)\n\(begun.errors)")
        let resumed = try workspace.run(arguments("resumed") + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.errors)")
        let (largestLoss, largestWeight) = try differences("alone", "resumed", in: workspace)
        print("pretraining begun on 2 ranks, resumed on 1: largest relative loss difference \(largestLoss), weight difference \(largestWeight)")
        #expect(largestLoss <= Self.lossTolerance)
        #expect(largestWeight <= Self.weightTolerance)
    }
}
