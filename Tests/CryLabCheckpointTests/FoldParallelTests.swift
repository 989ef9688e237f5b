import CryLabCheckpoint
import CryLabFeatures
import CryLabNN
import Foundation
import Testing

/// `crylab finetune` with its folds on the ranks of `mpirun -np 2`, against one process. Each
/// rank and the single process use one thread: the same thread count gives the same bits.
@Suite("Fold-parallel fine-tuning", .serialized,
       .enabled(if: mpirunPath != nil, "mpirun is not installed (Debian's openmpi-bin, which Scripts/setup.sh installs): MPI tests skipped"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: crylabExecutable.path), "the crylab executable is not built"))
struct FoldParallelTests {
    static let recipe = """
        name: tiny-mpi
        classes: [a, b]
        encoder: {widths: [4, 8], frames: 24}
        encoderLevels: 2
        head: {pooling: globalAverage, hidden: [{units: 8, dropoutRate: 0.1}]}
        imbalance: {classWeights: balanced}
        augment: {timeMasks: {count: 1, width: 4}, noise: 0.05}
        training: {epochs: 3, batchSize: 8, validationFraction: 0.2, seed: 3, optimizer: {learningRate: 0.003}}
        evaluation: {folds: 3, trainFinalModel: true}
        """

    /// A report.json without what depends on time and place.
    func figures(_ folder: String) throws -> NSDictionary {
        var report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/report.json"))) as? [String: Any])
        for key in ["seconds", "samplesPerSecond", "runFolder", "report", "classifier"] { report[key] = nil }
        return report as NSDictionary
    }

    /// Each saved fold's out-of-fold probabilities, selected epoch and history.
    func folds(_ folder: String, count: Int) throws -> [NSDictionary] {
        try (1...count).map { fold in
            var record = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/fold-\(fold).json"))) as? [String: Any])
            record["trainingSeconds"] = nil
            return record as NSDictionary
        }
    }

