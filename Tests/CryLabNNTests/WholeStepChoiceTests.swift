import CryLabNN
import CryLabOneDNN
import CryLabTensor
import Foundation
import Synchronization
import Testing

/// The fast mode's choice per whole step (`Model.settleWholeStep`): the trial leaves the model as
/// it found it, the model then runs in the precision decided, and a decision kept on this machine
/// is taken without timing.
@Suite struct WholeStepChoiceTests {
    /// oneDNN, except that whole-step decisions go to `forced` (when set) after the trial has run,
    /// and every decision's key and times are recorded.
    final class RecordingBackend: ComputeBackend {
        let base: OneDNNBackend
        let forced: String?
        let decisions = Mutex<[(key: String, times: [Double])]>([])

        init(base: OneDNNBackend, forced: String?) {
            self.base = base
            self.forced = forced
        }

        func convolutionKernels(for g: ConvolutionGeometry) -> any ConvolutionKernels { base.convolutionKernels(for: g) }
        var matrices: any MatrixKernels { base.matrices }
        func sibling(precision: ConvolutionPrecision) -> ComputeContext? { base.sibling(precision: precision) }
        func releaseReusedMemory() { base.releaseReusedMemory() }
        func fastModeDecision(_ key: String, among names: [String], timing: () -> [Double]) -> Int {
            var measured: [Double] = []
            let index = base.fastModeDecision(key, among: names) {
                measured = timing()
                return measured
            }
            decisions.withLock { $0.append((key, measured)) }
            return forced.flatMap { names.firstIndex(of: $0) } ?? index
        }
    }

