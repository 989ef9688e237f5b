import CryLabTensor
import Dispatch

/// The fast mode's choice per whole step (see `Model.context`): the step with the per-pass
/// choices against the same step in each single precision the fast mode may use, timed on the
/// model's own first batch, the fastest kept for every later step.
extension Model {
    /// The context a pass in this mode runs in: the trial's while one runs, the single precision a
    /// whole-step decision chose, else `context`.
    public func stepContext(training: Bool) -> ComputeContext {
        if let stepOwner { return stepOwner.stepContext(training: training) }
        if let trial = wholeStep.trial { return trial }
        guard context.precision == .fast, let precision = wholeStep.precisions[stepKey(training: training)],
              precision != .fast else { return context }
        if let made = wholeStep.contexts[precision] { return made }
        let made = context.backend.sibling(precision: precision) ?? context
        wholeStep.contexts[precision] = made
        return made
    }

    /// The precision whole steps in this mode run in, with the layers frozen as they are now:
    /// `.fast` for the per-pass choices, a single precision, or nil while none is decided (or
    /// outside the fast mode).
    public func wholeStepPrecision(training: Bool) -> ConvolutionPrecision? {
        context.precision == .fast ? wholeStep.precisions[stepKey(training: training)] : nil
    }

    /// In the fast mode, when this mode (with the layers frozen as they are now) has no whole-step
    /// decision yet: takes the one kept on this machine, or times `step` (which must run one whole
    /// step from zeroed gradients, or one forward pass, on the same batch each time) with the
    /// per-pass choices and in each single precision among the candidates, and decides. The
    /// candidates take turns: a round of untimed runs (kernels are made, or timed per pass), then
    /// two timed rounds, the better of each candidate's two counting. Taking turns spreads a
    /// change in the machine's load over all of them (timed one after another, a candidate
    /// timed while another process ran lost to one timed after it stopped). Each run gives
    /// its reused buffers back (the oneDNN runtime unmaps them), so the trial needs about the
    /// memory of the largest candidate, not of all of them; before a candidate's next run they
    /// are mapped back untimed (`restoreReusedMemory`), since faulting in hundreds of MiB of pages
    /// would otherwise count against the candidates with the largest buffers. In inference each
    /// timed run follows an untimed one: a Dense layer's kept bf16 kernel belongs to one runtime
    /// and is dropped by an fp32 pass, so every turn of `fast` and `bf16` would otherwise time
    /// making it again (60-110 ms of a 150-ms pass on the story classifier, which made Winograd
    /// win a trial it then lost in steady passes).
    ///
    /// Nothing the trial runs stays: the gradients, the moving statistics and the dropout layers'
    /// random state are as they were before it, so the step that follows gives the same results
    /// as it would without the trial. The step must not talk to other processes (which is why
    /// data-parallel ranks turn whole-step choices off).
    public func settleWholeStep(training: Bool, _ step: () -> Void) {
        guard context.precision == .fast, context.choosesWholeSteps, wholeStep.trial == nil, stepOwner == nil else { return }
        let key = stepKey(training: training)
        guard wholeStep.precisions[key] == nil else { return }
        let candidates = wholeStepCandidates
        guard candidates.count > 2 else {
            wholeStep.precisions[key] = .fast  // one kind of pass: the per-pass choice is that kind throughout
            return
        }
        var timed: [ComputeContext?] = []  // the candidates' contexts, if the trial runs
        let index = context.backend.fastModeDecision(wholeStepKey(training: training), among: candidates.map(\.rawValue)) {
            let saved = StepState(self)
            let hook = afterLayerBackward
            afterLayerBackward = nil
            defer {
                wholeStep.trial = nil
                afterLayerBackward = hook
                saved.restore(self)
            }
            timed = candidates.map { $0 == .fast ? context : context.backend.sibling(precision: $0) }
            var times = [Double](repeating: .infinity, count: candidates.count)
            for round in 0..<3 {
                for (index, candidate) in timed.enumerated() {
                    guard let candidate else { continue }
                    wholeStep.trial = candidate
                    candidate.backend.restoreReusedMemory()  // untimed: mapping the buffers back is not the step's
                    if !training && round > 0 { step() }  // untimed: rebuilds what the other candidates' turns dropped
                    let start = DispatchTime.now().uptimeNanoseconds
                    step()
                    if round > 0 { times[index] = min(times[index], Double(DispatchTime.now().uptimeNanoseconds - start)) }
                    candidate.backend.releaseReusedMemory()
                }
            }
            return times
        }
        wholeStep.precisions[key] = candidates[index]
        // The winner's context, its kernels made in the trial, is the one later steps run in.
        if candidates[index] != .fast, index < timed.count, let winner = timed[index] { wholeStep.contexts[candidates[index]] = winner }
    }

    /// `.fast` and the single precisions among its candidates: bf16, Winograd, fp32 (direct).
    private var wholeStepCandidates: [ConvolutionPrecision] {
        let kinds = context.fastModeCandidates
        return [.fast]
            + (kinds.contains(.bf16) ? [.bf16] : [])
            + (kinds.contains(.winograd) ? [.winograd] : [])
            + (kinds.contains(.direct) || kinds.contains(.directBlocked) ? [.fp32] : [])
    }

    private func stepKey(training: Bool) -> StepKey {
        StepKey(training: training, trainable: layers.map(\.trainable))
    }

    /// The name a decision is kept under on this machine: the mode, the graph (a hash of each
    /// layer's class, weight shapes, inputs and whether it is frozen), the input and the threads.
    private func wholeStepKey(training: Bool) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for node in nodes {
            let description = "\(node.layer.kerasClass) \(node.layer.weights.map(\.shape)) \(node.inputs) \(node.layer.trainable);"
            for byte in description.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        }
        let frozen = layers.filter { !$0.trainable }.count
        return "whole \(training ? "training step" : "inference pass"): \(nodes.count) layers (graph \(String(hash, radix: 16))), "
            + "\(parameterCount) weights, \(frozen) frozen, input \(inputShape), \(context.threads) threads"
    }
}

/// What a step changes besides the trainable weights, which a trial puts back.
private struct StepState {
    let gradients: [Tensor?]
    let statistics: [Tensor?]
    let dropoutGenerators: [SeededGenerator?]
    let averagedBatches: [Int?]

    init(_ model: Model) {
        let weights = model.layers.flatMap(\.weights)
        gradients = weights.map(\.gradient)
        statistics = weights.map { $0.isTrainable ? nil : $0.value }
        dropoutGenerators = model.layers.map { ($0 as? Dropout)?.generator }
        averagedBatches = model.layers.map { ($0 as? BatchNormalization)?.averagedBatches }
    }

    func restore(_ model: Model) {
        for (weight, (gradient, value)) in zip(model.layers.flatMap(\.weights), zip(gradients, statistics)) {
            weight.gradient = gradient
            if let value { try! weight.assign(value) }
        }
        for (layer, (generator, averaged)) in zip(model.layers, zip(dropoutGenerators, averagedBatches)) {
            if let generator { (layer as! Dropout).generator = generator }
            if let normalization = layer as? BatchNormalization { normalization.averagedBatches = averaged }
        }
    }
}
