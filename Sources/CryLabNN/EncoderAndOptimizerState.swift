import Foundation

extension Model {
    /// The first `levels` encoder levels of a U-Net, alone (no pooling after the last level): the
    /// part a classifier reuses, with the same layer names, so its weights move between them.
    public static func encoder(_ c: UNetConfiguration, levels: Int) throws -> Model {
        precondition(levels >= 1 && levels <= c.widths.count, "levels must be in 1...\(c.widths.count), got \(levels)")
        var b = GraphBuilder(inputShape: c.inputShape, seed: c.seed)
        let encoder = try b.encoder(c, levels: levels, poolAfterLast: false)
        var configuration = ModelConfiguration(uNet: c)
        configuration.kind = .encoder
        configuration.encoderLevels = levels
        return Model(inputShape: c.inputShape, nodes: b.nodes, encoderBlocks: encoder.blocks, configuration: configuration)
    }

    /// Cuts (or restores) every skip connection: concatenations see zeros in place of the skip.
    public func zeroSkipConnections(_ zeroed: Bool) {
        for case let concatenate as Concatenate in layers { concatenate.zeroesSkipInputs = zeroed }
    }
}

/// An optimiser's state by weight path: what a checkpoint stores so a resumed run continues
/// exactly where it stopped.
public struct OptimizerState: Sendable, Equatable {
    public var kind: String
    public var iterations: Int
    /// "m/<layer>/<weight>", "v/<layer>/<weight>" (Adam) or "velocity/<layer>/<weight>" (SGD).
    public var slots: [String: Tensor]

    public init(kind: String, iterations: Int, slots: [String: Tensor]) {
        self.kind = kind
        self.iterations = iterations
        self.slots = slots
    }
}

public struct OptimizerStateError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

extension Adam {
    public func state(for model: Model) -> OptimizerState {
        var slots: [String: Tensor] = [:]
        for (path, parameter) in model.namedWeights {
            guard let moment = moments[ObjectIdentifier(parameter)] else { continue }
            slots["m/\(path)"] = Tensor(shape: parameter.shape, values: moment.m)
            slots["v/\(path)"] = Tensor(shape: parameter.shape, values: moment.v)
        }
        return OptimizerState(kind: "adam", iterations: iterations, slots: slots)
    }

    public func restore(_ state: OptimizerState, for model: Model) throws {
        guard state.kind == "adam" else { throw OptimizerStateError(message: "the checkpoint holds \(state.kind) state, the recipe uses adam") }
        moments = [:]
        for (path, parameter) in model.namedWeights {
            guard let m = state.slots["m/\(path)"], let v = state.slots["v/\(path)"] else { continue }
            guard m.shape == parameter.shape, v.shape == parameter.shape else {
                throw OptimizerStateError(message: "optimizer state for \(path) has shape \(m.shape), the weight has \(parameter.shape)")
            }
            moments[ObjectIdentifier(parameter)] = (m.values, v.values)
        }
        iterations = state.iterations
    }
}

extension SGD {
    public func state(for model: Model) -> OptimizerState {
        var slots: [String: Tensor] = [:]
        for (path, parameter) in model.namedWeights {
            guard let velocity = velocities[ObjectIdentifier(parameter)] else { continue }
            slots["velocity/\(path)"] = Tensor(shape: parameter.shape, values: velocity)
        }
        return OptimizerState(kind: "sgd", iterations: iterations, slots: slots)
    }

    public func restore(_ state: OptimizerState, for model: Model) throws {
        guard state.kind == "sgd" else { throw OptimizerStateError(message: "the checkpoint holds \(state.kind) state, the recipe uses sgd") }
        velocities = [:]
        for (path, parameter) in model.namedWeights {
            guard let velocity = state.slots["velocity/\(path)"] else { continue }
            velocities[ObjectIdentifier(parameter)] = velocity.values
        }
        iterations = state.iterations
    }
}

/// State capture and restore for any of CryLab's optimisers.
public func optimizerState(_ optimizer: any Optimizer, for model: Model) -> OptimizerState? {
    switch optimizer {
    case let adam as Adam: return adam.state(for: model)
    case let sgd as SGD: return sgd.state(for: model)
    default: return nil
    }
}

public func restoreOptimizer(_ optimizer: any Optimizer, from state: OptimizerState, for model: Model) throws {
    switch optimizer {
    case let adam as Adam: try adam.restore(state, for: model)
    case let sgd as SGD: try sgd.restore(state, for: model)
    default: throw OptimizerStateError(message: "cannot restore state into \(type(of: optimizer))")
    }
}