    func temporaryFile() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("crylab-whole-step-\(UUID().uuidString)")
            .appendingPathComponent("choices.json")
    }

    func fastContext(_ choices: FastModeChoices, forced: String?) -> (ComputeContext, RecordingBackend) {
        let base = OneDNNBackend(runtime: DNNLConvolution(precision: .fast, threads: testThreads, fastModeChoices: choices))
        let backend = RecordingBackend(base: base, forced: forced)
        return (ComputeContext(precision: .fast, threads: testThreads, fastModeCandidates: .all, backend: backend), backend)
    }

    static let configuration = UNetConfiguration(inputShape: [32, 32, 1], widths: [16, 32, 64], batchNormalization: true,
                                                    dropoutRate: 0.2, seed: 5)

    /// Three Adam steps; the losses, then every weight (moving statistics too), in layer order.
    func train(_ model: Model, input: Tensor) -> (losses: [Double], weights: [[Float]]) {
        let optimizer = Adam(schedule: .constant(1e-3))
        let losses = (0..<3).map { _ in
            model.trainingStep(optimizer: optimizer, clipNorm: nil) {
                model.accumulateGradients(input: input) { meanSquaredError(prediction: $0, target: input) }
            }
        }
        return (losses, model.layers.flatMap(\.weights).map(\.value.values))
    }

    /// Each decision forced in turn: the model that timed all four candidates first trains exactly
    /// as a model given that precision from the start (the per-pass choices shared, for `fast`).
    @Test(arguments: ["fast", "bf16", "winograd", "fp32"])
    func afterTheTrialStepsRunInTheDecidedPrecision(_ forced: String) throws {
        let file = temporaryFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let choices = FastModeChoices(file: file)
        let input = randomTensor([4, 32, 32, 1], seed: 41)

        let deciding = try Model.uNet(Self.configuration)
        let (context, backend) = fastContext(choices, forced: forced)
        deciding.context = context
        let decided = train(deciding, input: input)

        let recorded = backend.decisions.withLock { $0 }
        #expect(recorded.count == 1, "one decision for the training step, got \(recorded.map(\.key))")
        let times = recorded.first?.times ?? []
        print("whole-step trial (\(forced) forced), ms: \(Array(zip(["fast", "bf16", "winograd", "fp32"], times.map { $0 / 1e6 })))")
        #expect(times.count == 4 && times.allSatisfy { $0.isFinite && $0 > 0 }, "every candidate timed: \(times)")
        #expect(deciding.wholeStepPrecision(training: true)?.rawValue == forced)

        let plain = try Model.uNet(Self.configuration)
        let precision = ConvolutionPrecision(rawValue: forced)!
        plain.context = precision == .fast
            ? ComputeContext(precision: .fast, threads: testThreads, fastModeChoices: choices, choosesWholeSteps: false)
            : ComputeContext(precision: precision, threads: testThreads)
        let expected = train(plain, input: input)
        #expect(decided.losses == expected.losses, "losses \(decided.losses) against \(expected.losses)")
        let sameWeights = decided.weights == expected.weights
        #expect(sameWeights, "every weight and moving statistic must equal the \(forced) model's, bit for bit")
    }

    /// Inference decides on its own, on its first forward pass, and gives the decided precision's output.
    @Test func inferenceDecidesOnItsFirstForwardPass() throws {
        let file = temporaryFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let input = randomTensor([4, 32, 32, 1], seed: 42)
        let model = try Model.uNet(Self.configuration)
        let (context, backend) = fastContext(FastModeChoices(file: file), forced: "bf16")
        model.context = context
        let output = model.predict(input)
        #expect(model.wholeStepPrecision(training: false) == .bf16)
        #expect(model.wholeStepPrecision(training: true) == nil, "training decides on its own first step")
        #expect(backend.decisions.withLock { $0.map(\.key) }.allSatisfy { $0.hasPrefix("whole inference pass") })

        let plain = try Model.uNet(Self.configuration)
        plain.context = ComputeContext(precision: .bf16, threads: testThreads)
        #expect(output.values == plain.predict(input).values)
    }

    /// A decision kept in the file is taken by a later model with a runtime of its own, without
    /// running the trial; freezing a layer is another step, decided anew.
    @Test func keptDecisionsAreTakenWithoutATrial() throws {
        let file = temporaryFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let input = randomTensor([4, 32, 32, 1], seed: 43)
        let first = try Model.uNet(Self.configuration)
        first.context = fastContext(FastModeChoices(file: file), forced: nil).0
        _ = train(first, input: input)
        let decided = try #require(first.wholeStepPrecision(training: true))
        let stored = try String(contentsOf: file, encoding: .utf8)
        #expect(stored.contains("whole training step"), "the decision is kept in \(file.path)")

        let later = try Model.uNet(Self.configuration)
        let (context, backend) = fastContext(FastModeChoices(file: file), forced: nil)
        later.context = context
        _ = train(later, input: input)
        #expect(later.wholeStepPrecision(training: true) == decided)
        let laterTimes = backend.decisions.withLock { $0.map(\.times) }
        #expect(laterTimes == [[]], "the kept decision is taken without timing: \(laterTimes)")

        try later.freeze(layersNamed: [later.layers[0].name])
        _ = train(later, input: input)
        let frozenTimes = backend.decisions.withLock { $0.map(\.times) }
        #expect(frozenTimes.count == 2 && frozenTimes[1].count == 4, "a frozen layer makes another step: \(frozenTimes)")
    }

    /// A model made of the U-Net's first layers (as the view-invariance encoder is) runs in the
    /// U-Net's decided precision and decides nothing itself.
    @Test func aModelInsideAnothersStepsRunsInItsContext() throws {
        let file = temporaryFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let input = randomTensor([4, 32, 32, 1], seed: 45)
        func encoder(of uNet: Model) -> Model { Model(inputShape: uNet.inputShape, nodes: Array(uNet.nodes.prefix(4))) }

        let uNet = try Model.uNet(Self.configuration)
        let (context, backend) = fastContext(FastModeChoices(file: file), forced: "bf16")
        uNet.context = context
        _ = train(uNet, input: input)
        let shared = encoder(of: uNet)
        shared.context = uNet.context
        shared.stepOwner = uNet
        let features = shared.forward(input, training: true)
        _ = shared.predict(input)
        #expect(backend.decisions.withLock { $0.count } == 1, "the shared encoder decides nothing")
        #expect(shared.stepContext(training: true).precision == .bf16)

        let plain = try Model.uNet(Self.configuration)
        plain.context = ComputeContext(precision: .bf16, threads: testThreads)
        _ = train(plain, input: input)
        let plainEncoder = encoder(of: plain)
        plainEncoder.context = plain.context
        #expect(features.values == plainEncoder.forward(input, training: true).values)
    }

    /// With one kind of pass to choose among, there is nothing to compare: no trial.
    @Test func oneCandidateKindRunsNoTrial() throws {
        let model = try Model.uNet(Self.configuration)
        let base = OneDNNBackend(runtime: DNNLConvolution(precision: .fast, threads: testThreads, fastModeCandidates: .winograd))
        let backend = RecordingBackend(base: base, forced: nil)
        model.context = ComputeContext(precision: .fast, threads: testThreads, fastModeCandidates: .winograd, backend: backend)
        _ = train(model, input: randomTensor([4, 32, 32, 1], seed: 44))
        #expect(backend.decisions.withLock { $0.isEmpty })
        #expect(model.wholeStepPrecision(training: true) == .fast)
    }
}
