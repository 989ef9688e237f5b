import CryLabOneDNN
import Dispatch

/// A directed acyclic graph of layers with one input and one output (Keras's functional model).
///
/// Values are numbered: 0 is the model input, `i + 1` is the output of node `i`. Nodes are stored in
/// creation order, which is also Keras's `model.layers` order (the order checkpoint writers iterate).
/// Backward walks the nodes in reverse and *sums* gradients arriving at a value from several
/// consumers, which is what a U-Net skip connection (a tensor used twice) needs.
public final class Model {
    public struct Node {
        public let layer: any Layer
        public let inputs: [Int]
    }

    public let inputShape: [Int]              // without batch, e.g. [128, 128, 1]
    public private(set) var nodes: [Node]
    /// Encoder blocks (levels) by index; each lists its layers, for "freeze the first three blocks".
    public let encoderBlocks: [[any Layer]]
    /// The recipe this model was built from (JSON-encodable), if it came from a builder.
    public let configuration: ModelConfiguration?

    public init(inputShape: [Int], nodes: [Node], encoderBlocks: [[any Layer]] = [],
                configuration: ModelConfiguration? = nil) {
        self.inputShape = inputShape
        self.nodes = nodes
        self.encoderBlocks = encoderBlocks
        self.configuration = configuration
    }

    public var layers: [any Layer] { nodes.map(\.layer) }

    /// What the model computes with: precision, threads, kernels. `ComputeContext.default` (fp32,
    /// every core) unless the owner (a command, a trainer, a test) gives it another; forward,
    /// backward and optimiser steps on this model all run with it.
    ///
    /// In `ConvolutionPrecision.fast` (with `ComputeContext.choosesWholeSteps`), the first training
    /// step (`settleWholeStep`) and the first inference forward pass also time the whole step with
    /// the fast mode's per-pass choices against the same step in each single precision among its
    /// candidates (bf16, Winograd, fp32), and the model then runs in the fastest: per-pass choices
    /// miss what passes cost each other (layout changes, rounding, caches), and one noisy timing
    /// of a single pass can pick a slower kernel. `wholeStepPrecision(training:)` says which won.
    public var context: ComputeContext = .default {
        didSet {
            plans = [:]
            wholeStep = WholeStepState()
        }
    }

    /// A model made of another's layers that runs inside that model's steps (a U-Net's encoder,
    /// for the view-invariance term): its passes run in that model's step context (the
    /// whole-step trial's candidate, or the precision decided) and it decides nothing itself.
    public weak var stepOwner: Model?

    /// The fast mode's whole-step decisions and the contexts they run in.
    struct WholeStepState {
        /// Per mode and frozen layers: the precision steps run in (`.fast`: the per-pass choices).
        var precisions: [StepKey: ConvolutionPrecision] = [:]
        /// The single-precision contexts decided on, made once each.
        var contexts: [ConvolutionPrecision: ComputeContext] = [:]
        /// Set while a trial runs: every pass runs in it.
        var trial: ComputeContext?
    }
    var wholeStep = WholeStepState()

    /// What a whole-step decision is made for: the mode and which layers are frozen (the input's
    /// batch size is left out: a partial last batch runs as the full ones do).
    struct StepKey: Hashable {
        let training: Bool
        let trainable: [Bool]
    }

    /// Lets a Conv2D whose forward pass runs in oneDNN's blocked layout (Winograd, or a direct
    /// kernel the fast mode chose in that layout) hand its output on so
    /// (`ActivationLayout.blocked16`), through pooling, concatenation, BatchNormalization and
    /// ReLU, to convolutions that read it in place, sparing two reorders forward and up to three
    /// backward per convolution. Results are bit-identical either way; off, every tensor stays
    /// NHWC (tests compare the two).
    public var passesBlockedActivations = true

    /// How a forward pass on one input shape runs: the layout each value may be handed on in.
    struct ExecutionPlan: Equatable {
        /// Per value (0 the model input, i + 1 node i's output): `.blocked16` where every reader
        /// takes it blocked, else `.nhwc`. Given to each layer as its `allowedOutputLayout`.
        let allowedLayouts: [ActivationLayout]
    }

    /// What a plan depends on besides the graph: the input shape, the mode, which layers are frozen
    /// (frozen convolutions run no backward-weights pass) and the precision run in.
    private struct PlanKey: Hashable {
        let inputShape: [Int]
        let training: Bool
        let trainable: [Bool]
        let precision: ConvolutionPrecision
    }

    /// A plan per key, and whether it is settled. A plan depends on the kernels the backend has
    /// prepared for each convolution (a pass not prepared yet counts as reading NHWC, so the first
    /// forward of a shape plans no hand-off); it is settled, and no longer computed, once computing
    /// it again gives the same plan: from the third forward of a shape on, as every pass a step
    /// runs is prepared by the first.
    private var plans: [PlanKey: (plan: ExecutionPlan, settled: Bool)] = [:]

