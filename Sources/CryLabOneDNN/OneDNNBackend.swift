import CryLabTensor

/// The kernels layers use: oneDNN (1x1 stride-1 convolutions as one product) unless a test or a
/// benchmark chooses the reference path. Matrix products run on oneDNN either way.
public enum ConvolutionBackend: String, ComputeBackend {
    case oneDNN, reference

    public func convolutionKernels(for g: ConvolutionGeometry) -> any ConvolutionKernels {
        switch self {
        case .oneDNN: PointwiseConvolution.handles(g) ? PointwiseConvolution(matrices: DNNLConvolution.shared) : DNNLConvolution.shared
        case .reference: ReferenceConvolution()
        }
    }

    public func kernels(for g: ConvolutionGeometry) -> any ConvolutionKernels { convolutionKernels(for: g) }

    public var matrices: any MatrixKernels { DNNLConvolution.shared }
}

extension DNNLConvolution {
    public var handlesBlockedLayout: Bool { true }
    public var roundsOperands: Bool { ConvolutionPrecision.current != .fp32 }
}
