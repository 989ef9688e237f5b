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
/// This is the only place the layout is described; each kernel repeats its shapes beside it.
/// This module is the only one that talks to OpenBLAS (`CBLAS`) and oneDNN (`CDNNL`).

/// A dense float32 tensor: a shape and its row-major values.
public struct Tensor: Sendable, Equatable {
    public private(set) var shape: [Int]
    public var values: [Float]

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
        Tensor(shape: newShape, values: values)
    }

    /// Adds `other` element-wise (shapes must match).
    public mutating func add(_ other: Tensor) {
        precondition(shape == other.shape, "cannot add tensors of shapes \(shape) and \(other.shape)")
        values.withUnsafeMutableBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                for i in 0..<a.count { a[i] += b[i] }
            }
        }
    }
}
