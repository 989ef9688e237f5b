import Foundation

/// Learning-rate schedules, as a function of the 0-based step about to be taken.
public enum LearningRateSchedule: Codable, Sendable, Equatable {
    case constant(Float)
    /// initial * factor^(floor(step / every)).
    case step(initial: Float, factor: Float, every: Int)
    /// Linear warm-up from 0 to `peak` over `warmupSteps`, then half-cosine from `peak` down to
    /// `minimum` at `totalSteps` (and `minimum` after).
    case cosine(peak: Float, warmupSteps: Int, totalSteps: Int, minimum: Float)

    public func rate(atStep step: Int) -> Float {
        switch self {
        case let .constant(rate):
            return rate
        case let .step(initial, factor, every):
            return initial * pow(factor, Float(step / max(every, 1)))
        case let .cosine(peak, warmup, total, minimum):
            if step < warmup { return peak * Float(step + 1) / Float(warmup) }
            let progress = min(Float(step - warmup) / Float(max(total - warmup, 1)), 1)
            return minimum + (peak - minimum) * 0.5 * (1 + cos(Float.pi * progress))
        }
    }
}

/// Scales all gradients so their global L2 norm is at most `maxNorm` (Keras's `global_clipnorm`).
/// Returns the norm before clipping.
@discardableResult
public func clipGradientsByGlobalNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    var squares = 0.0
    for p in parameters {
        guard let g = p.gradient else { continue }
        for v in g.values { squares += Double(v) * Double(v) }
    }
    let norm = Float(squares.squareRoot())
    if norm > maxNorm {
        let scale = maxNorm / norm
        for p in parameters where p.gradient != nil {
            p.accumulateGradient { g in for i in 0..<p.value.count { g[i] *= scale } }
        }
    }
    return norm
}

/// An optimiser updates a model's trainable weights of unfrozen layers from their gradients.
public protocol Optimizer: AnyObject {
    /// Number of steps taken.
    var iterations: Int { get }
    /// Updates `parameters`, element-wise work split across `threads`.
    func step(_ parameters: [Parameter], threads: Int)
}

extension Optimizer {
    public func step(_ model: Model) { step(model.trainableParameters, threads: model.context.threads) }
}

/// Adam with bias correction, exactly as Keras 3 computes it:
///     m ← m + (g - m)(1 - β1);  v ← v + (g² - v)(1 - β2)
///     θ ← θ - lr·sqrt(1 - β2^t)/(1 - β1^t) · m / (sqrt(v) + ε)
/// With `weightDecay > 0` it is AdamW: θ ← θ - θ·weightDecay·lr first (decoupled decay).
public final class Adam: Optimizer {
    public var schedule: LearningRateSchedule
    public let beta1: Float, beta2: Float, epsilon: Float
    public let weightDecay: Float
    public internal(set) var iterations = 0
    var moments: [ObjectIdentifier: (m: [Float], v: [Float])] = [:]

