/// How a model computes: the convolution precision, the thread count, which kernels the fast
/// mode may choose among, and the backend that runs them. A command makes one from its options
/// and gives it to the models it runs (`Model.context`); kernels written in Swift take its thread
/// count, the backend's kernels its precision. Nothing about it is process-wide: two models with
/// different contexts run side by side in one process.
///
/// The backend is made for the settings (CryLabOneDNN's `ComputeContext.init(precision:threads:...)`
/// builds one), so a context is immutable: for other settings make another.
public struct ComputeContext: Sendable {
    public let precision: ConvolutionPrecision
    /// Threads for every kernel: oneDNN's OpenMP team and the Swift kernels' chunks. Results are
    /// bit-identical for the same seed and thread count; another count can change the order of
    /// floating-point reductions and therefore the last bits.
    public let threads: Int
    /// The kinds of pass `ConvolutionPrecision.fast` times against each other (all by default;
    /// tests pin one kind, with which there is nothing to time).
    public let fastModeCandidates: FastModeCandidates
    /// Whether `ConvolutionPrecision.fast` also times a model's whole step (training) or forward
    /// pass (inference) with its per-pass choices against the same step in each single precision
    /// among its candidates, and runs the fastest (`Model.context` explains it). On by default;
    /// data-parallel ranks turn it off, since ranks timing on their own could choose differently.
    public let choosesWholeSteps: Bool
    public let backend: any ComputeBackend

    /// A context on `backend`, which must have been made for these settings.
    public init(precision: ConvolutionPrecision, threads: Int, fastModeCandidates: FastModeCandidates,
                choosesWholeSteps: Bool = true, backend: any ComputeBackend) {
        precondition(threads >= 1, "thread count must be at least 1, got \(threads)")
        self.precision = precision
        self.threads = threads
        self.fastModeCandidates = fastModeCandidates
        self.choosesWholeSteps = choosesWholeSteps
        self.backend = backend
    }

    /// The matrix products of the backend.
    public var matrices: any MatrixKernels { backend.matrices }
}