    /// When non-nil, forward and backward add each layer's wall time here, keyed by
    /// "<KerasClass> forward" / "<KerasClass> backward", or with `timingsPerLayer` by
    /// "<layer name> forward" / "<layer name> backward" (benchmarks use it for a breakdown).
    public var timings: [String: Double]?
    public var timingsPerLayer = false

    /// Called by `backward` with each layer whose backward pass is over (or was skipped), in
    /// backward order: from then on the layer's weight gradients are final. A data-parallel run
    /// uses it to start summing finished gradients over the processes while the backward pass
    /// goes on.
    public var afterLayerBackward: ((any Layer) -> Void)?

    private func timed<R>(_ layer: any Layer, _ pass: String, _ body: () -> R) -> R {
        guard timings != nil else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let result = body()
        timings!["\(timingsPerLayer ? layer.name : layer.kerasClass) \(pass)", default: 0]
            += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return result
    }

    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }

    /// Weights the optimiser may change: trainable weights of unfrozen layers.
    public var trainableParameters: [Parameter] {
        layers.filter(\.trainable).flatMap { $0.weights.filter(\.isTrainable) }
    }

    public var trainableParameterCount: Int { trainableParameters.reduce(0) { $0 + $1.value.count } }

    public func layer(named name: String) -> (any Layer)? { layers.first { $0.name == name } }

    // MARK: Running

    /// Runs the graph. In training mode every layer keeps what `backward` needs.
    public func forward(_ input: Tensor, training: Bool = false) -> Tensor {
        precondition(Array(input.shape.dropFirst()) == inputShape,
                     "model expects input [batch] + \(inputShape), got \(input.shape)")
        if !training { settleWholeStep(training: false) { _ = forward(input, training: false) } }
        let context = stepContext(training: training)
        var values = [Tensor?](repeating: nil, count: nodes.count + 1)
        var remainingUses = [Int](repeating: 0, count: nodes.count + 1)
        // Per value: whether some reader keeps it for its backward pass.
        var keptByReader = [Bool](repeating: false, count: nodes.count + 1)
        for node in nodes {
            for i in node.inputs {
                remainingUses[i] += 1
                if !(node.layer is any KeepsNoInput) { keptByReader[i] = true }
            }
        }
        values[0] = input
        let plan = executionPlan(inputShape: input.shape, training: training, context: context)
        for (index, node) in nodes.enumerated() {
            let inputs = node.inputs.map { values[$0]! }
            if let layer = node.layer as? any BlockedLayoutLayer {
                values[index + 1] = timed(node.layer, "forward") {
                    layer.forward(inputs, training: training, context: context, allowedOutputLayout: plan.allowedLayouts[index + 1])
                }
            } else {
                precondition(inputs.allSatisfy { $0.layout == .nhwc }, "\(node.layer.name) reads NHWC tensors only")
                values[index + 1] = timed(node.layer, "forward") { node.layer.forward(inputs, training: training, context: context) }
            }
            for i in node.inputs {
                remainingUses[i] -= 1
                guard remainingUses[i] == 0 else { continue }
                values[i] = nil  // free activations nobody else reads
                // Only its producer still holds it, for ReLU's backward: a mask does for that.
                if training && i > 0 && !keptByReader[i], let producer = nodes[i - 1].layer as? any ReLUMaskKeepingLayer {
                    producer.keepOnlyReLUMask(threads: context.threads)
                }
            }
        }
        return values[nodes.count]!
    }

    public func predict(_ input: Tensor) -> Tensor { forward(input, training: false) }

    /// The plan for inputs of `inputShape` in this mode: the cached one once settled, else computed
    /// (all NHWC without `passesBlockedActivations`).
    func executionPlan(inputShape: [Int], training: Bool, context: ComputeContext) -> ExecutionPlan {
        guard passesBlockedActivations else {
            return ExecutionPlan(allowedLayouts: [ActivationLayout](repeating: .nhwc, count: nodes.count + 1))
        }
        let key = PlanKey(inputShape: inputShape, training: training, trainable: layers.map(\.trainable), precision: context.precision)
        if let known = plans[key], known.settled { return known.plan }
        let plan = ExecutionPlan(allowedLayouts: planBlockedHandOffs(inputShape: inputShape, training: training, context: context)
            .map { $0 ? .blocked16 : .nhwc })
        if let previous = plans[key]?.plan, previous != plan {
            // The backend's reused buffers grew for the previous plan's reorders (on a first step,
            // all NHWC, those of the largest activations into blocked passes): let them grow again
            // to this plan's needs only.
            context.backend.releaseReusedMemory()
        }
        plans[key] = (plan, plans[key]?.plan == plan)
        return plan
    }

    /// Which values may be written in `ActivationLayout.blocked16`: those whose every reader takes
    /// them blocked (a pooling layer only if its own output may be blocked too). Never the model's
    /// output. Decided from the last node back, since readers come after what they read.
    private func planBlockedHandOffs(inputShape: [Int], training: Bool, context: ComputeContext) -> [Bool] {
        let none = [Bool](repeating: false, count: nodes.count + 1)
        var shapes = [inputShape]
        for node in nodes {
            guard let shape = try? node.layer.outputShape(inputShapes: node.inputs.map { shapes[$0] }) else { return none }
            shapes.append(shape)
        }
        var readers = [[Int]](repeating: [], count: nodes.count + 1)
        for (index, node) in nodes.enumerated() { for i in node.inputs { readers[i].append(index) } }
        var allowed = [Bool](repeating: false, count: nodes.count + 1)
        for index in nodes.indices.reversed() where index < nodes.count - 1 && nodes[index].layer is any BlockedLayoutLayer {
            allowed[index + 1] = !readers[index + 1].isEmpty && readers[index + 1].allSatisfy { reader in
                guard let layer = nodes[reader].layer as? any BlockedLayoutLayer else { return false }
                return layer.takesBlockedInput(nodes[reader].inputs.map { shapes[$0] }, outputMayBeBlocked: allowed[reader + 1], training: training,
                                               context: context)
            }
        }
        return allowed
    }

    /// Which values need a gradient: those downstream of any layer that computes weight gradients.
    private func valuesNeedingGradients() -> [Bool] {
        var needs = [Bool](repeating: false, count: nodes.count + 1)
        for (index, node) in nodes.enumerated() {
            needs[index + 1] = node.layer.computesWeightGradients || node.inputs.contains { needs[$0] }
        }
        return needs
    }

    /// Back-propagates from the output and accumulates weight gradients. Requires a training-mode forward.
    public func backward(_ lossGradient: LossGradient) {
        let context = stepContext(training: true)  // the training forward's
        let needs = valuesNeedingGradients()
        var gradients = [Tensor?](repeating: nil, count: nodes.count + 1)
        for (index, node) in nodes.enumerated().reversed() {
            defer { afterLayerBackward?(node.layer) }
            guard let dy = gradients[index + 1] ?? (index == nodes.count - 1 ? lossGradient.tensor : nil),
                  needs[index + 1] else {
                node.layer.releaseCache()
                continue
            }
            gradients[index + 1] = nil
            let needInputs = node.inputs.contains { needs[$0] }
            let dx: [Tensor]
            if index == nodes.count - 1, case .logits = lossGradient {
                guard let activated = node.layer as? any ActivatedLayer, activated.activation == .softmax else {
                    preconditionFailure("a logits gradient needs a final layer with softmax activation; \(node.layer.name) has none")
                }
                dx = activated.backward(preActivationGradient: dy, needsInputGradients: needInputs, context: context)
            } else if node.inputs.count == 1, needs[node.inputs[0]], gradients[node.inputs[0]] != nil,
                      let layer = node.layer as? any GradientAccumulatingLayer {
                // The input already has a gradient from another reader (a U-Net skip): add into it.
                var sum = gradients[node.inputs[0]].take()!
                timed(node.layer, "backward") { layer.backward(dy, accumulatingInto: &sum, context: context) }
                gradients[node.inputs[0]] = sum
                continue
            } else {
                if timings == nil {
                    dx = node.layer.backward(consume dy, needsInputGradients: needInputs, context: context)  // hands over the buffer
                } else {
                    // Hand the buffer over here too: a tensor the closure merely captured would be
                    // shared, and the layer's in-place work (ReLU backward) would copy it first.
                    var handedOver: Tensor? = consume dy
                    dx = timed(node.layer, "backward") {
                        let gradient = handedOver.take()!
                        return node.layer.backward(gradient, needsInputGradients: needInputs, context: context)
                    }
                }
            }
            guard needInputs else { continue }
            for (input, gradient) in zip(node.inputs, dx) where needs[input] {
                if gradients[input] == nil { gradients[input] = gradient } else { gradients[input]!.add(gradient, threads: context.threads) }
            }
        }
    }

    /// A training-mode forward pass on `input`, `loss` of its output, and the backward pass: adds
    /// d(loss)/d(weights) to the gradients. Returns the loss.
    @discardableResult
    public func accumulateGradients(input: Tensor, loss: (Tensor) -> LossResult) -> Double {
        let result = loss(forward(input, training: true))
        backward(result.gradient)
        return result.value
    }

    public func zeroGradients() {
        for layer in layers { for weight in layer.weights { weight.zeroGradient() } }
    }

    // MARK: Freezing (separate from the training-mode flag passed to forward)

    public func freeze(layersNamed names: [String]) throws(WeightError) {
        for name in names {
            guard let layer = layer(named: name) else { throw .unknownLayer(name: name, available: layers.map(\.name)) }
            layer.trainable = false
            for weight in layer.weights { weight.releaseGradient() }
        }
    }

    public func unfreeze(layersNamed names: [String]) throws(WeightError) {
        for name in names {
            guard let layer = layer(named: name) else { throw .unknownLayer(name: name, available: layers.map(\.name)) }
            layer.trainable = true
        }
    }

    /// Freezes encoder blocks by index, e.g. `freeze(encoderBlocks: 0..<3)` for the first three.
    public func freeze(encoderBlocks range: Range<Int>) {
        for block in range {
            precondition(encoderBlocks.indices.contains(block),
                         "encoder block \(block) does not exist; this model has \(encoderBlocks.count)")
            for layer in encoderBlocks[block] {
                layer.trainable = false
                for weight in layer.weights { weight.releaseGradient() }
            }
        }
    }

    public func unfreezeAll() {
        for layer in layers { layer.trainable = true }
    }

    // MARK: Named weights (Keras order and names)

    /// Every weight, in Keras order, as "layer/weight" paths.
    public var namedWeights: [(path: String, parameter: Parameter)] {
        layers.flatMap { layer in layer.weights.map { ("\(layer.name)/\($0.name)", $0) } }
    }

    /// Sets one weight by layer and weight name; errors name the path and both shapes.
    public func setWeight(layer layerName: String, weight weightName: String, to value: Tensor) throws(WeightError) {
        guard let layer = layer(named: layerName) else {
            throw .unknownLayer(name: layerName, available: layers.map(\.name))
        }
        guard let parameter = layer.weight(named: weightName) else {
            throw .unknownWeight(path: "\(layerName)/\(weightName)", available: layer.weights.map(\.name))
        }
        try parameter.assign(value, layerName: layerName)
    }

    /// Sets weights from "layer/weight" paths. With `requireAll`, every model weight must be present.
    public func setWeights(_ values: [String: Tensor], requireAll: Bool = true) throws(WeightError) {
        for (path, value) in values {
            let parts = path.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw .unknownWeight(path: path, available: namedWeights.map(\.path)) }
            try setWeight(layer: parts[0], weight: parts[1], to: value)
        }
        if requireAll {
            for (path, _) in namedWeights where values[path] == nil { throw .missingWeight(path: path) }
        }
    }

    /// Copies the weights of every layer of `other` whose name also exists here (e.g. a pretrained encoder).
    @discardableResult
    public func copyWeights(from other: Model, layerNames: [String]? = nil) throws(WeightError) -> [String] {
        var copied: [String] = []
        for source in other.layers where layerNames?.contains(source.name) ?? true {
            guard let target = layer(named: source.name), !source.weights.isEmpty else { continue }
            for weight in source.weights {
                guard let destination = target.weight(named: weight.name) else {
                    throw .unknownWeight(path: "\(target.name)/\(weight.name)", available: target.weights.map(\.name))
                }
                try destination.assign(weight.value, layerName: target.name)
            }
            copied.append(source.name)
        }
        return copied
    }

    /// Output shape for a given batch size, checking every layer's input shapes.
    public func outputShape(batch: Int) throws -> [Int] {
        var shapes: [[Int]] = [[batch] + inputShape]
        for node in nodes { shapes.append(try node.layer.outputShape(inputShapes: node.inputs.map { shapes[$0] })) }
        return shapes.last!
    }
}

