/// Fully connected layer, Keras's `Dense`, applied to the last axis.
///
///     x: [batch, inputFeatures] -> y: [batch, units]
///     kernel: [inputFeatures, units], bias: [units]
///
/// Inference with a large kernel runs oneDNN's inner product on a copy of the kernel reordered
/// into the layout it reads fastest, made on first use and again after the kernel changes
/// (`packedInferenceKernel`); training, and other row counts, run the plain matrix product.
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
    /// For inference with a large kernel: the kernel reordered for oneDNN's inner product (nil
    /// where oneDNN declined), for the kernel version, row count and thread count it was made for.
    /// A training forward drops it.
    private var packed: (version: Int, rows: Int, threads: Int, weights: PackedDenseWeights?)?

    /// oneDNN's name for the inner-product kernel inference runs on the reordered kernel (e.g.
    /// "brgemm:avx512_core"); nil while there is none (small kernels, since a training forward, or
    /// where oneDNN wants no layout of its own).
    public var packedInferenceKernel: String? { packed?.weights?.implementation }

    /// Kernels with at least this many weights are reordered for inference. On the story head's
    /// first layer (65,536 x 1,024, batch 32, 2 threads) the reorder costs 100-140 ms once and holds
    /// another 268 MB, and the layer's forward then takes 24-33 ms instead of 33-40 ms
    /// (`crylab-engine-bench classifier-infer --breakdown`); small kernels gain nothing.
    static let packedInferenceMinimum = 1 << 20

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

    public func forward(_ inputs: [Tensor], training: Bool) -> Tensor {
        let x = inputs[0]
        precondition(x.shape.last == inputFeatures, "\(name): expected input [..., \(inputFeatures)], got \(x.shape)")
        let rows = x.count / inputFeatures
        if training {
            packed = nil
        } else if let weights = packedKernel(rows: rows), let bias {
            var y = Tensor(shape: Array(x.shape.dropLast()) + [units]) { out in
                x.values.withUnsafeBufferPointer { input in
                    bias.value.values.withUnsafeBufferPointer { b in
                        DNNLConvolution.shared.denseForward(weights, input: input.baseAddress!, bias: b.baseAddress!,
                                                            output: out.baseAddress!)
                    }
                }
            }
            activation.apply(&y)
            return y
        }
        var y = Tensor(shape: Array(x.shape.dropLast()) + [units]) { out in
            x.values.withUnsafeBufferPointer { input in
                kernel.value.values.withUnsafeBufferPointer { k in
                    // y [rows, units] = x [rows, in] * kernel [in, units]
                    matrixMultiply(m: rows, n: units, k: inputFeatures, a: input.baseAddress!, b: k.baseAddress!, c: out.baseAddress!,
                                   method: .matmul)
                }
                if let bias {
                    bias.value.values.withUnsafeBufferPointer { b in
                        for r in 0..<rows { for u in 0..<units { out[r * units + u] += b[u] } }
                    }
                }
            }
        }
        activation.apply(&y)
        if training {
            cachedInput = x
            cachedOutput = y
        }
        return y
    }

    /// The reordered kernel for inference on `rows` rows: reused while the kernel and thread count
    /// stay the same, made again when either changes. Other row counts (a last, smaller batch) run
    /// the plain product rather than reorder the kernel once more. nil for small kernels.
    private func packedKernel(rows: Int) -> PackedDenseWeights? {
        guard inputFeatures * units >= Self.packedInferenceMinimum, bias != nil else { return nil }
        if let packed, packed.version == kernel.version, packed.threads == ComputeThreads.count {
            return packed.rows == rows ? packed.weights : nil
        }
        packed = nil  // free the old copy before making the new one
        let weights = kernel.value.values.withUnsafeBufferPointer {
            DNNLConvolution.shared.packDenseWeights($0.baseAddress!, inputFeatures: inputFeatures, units: units, rows: rows)
        }
        packed = (kernel.version, rows, ComputeThreads.count, weights)
        return weights
    }

    public func backward(_ outputGradient: consuming Tensor, needsInputGradients: Bool) -> [Tensor] {
        guard let y = cachedOutput else { preconditionFailure("\(name): backward without a training-mode forward") }
        return backward(preActivationGradient: activation.backward(consume outputGradient, output: y),
                        needsInputGradients: needsInputGradients)
    }

    public func backward(preActivationGradient dz: Tensor, needsInputGradients: Bool) -> [Tensor] {
        guard let x = cachedInput else { preconditionFailure("\(name): backward without a training-mode forward") }
        defer { releaseCache() }
        let rows = x.count / inputFeatures
        dz.values.withUnsafeBufferPointer { d in
            if trainable {
                x.values.withUnsafeBufferPointer { input in
                    // dKernel [in, units] += x^T [in, rows] * dz [rows, units]
                    kernel.accumulateGradient { dk in
                        matrixMultiply(m: inputFeatures, n: units, k: rows, a: input.baseAddress!, transposeA: true,
                                       b: d.baseAddress!, c: dk, beta: 1)
                    }
                }
                bias?.accumulateGradient { db in addColumnSums(d.baseAddress!, rows: rows, columns: units, into: db) }
            }
        }
        guard needsInputGradients else { return [] }
        let dx = Tensor(shape: x.shape) { out in
            dz.values.withUnsafeBufferPointer { d in
                kernel.value.values.withUnsafeBufferPointer { k in
                    // dx [rows, in] = dz [rows, units] * kernel^T [units, in]
                    matrixMultiply(m: rows, n: inputFeatures, k: units, a: d.baseAddress!, b: k.baseAddress!,
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
