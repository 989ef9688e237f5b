import CBLAS
import CDNNL

/// Row-major single-precision matrix multiply:
/// c[m, n] = alpha * op(a)[m, k] * op(b)[k, n] + beta * c[m, n].
/// `beta: 1` accumulates, which is how weight gradients are summed across calls.
///
/// The training path runs it through oneDNN's sgemm so that every kernel shares one thread pool
/// (oneDNN's OpenMP team). Calling OpenBLAS between oneDNN convolutions left OpenBLAS's workers
/// spinning (sched_yield) on both cores while the next convolution ran, slowing it down.
public func matrixMultiply(
    m: Int, n: Int, k: Int,
    a: UnsafePointer<Float>, transposeA: Bool = false,
    b: UnsafePointer<Float>, transposeB: Bool = false,
    c: UnsafeMutablePointer<Float>,
    alpha: Float = 1, beta: Float = 0,
    method: MatrixMultiplyMethod = .sgemm
) {
    if method == .matmul && alpha == 1 && (beta == 0 || beta == 1)
        && DNNLConvolution.shared.floatMatrixMultiply(m: m, n: n, k: k, a: a, transposeA: transposeA, b: b,
                                                      transposeB: transposeB, c: c, accumulate: beta == 1) {
        return
    }
    OpenMP.applyToCurrentThread()
    let status = dnnl_sgemm(transposeA ? CChar(UInt8(ascii: "T")) : CChar(UInt8(ascii: "N")),
                            transposeB ? CChar(UInt8(ascii: "T")) : CChar(UInt8(ascii: "N")),
                            Int64(m), Int64(n), Int64(k), alpha, a, Int64(transposeA ? m : k),
                            b, Int64(transposeB ? k : n), beta, c, Int64(n))
    precondition(status == dnnl_success, "oneDNN sgemm failed for \(m)x\(k) * \(k)x\(n): status \(status.rawValue)")
}

/// Which oneDNN routine runs an fp32 `matrixMultiply`. Both give the same values up to summation
/// order, and each is deterministic for a given thread count.
public enum MatrixMultiplyMethod: Sendable {
    /// `dnnl_sgemm`: the default.
    case sgemm
    /// The matmul primitive (brgemm kernels), cached per shape. Faster where few rows meet a large
    /// right-hand matrix, as in Dense layers: on the story head's first layer (batch 32, 65,536 ->
    /// 1,024 units, 2 threads) 34 ms against sgemm's 37 forward, and 32 against 57 for the input
    /// gradient; slower for its weight gradient (40 against 24), which stays on sgemm. Falls back
    /// to sgemm where oneDNN has only reference loops.
    case matmul
}

/// The same product through OpenBLAS; used by the reference convolution, so that tests compare
/// oneDNN's convolution against an independent implementation.
public func openBLASMatrixMultiply(
    m: Int, n: Int, k: Int,
    a: UnsafePointer<Float>, transposeA: Bool = false,
    b: UnsafePointer<Float>, transposeB: Bool = false,
    c: UnsafeMutablePointer<Float>,
    alpha: Float = 1, beta: Float = 0
) {
    cblas_sgemm(CblasRowMajor,
                transposeA ? CblasTrans : CblasNoTrans,
                transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(transposeA ? m : k), b, Int32(transposeB ? k : n),
                beta, c, Int32(n))
}
