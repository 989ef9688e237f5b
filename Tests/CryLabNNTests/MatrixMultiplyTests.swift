import CryLabNN
import CryLabOneDNN
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
            openBLASMatrixMultiply(threads: testThreads, m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b,
                                   transposeB: c.transposeB, c: $0, beta: beta)
        }
        let dnnl = oneDNN(.fp32)
        var ranMatmul = false
        let matmul = product {
            ranMatmul = dnnl.floatMatrixMultiply(m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b,
                                                                   transposeB: c.transposeB, c: $0, accumulate: c.accumulate)
        }
        let viaMethod = product {
            dnnl.matrixMultiply(m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b,
                                                  transposeB: c.transposeB, c: $0, beta: beta, method: .matmul)
        }
        let sgemm = product {
            dnnl.matrixMultiply(m: c.m, n: c.n, k: c.k, a: a, transposeA: c.transposeA, b: b,
                                                  transposeB: c.transposeB, c: $0, beta: beta)
        }
        #expect(ranMatmul, "oneDNN has an fp32 matmul kernel for every shape here (not only reference loops)")
        #expect(viaMethod == matmul, "method: .matmul must run the matmul primitive")
        // k up to 257 products of values in [-1, 1): float32 sums agree to about 1e-6 relative.
        #expect(relativeError(matmul, reference) < 1e-5, "matmul: \(relativeError(matmul, reference))")
        #expect(relativeError(sgemm, reference) < 1e-5, "sgemm: \(relativeError(sgemm, reference))")
        #expect(maxAbsDifference(matmul, start) > 0.1, "the product must have changed the output")
    }
}
