import CryLabNN
import CryLabOneDNN
import Testing

/// Dense inference in `ConvolutionPrecision.bf16` and `.fast`: the product reads a bf16 copy of
/// the kernel that the layer keeps between calls, so it must follow every change of the kernel
/// and every batch size, and stay within bf16 rounding of fp32.
@Suite struct DenseInferenceTests {
    /// x: [rows, 300] -> y: [rows, 70]; sums of 300 products, each operand rounded to 8 bits.
    static func layer() -> Dense {
        var generator = SeededGenerator(seed: 11)
        return Dense(inputFeatures: 300, units: 70, activation: .linear, generator: &generator)
    }

    static let fp32 = ComputeContext(precision: .fp32, threads: testThreads)

    /// The plain fp32 product x * kernel (the bias is zero), computed without the layer, so that
    /// nothing here touches the copy the layer keeps.
    static func plainProduct(_ dense: Dense, _ x: Tensor) -> [Float] {
        let rows = x.count / dense.inputFeatures
        var y = [Float](repeating: 0, count: rows * dense.units)
        x.values.withUnsafeBufferPointer { a in
            dense.kernel.value.values.withUnsafeBufferPointer { b in
                y.withUnsafeMutableBufferPointer { c in
                    fp32.matrices.matrixMultiply(m: rows, n: dense.units, k: dense.inputFeatures, a: a.baseAddress!,
                                                 b: b.baseAddress!, c: c.baseAddress!, method: .matmul)
                }
            }
        }
        return y
    }

    static func inference(_ dense: Dense, _ x: Tensor, _ context: ComputeContext) -> [Float] {
        dense.forward([x], training: false, context: context).values
    }

    @Test(arguments: [ConvolutionPrecision.bf16, .fast])
    func keptKernelFollowsTheKernelAndTheBatch(_ precision: ConvolutionPrecision) throws {
        let dense = Self.layer()
        let context = ComputeContext(precision: precision, threads: testThreads)
        let x = randomTensor([5, 300], seed: 1)
        let first = Self.inference(dense, x, context)
        let firstReference = Self.plainProduct(dense, x)
        #expect(relativeError(first, firstReference) < BFloat16ConvolutionTests.bf16Tolerance,
                "\(precision): \(relativeError(first, firstReference)) from fp32")
        if BFloat16ConvolutionTests.cpuHasBF16 {
            #expect(first != firstReference, "\(precision) inference must read the kernel as bf16 on this CPU")
        }
        // The same kernel again, then a batch of another size: the kept copy, or one made anew.
        #expect(Self.inference(dense, x, context) == first)
        let three = randomTensor([3, 300], seed: 2)
        let small = Self.inference(dense, three, context)
        #expect(relativeError(small, Self.plainProduct(dense, three)) < BFloat16ConvolutionTests.bf16Tolerance)

        // A new kernel, with no other forward between: the copy must be made anew.
        try dense.kernel.assign(randomTensor([300, 70], seed: 3, scale: 0.1), layerName: dense.name)
        let second = Self.inference(dense, x, context)
        let secondReference = Self.plainProduct(dense, x)
        #expect(relativeError(second, secondReference) < BFloat16ConvolutionTests.bf16Tolerance,
                "after assign: \(relativeError(second, secondReference)) from fp32")
        #expect(relativeError(second, first) > 0.5, "the result must come from the new kernel")
    }

    @Test func optimiserStepsChangeTheKernelVersion() {
        let dense = Self.layer()
        let before = dense.kernel.version
        dense.kernel.addToGradient(randomTensor([300, 70], seed: 4))
        Adam().step([dense.kernel], threads: testThreads)
        #expect(dense.kernel.version != before, "an in-place update must count as a change of the kernel")
    }

    @Test func fp32InferenceIsThePlainProduct() {
        let dense = Self.layer()
        let x = randomTensor([4, 300], seed: 5)
        #expect(Self.inference(dense, x, Self.fp32) == Self.plainProduct(dense, x), "fp32 inference: the fp32 product, bias zero")
    }
}
