/// A bfloat16 copy of an fp32 array in memory of its own, same layout: a convolution's input kept
/// from forward for backward-weights, or a matrix operand read by several products. Made by a
/// compute backend (`MatrixKernels.bfloat16Copy`, `ConvolutionKernels.forward(keepingRoundedInput:)`)
/// and handed back to it; nothing else reads the bytes.
public final class BFloat16Copy: @unchecked Sendable {
    public let count: Int
    /// 2 * count bytes (at least 64), 64-byte aligned.
    public let bytes: UnsafeMutableRawPointer

    public init(count: Int) {
        self.count = count
        bytes = UnsafeMutableRawPointer.allocate(byteCount: max(count * 2, 64), alignment: 64)
    }

    deinit { bytes.deallocate() }
}
