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

    static func inference(_ dense: Dense, _ x: Tensor, _ context: ComputeContext) -> [Float] {
        dense.forward([x], training: false, context: context).values
    }

    @Test(arguments: [ConvolutionPrecision.bf16, .fast])
    func keptKernelFollowsTheKernelAndTheBatch(_ precision: ConvolutionPrecision) throws {
        let dense = Self.layer()
        let fp32 = ComputeContext(precision: .fp32, threads: testThreads)
        let lowered = ComputeContext(precision: precision, threads: testThreads)
        let x = randomTensor([5, 300], seed: 1)
        let first = Self.inference(dense, x, lowered)
        let firstReference = Self.inference(dense, x, fp32)
        #expect(relativeError(first, firstReference) < BFloat16ConvolutionTests.bf16Tolerance,
                "\(precision): \(relativeError(first, firstReference)) from fp32")
        if BFloat16ConvolutionTests.cpuHasBF16 {
            #expect(first != firstReference, "\(precision) inference must read the kernel as bf16 on this CPU")
        }
        // The same kernel again, then a batch of another size: the kept copy, or one made anew.
        #expect(Self.inference(dense, x, lowered) == first)
        let three = randomTensor([3, 300], seed: 2)
        let small = Self.inference(dense, three, lowered), smallReference = Self.inference(dense, three, fp32)
        #expect(relativeError(small, smallReference) < BFloat16ConvolutionTests.bf16Tolerance)

        // A new kernel, with no training forward between: the copy must be made anew.
        try dense.kernel.assign(randomTensor([300, 70], seed: 3, scale: 0.1), layerName: dense.name)
        let second = Self.inference(dense, x, lowered)
        let secondReference = Self.inference(dense, x, fp32)
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

    @Test func fp32InferenceIsUnchanged() {
        let dense = Self.layer()
        let x = randomTensor([4, 300], seed: 5)
        let context = ComputeContext(precision: .fp32, threads: testThreads)
        var expected = [Float](repeating: 0, count: 4 * 70)
        x.values.withUnsafeBufferPointer { a in
            dense.kernel.value.values.withUnsafeBufferPointer { b in
                expected.withUnsafeMutableBufferPointer { c in
                    context.matrices.matrixMultiply(m: 4, n: 70, k: 300, a: a.baseAddress!, b: b.baseAddress!,
                                                    c: c.baseAddress!, method: .matmul)
                }
            }
        }
        #expect(Self.inference(dense, x, context) == expected, "fp32 inference: the fp32 product, bias zero")
    }
}
