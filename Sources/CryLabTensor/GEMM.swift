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
    alpha: Float = 1, beta: Float = 0
) {
    OpenMP.applyToCurrentThread()
    let status = dnnl_sgemm(transposeA ? CChar(UInt8(ascii: "T")) : CChar(UInt8(ascii: "N")),
                            transposeB ? CChar(UInt8(ascii: "T")) : CChar(UInt8(ascii: "N")),
                            Int64(m), Int64(n), Int64(k), alpha, a, Int64(transposeA ? m : k),
                            b, Int64(transposeB ? k : n), beta, c, Int64(n))
    precondition(status == dnnl_success, "oneDNN sgemm failed for \(m)x\(k) * \(k)x\(n): status \(status.rawValue)")
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
