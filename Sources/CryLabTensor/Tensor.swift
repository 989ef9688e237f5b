/// CryLabTensor: the numeric kernels under CryLab's layers.
///
/// Layout. Every activation tensor is channels-last, NHWC, exactly as Keras stores it:
///
///     x: [batch, height, width, channels]      (row-major, channels vary fastest)
///     x: [batch, features]                     (after Flatten / for Dense)
///
/// Kernels are stored the way Keras stores them, so checkpoints need no transposition:
///
///     Conv2D kernel:          [kernelHeight, kernelWidth, inputChannels, outputChannels]
///     Conv2DTranspose kernel: [kernelHeight, kernelWidth, outputChannels, inputChannels]
///     Dense kernel:           [inputFeatures, outputFeatures]
///
/// One exception, never visible outside a `Model`: between layers that run oneDNN's blocked
/// kernels (Winograd, and direct ones in the fast mode), a convolution may hand its output on in oneDNN's nChw16c order (`ActivationLayout.blocked16`,
/// described there; `Tensor.layout` says which), through pooling, concatenation, BatchNormalization
/// and ReLU too, to spare reorders. The shape stays [batch, height, width, channels]; model inputs and outputs are NHWC.
///
/// This is the only place the layout is described; each kernel repeats its shapes beside it.
/// This module is the only one that talks to OpenBLAS (`CBLAS`); it names no oneDNN type. Kernels it
/// cannot run itself come through its protocols (`ConvolutionKernels`, `MatrixKernels`,
/// `ComputeBackend`), which CryLabOneDNN implements.

/// A dense float32 tensor: a shape and its row-major values.
public struct Tensor: Sendable, Equatable {
    public private(set) var shape: [Int]
    public var values: [Float]
    /// How `values` are ordered; `.nhwc` everywhere but between two convolutions inside a model.
    public var layout: ActivationLayout = .nhwc

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count,
                     "Tensor shape \(shape) holds \(shape.reduce(1, *)) values, but \(values.count) were given")
        self.shape = shape
        self.values = values
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, repeating: 0)
    }

    public init(shape: [Int], repeating value: Float) {
        self.shape = shape
        self.values = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// A tensor whose every value `fill` writes; skips zero-filling large outputs.
    public init(shape: [Int], fill: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let count = shape.reduce(1, *)
        self.shape = shape
        self.values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            fill(buffer)
            initialized = count
        }
    }

    public var count: Int { values.count }

    /// The same values seen with another shape of equal size.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(layout == .nhwc, "cannot reshape a tensor in oneDNN's blocked layout")
        return Tensor(shape: newShape, values: values)
    }

    /// Adds `other` element-wise (shapes must match), split across the compute threads: the model
    /// sums the gradients of activations read by two layers (the U-Net's skips) this way.
    public mutating func add(_ other: Tensor, threads: Int) {
        precondition(shape == other.shape, "cannot add tensors of shapes \(shape) and \(other.shape)")
        precondition(layout == other.layout, "cannot add a \(layout) tensor and a \(other.layout) one")
        values.withUnsafeMutableBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                let (sum, addend) = (a.baseAddress!, b.baseAddress!)
                parallelChunks(a.count, minimumChunk: 65_536, threads: threads) { range in
                    for i in range { sum[i] += addend[i] }
                }
            }
        }
    }
}

/// The order of a 4-D activation tensor's values. Its `shape` is always [batch, height, width, channels].
public enum ActivationLayout: Sendable, Equatable {
    /// Channels-last, Keras's order: the layout of every tensor a user sees.
    case nhwc
    /// Channels in blocks of 16: [batch, channels / 16, height, width, 16], for channel counts
    /// divisible by 16 (so the value count is the same). A plain memory order, named here without
    /// any backend type: the Swift kernels of this module read it (pooling on `channelBlocks`,
    /// concatenation, BatchNorm rows), and it is the order oneDNN calls nChw16c, that of Winograd
    /// kernels and blocked direct ones. A `Model`'s execution plan hands a convolution's output on
    /// in it, through layers that know the layout, to convolutions whose blocked passes read it in
    /// place, sparing the reorders to NHWC and back (`Model.passesBlockedActivations`). Only those
    /// layers may read it.
    case blocked16
}