/// Builds a graph while tracking shapes and Keras names.
public struct GraphBuilder {
    public private(set) var nodes: [Model.Node] = []
    public private(set) var shapes: [[Int]]
    public var namer: KerasNamer
    public var generator: SeededGenerator

    public init(inputShape: [Int], seed: UInt64, namer: KerasNamer = KerasNamer()) {
        shapes = [[1] + inputShape]
        self.namer = namer
        generator = SeededGenerator(seed: seed)
    }

    /// Adds a layer reading the given values; returns the index of its output value.
    @discardableResult
    public mutating func add(_ layer: any Layer, inputs: [Int]) throws -> Int {
        let shape = try layer.outputShape(inputShapes: inputs.map { shapes[$0] })
        nodes.append(Model.Node(layer: layer, inputs: inputs))
        shapes.append(shape)
        return shapes.count - 1
    }

    public func channels(of value: Int) -> Int { shapes[value].last! }
    public var last: Int { shapes.count - 1 }
}

/// What a loss hands to `Model.backward`: d(loss)/d(output), or, for a softmax output fused with
/// cross-entropy, d(loss)/d(logits) (the final layer then skips its softmax derivative).
public enum LossGradient {
    case output(Tensor)
    case logits(Tensor)

    public var tensor: Tensor {
        switch self {
        case let .output(t), let .logits(t): t
        }
    }
}
