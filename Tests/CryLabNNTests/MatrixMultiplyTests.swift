import CryLabNN
import Testing

/// The fp32 products of `matrixMultiply`: oneDNN's sgemm and its matmul primitive, both against
/// OpenBLAS, in every transposition, overwriting and accumulating.
@Suite struct MatrixMultiplyTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool, accumulate: Bool
        var testDescription: String {
            "\(m)x\(k) * \(k)x\(n)\(transposeA ? " A^T" : "")\(transposeB ? " B^T" : "")\(accumulate ? " +=" : "")"
        }
    }

    static let cases: [Case] = [(5, 7, 11), (33, 130, 257), (64, 1, 32)].flatMap { m, n, k in
        [(false, false), (true, false), (false, true), (true, true)].flatMap { ta, tb in
            [false, true].map { Case(m: m, n: n, k: k, transposeA: ta, transposeB: tb, accumulate: $0) }
        }
    }

    @Test(arguments: cases)
    func matmulAndSgemmMatchOpenBLAS(_ c: Case) {
        let a = randomTensor([c.m * c.k], seed: 1).values, b = randomTensor([c.k * c.n], seed: 2).values
        let start = randomTensor([c.m * c.n], seed: 3).values
        func product(_ body: (UnsafeMutablePointer<Float>) -> Void) -> [Float] {
            var out = start
            out.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
            return out
        }
        let beta: Float = c.accumulate ? 1 : 0
        let reference = product {
            openBLASMatrixMultiply(m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b,
                                   transposeB: c.transposeB, c: $0, beta: beta)
        }
        var ranMatmul = false
        let matmul = product {
            ranMatmul = DNNLConvolution.shared.floatMatrixMultiply(m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b,
                                                                   transposeB: c.transposeB, c: $0, accumulate: c.accumulate)
        }
        let viaMethod = product {
            matrixMultiply(m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b, transposeB: c.transposeB,
                           c: $0, beta: beta, method: .matmul)
        }
        let sgemm = product {
            matrixMultiply(m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b, transposeB: c.transposeB,
                           c: $0, beta: beta)
        }
        #expect(ranMatmul, "oneDNN has an fp32 matmul kernel for every shape here (not only reference loops)")
        #expect(viaMethod == matmul, "method: .matmul must run the matmul primitive")
        // k up to 257 products of values in [-1, 1): float32 sums agree to about 1e-6 relative.
        #expect(relativeError(matmul, reference) < 1e-5, "matmul: \(relativeError(matmul, reference))")
        #expect(relativeError(sgemm, reference) < 1e-5, "sgemm: \(relativeError(sgemm, reference))")
        #expect(maxAbsDifference(matmul, start) > 0.1, "the product must have changed the output")
    }
}

/// Dense inference on a large kernel runs oneDNN's inner product on a reordered copy of the
/// kernel, made once and made again whenever the kernel changes.
@Suite struct PackedDenseTests {
    @Test func packedInferenceMatchesThePlainProductAndFollowsTheWeights() throws {
        var generator = SeededGenerator(seed: 5)
        // 2,048 x 512: just at the size where Dense starts reordering its kernel for inference.
        let dense = Dense(inputFeatures: 2048, units: 512, activation: .relu, generator: &generator)
        try dense.bias!.assign(randomTensor([512], seed: 6, scale: 0.1))
        let x = randomTensor([32, 2048], seed: 7), fewer = randomTensor([3, 2048], seed: 8)
        let packed = dense.kernel.value.values.withUnsafeBufferPointer {
            DNNLConvolution.shared.packDenseWeights($0.baseAddress!, inputFeatures: 2048, units: 512, rows: 32)
        }
        print("Dense inference kernel for 32x2048 -> 512: \(packed?.implementation ?? "none (plain product)")")
        #expect(packed != nil, "on AVX-512, oneDNN's inner product wants its own kernel layout here")

        // The training forward runs the plain product (and drops any reordered copy).
        func plain(_ input: Tensor) -> Tensor { dense.forward([input], training: true) }
        let inference = dense.forward([x], training: false)
        #expect(dense.packedInferenceKernel == packed?.implementation, "inference must run the inner product on the reordered kernel")
        #expect(relativeError(inference.values, plain(x).values) < 1e-5, "\(relativeError(inference.values, plain(x).values))")
        #expect(dense.packedInferenceKernel == nil, "a training forward must drop the reordered kernel")
        let repeated = dense.forward([x], training: false) == inference
        #expect(repeated, "the same inputs and weights must give the same bits")
        // Another row count than the copy was made for runs the plain product.
        _ = dense.forward([x], training: false)
        let fewerSame = dense.forward([fewer], training: false) == plain(fewer)
        #expect(fewerSame, "3 rows must run the plain product, as the training forward does")

        // New weights: the next inference must use them, not the old reordered copy.
        _ = dense.forward([x], training: false)
        let before = dense.kernel.version
        try dense.kernel.assign(randomTensor([2048, 512], seed: 9, scale: 0.05))
        #expect(dense.kernel.version != before)
        let changed = dense.forward([x], training: false)
        #expect(relativeError(changed.values, plain(x).values) < 1e-5, "\(relativeError(changed.values, plain(x).values))")
        #expect(relativeError(changed.values, inference.values) > 0.1, "the new weights must change the output")
    }
}
