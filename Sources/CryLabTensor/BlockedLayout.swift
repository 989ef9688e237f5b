/// Layer kernels on `ActivationLayout.blocked16` tensors: pooling by reinterpretation, joining and
/// splitting channels between layouts.
///
///     blocked16 [batch, height, width, channels]:  value (n, y, x, c) at
///         ((n * channels / 16 + c / 16) * height + y) * width + x) * 16 + c % 16

extension Tensor {
    /// A blocked16 [batch, height, width, channels] tensor seen as the NHWC tensor
    /// [batch * channels / 16, height, width, 16] it is in memory: the same values, not copied.
    /// Per-channel spatial kernels (pooling) run on it unchanged.
    public var channelBlocks: Tensor {
        precondition(layout == .blocked16 && shape.count == 4, "channelBlocks needs a blocked16 [batch, height, width, channels] tensor")
        return Tensor(shape: [shape[0] * shape[3] / 16, shape[1], shape[2], 16], values: values)
    }

    /// The inverse of `channelBlocks`: NHWC [batch * channels / 16, height, width, 16] seen as
    /// blocked16 [batch, height, width, channels].
    public func joiningChannelBlocks(channels: Int) -> Tensor {
        precondition(layout == .nhwc && shape.count == 4 && shape[3] == 16 && channels % 16 == 0 && shape[0] % (channels / 16) == 0,
                     "joiningChannelBlocks needs NHWC [batch * \(channels) / 16, height, width, 16], got \(shape)")
        var joined = Tensor(shape: [shape[0] / (channels / 16), shape[1], shape[2], channels], values: values)
        joined.layout = .blocked16
        return joined
    }
}

extension Tensor {
    /// The same activation in another layout: a copy, or the tensor itself if already in it.
    public func converted(to layout: ActivationLayout, threads: Int) -> Tensor {
        layout == self.layout ? self : concatenateChannels([self], layout: layout, threads: threads)
    }
}

/// Concatenates NHWC or blocked16 parts along channels into a tensor of `layout`. Any part or
/// output that is blocked16 needs channel counts divisible by 16.
public func concatenateChannels(_ parts: [Tensor], layout: ActivationLayout, threads: Int) -> Tensor {
    if layout == .nhwc && parts.allSatisfy({ $0.layout == .nhwc }) { return concatenateChannels(parts, threads: threads) }
    let leading = Array(parts[0].shape.dropLast())
    precondition(leading.count == 3 && parts.allSatisfy { Array($0.shape.dropLast()) == leading },
                 "cannot concatenate \(parts.map(\.shape)) along channels: leading dimensions differ")
    let total = parts.reduce(0) { $0 + $1.shape[3] }
    var y = Tensor(shape: leading + [total]) { out in
        var offset = 0
        for part in parts {
            part.values.withUnsafeBufferPointer { source in
                copyChannels(batch: leading[0], pixels: leading[1] * leading[2],
                             from: ChannelRange(pointer: source.baseAddress!, channels: part.shape[3], offset: 0, layout: part.layout),
                             to: ChannelRange(pointer: out.baseAddress!, channels: total, offset: offset, layout: layout),
                             width: part.shape[3], threads: threads)
            }
            offset += part.shape[3]
        }
    }
    y.layout = layout
    return y
}

/// The inverse of `concatenateChannels(_:layout:)`: cuts dy's channels into pieces of the given
/// widths, each in its own layout.
public func splitChannels(_ dy: Tensor, widths: [Int], layouts: [ActivationLayout], threads: Int) -> [Tensor] {
    if dy.layout == .nhwc && layouts.allSatisfy({ $0 == .nhwc }) { return splitChannels(dy, widths: widths, threads: threads) }
    let leading = Array(dy.shape.dropLast())
    precondition(leading.count == 3 && widths.reduce(0, +) == dy.shape[3] && layouts.count == widths.count,
                 "cannot split \(dy.shape) into channel widths \(widths)")
    var offset = 0
    return zip(widths, layouts).map { width, layout in
        defer { offset += width }
        let start = offset
        var part = Tensor(shape: leading + [width]) { out in
            dy.values.withUnsafeBufferPointer { source in
                copyChannels(batch: leading[0], pixels: leading[1] * leading[2],
                             from: ChannelRange(pointer: source.baseAddress!, channels: dy.shape[3], offset: start, layout: dy.layout),
                             to: ChannelRange(pointer: out.baseAddress!, channels: width, offset: 0, layout: layout),
                             width: width, threads: threads)
            }
        }
        part.layout = layout
        return part
    }
}

/// Channels offset..<offset + width of an activation with `channels` channels, in `layout`.
private struct ChannelRange {
    let pointer: UnsafePointer<Float>
    let channels: Int
    let offset: Int
    let layout: ActivationLayout

    /// Where the 16 values of channel block `block` (channels offset + 16 * block ..< + 16) of
    /// pixel `pixel` of image `n` start; they are contiguous in both layouts.
    func start(n: Int, block: Int, pixel: Int, pixels: Int) -> Int {
        switch layout {
        case .nhwc: (n * pixels + pixel) * channels + offset + 16 * block
        case .blocked16: ((n * channels / 16 + offset / 16 + block) * pixels + pixel) * 16
        }
    }
}

/// Copies `width` channels of every pixel from one channel range to another, 16 channels at a
/// time, split across the compute threads by (image, channel block).
private func copyChannels(batch: Int, pixels: Int, from: ChannelRange, to: ChannelRange, width: Int, threads: Int) {
    precondition(width % 16 == 0 && from.offset % 16 == 0 && to.offset % 16 == 0,
                 "blocked16 tensors join and split in whole blocks of 16 channels, got \(width) at \(from.offset) -> \(to.offset)")
    let blocks = width / 16
    let target = UnsafeMutablePointer(mutating: to.pointer)
    parallelChunks(batch * blocks, minimumChunk: 1, threads: threads) { range in
        for unit in range {
            let (n, block) = unit.quotientAndRemainder(dividingBy: blocks)
            if from.layout == .blocked16 && to.layout == .blocked16 {
                // One block of one image is contiguous in both.
                (target + to.start(n: n, block: block, pixel: 0, pixels: pixels))
                    .update(from: from.pointer + from.start(n: n, block: block, pixel: 0, pixels: pixels), count: 16 * pixels)
                continue
            }
            for pixel in 0..<pixels {
                let source = UnsafeRawPointer(from.pointer + from.start(n: n, block: block, pixel: pixel, pixels: pixels))
                UnsafeMutableRawPointer(target + to.start(n: n, block: block, pixel: pixel, pixels: pixels))
                    .storeBytes(of: source.loadUnaligned(as: SIMD16<Float>.self), as: SIMD16<Float>.self)
            }
        }
    }
}
