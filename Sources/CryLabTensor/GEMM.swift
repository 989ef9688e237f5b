import CBLAS

/// Row-major single-precision matrix products, supplied by a compute backend (CryLabOneDNN runs
/// them through oneDNN, so that every kernel shares one thread pool). Kernels written in Swift
/// (Dense, 1x1 and transposed convolutions) take one as an argument.
public protocol MatrixKernels: Sendable {
    /// c[m, n] = alpha * op(a)[m, k] * op(b)[k, n] + beta * c[m, n]. `beta: 1` accumulates, which
    /// is how weight gradients are summed across calls.
    func multiply(m: Int, n: Int, k: Int,
                  a: UnsafePointer<Float>, transposeA: Bool,
                  b: UnsafePointer<Float>, transposeB: Bool,
                  c: UnsafeMutablePointer<Float>, alpha: Float, beta: Float, method: MatrixMultiplyMethod)

    /// c [m, n] = op(a) [m, k] * op(b) [k, n] (+ c if `accumulate`), a and b rounded to bfloat16,
    /// accumulated in fp32. Returns false, touching nothing, if the backend has no fast bf16
    /// kernel for the shape (the caller then runs it in fp32).
    func bfloat16Multiply(m: Int, n: Int, k: Int, a: MatrixOperand, transposeA: Bool,
                          b: MatrixOperand, transposeB: Bool, c: UnsafeMutablePointer<Float>, accumulate: Bool) -> Bool

    /// A bfloat16 copy of `count` floats, to pass as `MatrixOperand.bfloat16` to several products.
    func bfloat16Copy(_ values: UnsafePointer<Float>, count: Int) -> BFloat16Copy

    /// In `ConvolutionPrecision.fast`: whether the product [m, k] x [k, n] of a transposed
    /// convolution's forward pass runs faster in bf16 than in fp32 on this machine (timed once).
    func fastModePrefersBFloat16Product(m: Int, n: Int, k: Int) -> Bool

    /// For inference in `ConvolutionPrecision.bf16` and `.fast`: a weight matrix b [k, n] rounded
    /// to bfloat16, in the layout the product [m, k] x [k, n] reads fastest, for
    /// `bfloat16Multiply(m:a:weights:c:)` to reuse until the weights change. nil if the backend
    /// has no fast bf16 kernel for the shape (the caller then runs it in fp32).
    func bfloat16Weights(_ b: UnsafePointer<Float>, m: Int, k: Int, n: Int) -> (any PreparedWeights)?

    /// c [m, n] = a [m, k] * weights [k, n], a rounded to bfloat16, accumulated in fp32. Returns
    /// false, touching nothing, if `weights` were not made by this backend for products of m rows.
    func bfloat16Multiply(m: Int, a: UnsafePointer<Float>, weights: any PreparedWeights, c: UnsafeMutablePointer<Float>) -> Bool
}

/// A weight matrix a backend keeps in the type and layout its product reads (`MatrixKernels.bfloat16Weights`);
/// only that backend reads it.
public protocol PreparedWeights: AnyObject, Sendable {
    /// The matrix's shape, [k, n].
    var shape: [Int] { get }
    /// The bytes held.
    var byteCount: Int { get }
}

extension MatrixKernels {
    /// `multiply` with Keras-like defaults: no transposes, c overwritten, sgemm.
    public func matrixMultiply(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, transposeA: Bool = false,
        b: UnsafePointer<Float>, transposeB: Bool = false,
        c: UnsafeMutablePointer<Float>,
        alpha: Float = 1, beta: Float = 0,
        method: MatrixMultiplyMethod = .sgemm
    ) {
        multiply(m: m, n: n, k: k, a: a, transposeA: transposeA, b: b, transposeB: transposeB, c: c,
                 alpha: alpha, beta: beta, method: method)
    }

    /// `bfloat16Multiply` with no transposes and c overwritten unless asked.
    public func bfloat16MatrixMultiply(m: Int, n: Int, k: Int, a: MatrixOperand, transposeA: Bool = false,
                                       b: MatrixOperand, transposeB: Bool = false,
                                       c: UnsafeMutablePointer<Float>, accumulate: Bool = false) -> Bool {
        bfloat16Multiply(m: m, n: n, k: k, a: a, transposeA: transposeA, b: b, transposeB: transposeB, c: c, accumulate: accumulate)
    }
}

/// An operand of a bf16 product: fp32 values (rounded by the call) or a copy already rounded
/// by `MatrixKernels.bfloat16Copy`, for operands read by several products.
public enum MatrixOperand {
    case float(UnsafePointer<Float>)
    case bfloat16(BFloat16Copy)
}

/// Which routine runs an fp32 product. Both give the same values up to summation order, and each
/// is deterministic for a given thread count.
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
///
/// OpenBLAS's thread count is process state of its own: it is set to `threads` only where it differs.
public func openBLASMatrixMultiply(
    threads: Int, m: Int, n: Int, k: Int,
    a: UnsafePointer<Float>, transposeA: Bool = false,
    b: UnsafePointer<Float>, transposeB: Bool = false,
    c: UnsafeMutablePointer<Float>,
    alpha: Float = 1, beta: Float = 0
) {
    if openblas_get_num_threads() != Int32(threads) { openblas_set_num_threads(Int32(threads)) }
    cblas_sgemm(CblasRowMajor,
                transposeA ? CblasTrans : CblasNoTrans,
                transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(transposeA ? m : k), b, Int32(transposeB ? k : n),
                beta, c, Int32(n))
}