    @Test("finetune --folds 3 on 2 ranks gives the one-process run's figures bit for bit, and --resume continues it")
    func foldParallelFinetune() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let recipe = try workspace.write(Self.recipe, as: "recipe.yaml")
        let common = ["finetune", "--recipe", recipe, "--data", try workspace.write(labeledStore(clips: 24, groups: 6)),
                      "--from-scratch", "--folds", "3", "--threads", "1"]
        let started = Date()
        let alone = try workspace.run(common + ["-o", workspace.path("alone")])
        let aloneSeconds = Date().timeIntervalSince(started)
        #expect(alone.status == 0, "\(alone.errors)")
        let parallelStarted = Date()
        let parallel = try runMPI(mpirun(2, common + ["-o", workspace.path("ranks")]), in: workspace)
        let parallelSeconds = Date().timeIntervalSince(parallelStarted)
        #expect(parallel.status == 0, "\(parallel.output)\n\(parallel.errors)")
        print(String(format: "fine-tuning 3 folds: %.1f s in one process, %.1f s on 2 ranks", aloneSeconds, parallelSeconds))
        #expect(parallel.errors.contains("rank 1/2: fold 2/3: "), "rank 1 trains fold 2: \(parallel.errors)")
        #expect(parallel.errors.contains("rank 0/2: fold 3/3: "), "rank 0 trains fold 3: \(parallel.errors)")
        #expect(parallel.output.contains("classifier: ") && !parallel.output.contains("rank 1"), "only rank 0 prints the summary: \(parallel.output)")
        #expect(try figures(workspace.path("ranks")) == figures(workspace.path("alone")), "report.json figures identical")
        #expect(try folds(workspace.path("ranks/folds"), count: 3) == folds(workspace.path("alone/folds"), count: 3),
                "out-of-fold probabilities, selected epochs and histories identical")
        let one = try Checkpoint.load(workspace.path("alone/classifier.h5")).model
        let two = try Checkpoint.load(workspace.path("ranks/classifier.h5")).model
        #expect(zip(one.namedWeights, two.namedWeights).allSatisfy { $0.parameter.value == $1.parameter.value }, "final classifiers identical")

        // As if the job died while training fold 2: a resumed job trains only fold 2, on rank 0.
        try FileManager.default.removeItem(atPath: workspace.path("ranks/folds/fold-2.json"))
        let resumed = try runMPI(mpirun(2, common + ["-o", workspace.path("ranks"), "--resume"]), in: workspace)
        #expect(resumed.status == 0, "\(resumed.errors)")
        #expect(resumed.errors.contains("rank 0/2: fold 1/3: finished by the interrupted run"), "\(resumed.errors)")
        #expect(resumed.errors.contains("rank 0/2: fold 2/3: 1") && !resumed.errors.contains("rank 1/2: fold "), "\(resumed.errors)")
        #expect(try figures(workspace.path("ranks")) == figures(workspace.path("alone")), "resumed figures identical")
    }

    @Test("finetune --labels-per-class with 2 draws on 2 ranks gives the one-process figures")
    func fewLabelsOnRanks() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let common = ["finetune", "--recipe", try workspace.write(Self.recipe, as: "recipe.yaml"),
                      "--data", try workspace.write(labeledStore(clips: 24, groups: 6)), "--from-scratch", "--folds", "2",
                      "--labels-per-class", "3", "--draws", "2", "--epochs", "2", "--threads", "1", "--quiet"]
        let alone = try workspace.run(common + ["-o", workspace.path("alone")])
        #expect(alone.status == 0, "\(alone.errors)")
        let parallel = try runMPI(mpirun(2, common + ["-o", workspace.path("ranks")]), in: workspace)
        #expect(parallel.status == 0, "\(parallel.output)\n\(parallel.errors)")
        #expect(try figures(workspace.path("ranks")) == figures(workspace.path("alone")), "report.json figures identical, both draws")
        for draw in 1...2 {
            #expect(try folds(workspace.path("ranks/folds/draw-\(draw)"), count: 2) == folds(workspace.path("alone/folds/draw-\(draw)"), count: 2))
        }
    }

    @Test("a rank that cannot read its store stops the job before training, naming the rank and the file")
    func unreadableStore() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let recipe = try workspace.write(Self.recipe, as: "recipe.yaml")
        let good = try workspace.write(labeledStore(clips: 24, groups: 6))
        let missing = workspace.path("elsewhere/store.h5")
        func arguments(_ data: String) -> [String] {
            ["finetune", "--recipe", recipe, "--data", data, "--from-scratch", "--threads", "1", "-o", workspace.path("run")]
        }
        // One job, two command lines: rank 0 reads the store, rank 1 is given a path it lacks.
        let started = Date()
        let run = try runMPI(launcherOptions + ["-np", "1", crylabExecutable.path] + arguments(good)
                          + [":", "-np", "1", crylabExecutable.path] + arguments(missing), in: workspace)
        let seconds = Date().timeIntervalSince(started)
        #expect(run.exited && run.status != 0)
        #expect(run.errors.contains("rank 1 (") && run.errors.contains(missing), "\(run.errors)")
        #expect(!run.errors.contains("fold 1/"), "no fold may start: \(run.errors)")
        #expect(!FileManager.default.fileExists(atPath: workspace.path("run/report.json")))
        #expect(seconds < 30, "took \(seconds) s")
    }

    static let curvePretrainRecipe = """
        name: tiny-curve
        frontEnd: {preset: recommended, nMels: 16, frames: 24}
        model: {widths: [4, 8]}
        training: {epochs: 1, batchSize: 8}
        """

    /// A JSON value without what depends on time and place (seconds, file paths).
    func withoutTimesAndPaths(_ value: Any) -> Any {
        if let object = value as? [String: Any] {
            return object.filter { !["seconds", "secondsPerEpoch", "files", "encoder"].contains($0.key) }
                .mapValues(withoutTimesAndPaths) as NSDictionary
        }
        if let array = value as? [Any] { return array.map(withoutTimesAndPaths) as NSArray }
        return value
    }

    /// A label curve of 3 folds on a 24-clip store, with `options`, run in one process into
    /// `alone` and on 2 ranks into `ranks`; returns both runs' `--json` output without times and
    /// paths, and the 2-rank run.
    func curveAloneAndOnRanks(_ workspace: Workspace, _ options: [String]) throws -> (one: NSDictionary?, two: NSDictionary?, parallel: CommandRun) {
        let common = ["label-curve", "--pretrain-recipe", try workspace.write(Self.curvePretrainRecipe, as: "pretrain.yaml"),
                      "--finetune-recipe", try workspace.write(Self.recipe, as: "finetune.yaml"),
                      "--data", try workspace.write(labeledStore(clips: 24, groups: 6)), "--folds", "3",
                      "--steps", "4", "--min-epochs", "1", "--threads", "1", "--quiet", "--json"] + options
        let alone = try workspace.run(common + ["-o", workspace.path("alone")])
        #expect(alone.status == 0, "\(alone.errors)")
        let parallel = try runMPI(mpirun(2, common + ["-o", workspace.path("ranks")]), in: workspace)
        #expect(parallel.status == 0, "\(parallel.output)\n\(parallel.errors)")
        let one = withoutTimesAndPaths(try JSONSerialization.jsonObject(with: Data(alone.output.utf8))) as? NSDictionary
        let two = withoutTimesAndPaths(try JSONSerialization.jsonObject(with: Data(parallel.output.utf8))) as? NSDictionary
        return (one, two, parallel)
    }

    @Test("label-curve on 2 ranks gives the one-process curve, each fold pretrained on its rank")
    func labelCurveOnRanks() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let (one, two, parallel) = try curveAloneAndOnRanks(workspace, ["--k", "2,all", "--draws", "2"])
        #expect(one != nil && one == two, "the curve's cells, comparisons, runs and pretraining records identical")
        #expect(parallel.errors.contains("rank 1/2: fold 2/3: test"), "rank 1 runs fold 2: \(parallel.errors)")
        for fold in 1...3 {
            let runs = { (folder: String) in
                self.withoutTimesAndPaths(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: workspace.path("\(folder)/fold-\(fold)/runs.json"))))) as? NSDictionary
            }
            #expect(try runs("ranks") == runs("alone"), "fold \(fold)'s runs.json, written by rank 0")
        }
        #expect(FileManager.default.fileExists(atPath: workspace.path("ranks/fold-2/pretrain/encoder.h5")), "rank 1 pretrained fold 2")
    }

    /// `--transductive` on 2 ranks: rank 0 pretrains the one encoder while rank 1 waits, rank 1
    /// keeps a copy, and the folds are dealt out; the curve is one process's.
    @Test("label-curve --transductive on 2 ranks gives the one-process curve")
    func transductiveCurveOnRanks() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let (one, two, parallel) = try curveAloneAndOnRanks(workspace, ["--k", "2", "--draws", "1", "--transductive"])
        #expect(one != nil && one == two, "the curve's cells, comparisons, runs and the one pretraining record identical")
        #expect(((one?["pretraining"] as? NSArray)?.count ?? 0) == 1, "one encoder pretrained: \(String(describing: one?["pretraining"]))")
        #expect(parallel.errors.contains("rank 1/2: fold 2/3: test"), "rank 1 runs fold 2: \(parallel.errors)")
        #expect(FileManager.default.fileExists(atPath: workspace.path("ranks/pretrain-all/rank-1/encoder.h5")), "rank 1 kept its copy")
    }
}
