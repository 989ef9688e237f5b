/// Fully connected layer, Keras's `Dense`, applied to the last axis.
///
///     x: [batch, inputFeatures] -> y: [batch, units]
///     kernel: [inputFeatures, units], bias: [units]
public final class Dense: ActivatedLayer {
    public let name: String
    public let kerasClass = "Dense"
    public let inputFeatures: Int
    public let units: Int
    public let activation: Activation
    public let kernel: Parameter
    public let bias: Parameter?
    public var trainable = true

    private var cachedInput: Tensor?
    private var cachedOutput: Tensor?
    /// In bf16 and fast inference: the kernel rounded to bf16 in the layout the backend's product
    /// reads (nil where it has no fast bf16 product), and the kernel's `version` it was made from.
    /// A training-mode forward drops it.
    private var keptKernel: (version: Int, weights: (any PreparedWeights)?)?

    public init(name: String = "dense", inputFeatures: Int, units: Int, activation: Activation = .linear,
                useBias: Bool = true, generator: inout SeededGenerator) {
        self.name = name
        self.inputFeatures = inputFeatures
        self.units = units
        self.activation = activation
        kernel = Parameter(name: "kernel", value: Initializer.glorotUniform(shape: [inputFeatures, units], generator: &generator))
        bias = useBias ? Parameter(name: "bias", value: Tensor(zeros: [units])) : nil
    }

    public var weights: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }

    public func outputShape(inputShapes: [[Int]]) throws -> [Int] {
        guard inputShapes.count == 1, inputShapes[0].last == inputFeatures else {
            throw ShapeError(layer: name, message: "expected one input [..., \(inputFeatures)], got \(inputShapes)")
        }
        return Array(inputShapes[0].dropLast()) + [units]
    }

    public func forward(_ inputs: [Tensor], training: Bool, context: ComputeContext) -> Tensor {
        let x = inputs[0]
        precondition(x.shape.last == inputFeatures, "\(name): expected input [..., \(inputFeatures)], got \(x.shape)")
        let rows = x.count / inputFeatures
        // Inference in bf16 and fast reads the kernel as bf16: the product streams it once per call
        // (268 MB in fp32 for the story head's first layer), so half the bytes is nearly half the time.
        let bfloat16Inference = !training && (context.precision == .bf16 || context.precision == .fast)
        if !bfloat16Inference { keptKernel = nil }
        var y = Tensor(shape: Array(x.shape.dropLast()) + [units]) { out in
            x.values.withUnsafeBufferPointer { input in
                // y [rows, units] = x [rows, in] * kernel [in, units]
                if !bfloat16Inference
                    || !keptBFloat16Product(rows: rows, input: input.baseAddress!, output: out.baseAddress!, context: context) {
                    kernel.value.values.withUnsafeBufferPointer { k in
                        context.matrices.matrixMultiply(m: rows, n: units, k: inputFeatures, a: input.baseAddress!, b: k.baseAddress!,
                                                        c: out.baseAddress!, method: .matmul)
                    }
                }
                if let bias {
                    bias.value.values.withUnsafeBufferPointer { b in
                        for r in 0..<rows { for u in 0..<units { out[r * units + u] += b[u] } }
                    }
                }
            }
        }
        activation.apply(&y, threads: context.threads)
        if training {
            cachedInput = x
            cachedOutput = y
        }
        return y
    }

    /// y [rows, units] = x [rows, in] * kernel, through the kept bf16 kernel, made anew when the
    /// kernel has changed or the backend cannot run it for `rows`; false where it has no fast bf16 product.
    private func keptBFloat16Product(rows: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                     context: ComputeContext) -> Bool {
        let matrices = context.matrices
        if let kept = keptKernel, kept.version == kernel.version, let weights = kept.weights,
           matrices.bfloat16Multiply(m: rows, a: input, weights: weights, c: output) {
            return true
        }
        keptKernel = nil  // its memory goes back before the new copy is made
        let weights = kernel.value.values.withUnsafeBufferPointer {
            matrices.bfloat16Weights($0.baseAddress!, m: rows, k: inputFeatures, n: units)
        }
        keptKernel = (kernel.version, weights)
        guard let weights else { return false }
        return matrices.bfloat16Multiply(m: rows, a: input, weights: weights, c: output)
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let y = cachedOutput else { preconditionFailure("\(name): backward without a training-mode forward") }
        return backward(preActivationGradient: activation.backward(consume outputGradient, output: y, threads: context.threads),
                        needsInputGradients: needsInputGradients, context: context)
    }

    public func backward(preActivationGradient dz: Tensor, needsInputGradients: Bool, context: ComputeContext) -> [Tensor] {
        guard let x = cachedInput else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        let rows = x.count / inputFeatures
        dz.values.withUnsafeBufferPointer { d in
            if trainable {
                x.values.withUnsafeBufferPointer { input in
                    // dKernel [in, units] += x^T [in, rows] * dz [rows, units]
                    kernel.accumulateGradient { dk in
                        context.matrices.matrixMultiply(m: inputFeatures, n: units, k: rows, a: input.baseAddress!, transposeA: true,
                                       b: d.baseAddress!, c: dk, beta: 1)
                    }
                }
                bias?.accumulateGradient { db in addColumnSums(d.baseAddress!, rows: rows, columns: units, into: db, threads: context.threads) }
            }
        }
        guard needsInputGradients else { return [] }
        let dx = Tensor(shape: x.shape) { out in
            dz.values.withUnsafeBufferPointer { d in
                kernel.value.values.withUnsafeBufferPointer { k in
                    // dx [rows, in] = dz [rows, units] * kernel^T [units, in]
                    context.matrices.matrixMultiply(m: rows, n: inputFeatures, k: units, a: d.baseAddress!, b: k.baseAddress!,
                                   transposeB: true, c: out.baseAddress!, method: .matmul)
                }
            }
        }
        return [dx]
    }

    public func releaseCache() {
        cachedInput = nil
        cachedOutput = nil
    }
}