    public init(schedule: LearningRateSchedule = .constant(1e-3), beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-7, weightDecay: Float = 0) {
        self.schedule = schedule
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    public convenience init(learningRate: Float) { self.init(schedule: .constant(learningRate)) }

    /// Keras's AdamW defaults: weight decay 0.004.
    public static func adamW(schedule: LearningRateSchedule = .constant(1e-3), weightDecay: Float = 0.004) -> Adam {
        Adam(schedule: schedule, weightDecay: weightDecay)
    }

    public func step(_ parameters: [Parameter], threads: Int) {
        let lr = schedule.rate(atStep: iterations)
        iterations += 1
        let t = Float(iterations)
        let alpha = lr * (1 - pow(beta2, t)).squareRoot() / (1 - pow(beta1, t))
        for p in parameters {
            guard let gradient = p.gradient else { continue }
            let key = ObjectIdentifier(p)
            var state = moments.removeValue(forKey: key)
                ?? ([Float](repeating: 0, count: p.value.count), [Float](repeating: 0, count: p.value.count))
            let constants = AdamConstants(alpha: alpha, beta1: beta1, beta2: beta2, epsilon: epsilon, decay: weightDecay * lr)
            gradient.values.withUnsafeBufferPointer { g in
                state.m.withUnsafeMutableBufferPointer { m in
                    state.v.withUnsafeMutableBufferPointer { v in
                        p.updateValues { theta in
                            adamUpdate(theta: theta.baseAddress!, gradient: g.baseAddress!, m: m.baseAddress!, v: v.baseAddress!,
                                       count: theta.count, constants, threads: threads)
                        }
                    }
                }
            }
            moments[key] = state
        }
    }
}

private struct AdamConstants {
    let alpha: Float, beta1: Float, beta2: Float, epsilon: Float, decay: Float
}

/// One Adam update of `count` weights in place, element by element as `Adam` documents, 16 lanes
/// at a time (the same operations in the same order as one at a time, so the same bits), the
/// weights split across the compute threads. The update is memory-bound: 7 streams of `count` floats.
///     theta, gradient, m, v: [count]
private func adamUpdate(theta: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
                        v: UnsafeMutablePointer<Float>, count: Int, _ c: AdamConstants, threads: Int) {
    func update<V: SIMD>(_ theta: inout V, _ g: V, _ m: inout V, _ v: inout V) where V.Scalar == Float {
        if c.decay != 0 { theta -= theta * c.decay }
        m += (g - m) * (1 - c.beta1)
        v += (g * g - v) * (1 - c.beta2)
        theta -= c.alpha * m / (v.squareRoot() + c.epsilon)
    }
    typealias Vector = SIMD16<Float>
    let width = Vector.scalarCount
    parallelChunks(count / width, minimumChunk: 8_192, threads: threads) { blocks in
        let (t, g) = (UnsafeMutableRawPointer(theta), UnsafeRawPointer(gradient))
        let (mm, vv) = (UnsafeMutableRawPointer(m), UnsafeMutableRawPointer(v))
        for block in blocks {
            let offset = block * width * MemoryLayout<Float>.stride
            var (thetaLanes, mLanes, vLanes) = (t.loadUnaligned(fromByteOffset: offset, as: Vector.self),
                                                mm.loadUnaligned(fromByteOffset: offset, as: Vector.self),
                                                vv.loadUnaligned(fromByteOffset: offset, as: Vector.self))
            update(&thetaLanes, g.loadUnaligned(fromByteOffset: offset, as: Vector.self), &mLanes, &vLanes)
            t.storeBytes(of: thetaLanes, toByteOffset: offset, as: Vector.self)
            mm.storeBytes(of: mLanes, toByteOffset: offset, as: Vector.self)
            vv.storeBytes(of: vLanes, toByteOffset: offset, as: Vector.self)
        }
    }
    for i in (count - count % width)..<count {
        var (thetaLane, mLane, vLane) = (SIMD2<Float>(theta[i], 0), SIMD2<Float>(m[i], 0), SIMD2<Float>(v[i], 0))
        update(&thetaLane, SIMD2<Float>(gradient[i], 0), &mLane, &vLane)
        (theta[i], m[i], v[i]) = (thetaLane[0], mLane[0], vLane[0])
    }
}

/// SGD with momentum, as Keras: velocity ← momentum·velocity - lr·g; θ ← θ + velocity
/// (plain SGD when momentum is 0).
public final class SGD: Optimizer {
    public var schedule: LearningRateSchedule
    public let momentum: Float
    public internal(set) var iterations = 0
    var velocities: [ObjectIdentifier: [Float]] = [:]

    public init(schedule: LearningRateSchedule = .constant(0.01), momentum: Float = 0) {
        self.schedule = schedule
        self.momentum = momentum
    }

    public func step(_ parameters: [Parameter], threads: Int) {
        let lr = schedule.rate(atStep: iterations)
        iterations += 1
        for p in parameters {
            guard let gradient = p.gradient else { continue }
            let key = ObjectIdentifier(p)
            var velocity = velocities.removeValue(forKey: key) ?? [Float](repeating: 0, count: p.value.count)
            let mu = momentum
            gradient.values.withUnsafeBufferPointer { g in
                velocity.withUnsafeMutableBufferPointer { vel in
                    p.updateValues { theta in
                        for i in 0..<theta.count {
                            vel[i] = mu * vel[i] - lr * g[i]
                            theta[i] += vel[i]
                        }
                    }
                }
            }
            velocities[key] = velocity
        }
    }
}

extension Model {
    /// One optimisation step, in the order a data-parallel run needs: zero the gradients,
    /// `computeGradients` (forward and backward passes; returns the loss), `reduceGradients`,
    /// clipping to a global norm of `clipNorm`, the optimiser's update of the trainable weights.
    /// In the fast mode, the first step first times itself in each candidate precision
    /// (`settleWholeStep`), which leaves the model as it found it.
    @discardableResult
    public func trainingStep(optimizer: any Optimizer, clipNorm: Float?, reduceGradients: ([Parameter]) -> Void = { _ in },
                             computeGradients: () -> Double) -> Double {
        settleWholeStep(training: true) {
            zeroGradients()
            _ = computeGradients()
        }
        zeroGradients()
        let loss = computeGradients()
        let parameters = trainableParameters
        reduceGradients(parameters)
        if let clipNorm { clipGradientsByGlobalNorm(parameters, maxNorm: clipNorm) }
        optimizer.step(parameters, threads: context.threads)
        return loss
    }
}
