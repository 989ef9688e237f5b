import CryLabTensor
import Foundation

/// The backend on oneDNN: its own runtime (`DNNLConvolution`: engine, stream, primitive caches)
/// for one context's settings; 1x1 stride-1 convolutions run as one product.
public struct OneDNNBackend: ComputeBackend {
    public let runtime: DNNLConvolution

    public init(runtime: DNNLConvolution) {
        self.runtime = runtime
    }

    public func convolutionKernels(for g: ConvolutionGeometry) -> any ConvolutionKernels {
        PointwiseConvolution.handles(g) ? PointwiseConvolution(matrices: runtime, threads: runtime.threads) : runtime
    }

    public var matrices: any MatrixKernels { runtime }

    public func sibling(precision: ConvolutionPrecision) -> ComputeContext? {
        ComputeContext(precision: precision, threads: runtime.threads, fastModeCandidates: runtime.fastModeCandidates)
    }

    public func fastModeDecision(_ key: String, among names: [String], timing: () -> [Double]) -> Int {
        runtime.decision(key, among: names, timing: timing)
    }

    public func releaseReusedMemory() { runtime.releaseBuffers() }

    public func restoreReusedMemory() { runtime.restoreBuffers() }
}

extension DNNLConvolution {
    public var handlesBlockedLayout: Bool { true }
    public var roundsOperands: Bool { precision != .fp32 }
}

extension ComputeContext {
    /// A context on oneDNN: `precision` (fp32 by default) with `threads` (every core by default);
    /// in `.fast`, choosing among `fastModeCandidates` and keeping the choices in `fastModeChoices`
    /// if given. Each context made this way has a oneDNN runtime of its own.
    public init(precision: ConvolutionPrecision = .fp32, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                fastModeCandidates: FastModeCandidates = .all, fastModeChoices: FastModeChoices? = nil,
                choosesWholeSteps: Bool = true) {
        let runtime = DNNLConvolution(precision: precision, threads: threads, fastModeCandidates: fastModeCandidates,
                                      fastModeChoices: fastModeChoices)
        self.init(precision: precision, threads: threads, fastModeCandidates: fastModeCandidates,
                  choosesWholeSteps: choosesWholeSteps, backend: OneDNNBackend(runtime: runtime))
    }

    /// fp32 on every core: what models use unless given another context.
    public static let `default` = ComputeContext()

    /// The oneDNN runtime of a context made on oneDNN (benchmarks and tests read its kernel names
    /// and timings); nil for another backend.
    public var oneDNN: DNNLConvolution? { (backend as? OneDNNBackend)?.runtime }
}
