import Dispatch

/// Element-wise kernels on raw buffers, written with explicit SIMD so they vectorise
/// (the compiler kept the scalar forms as branches).

/// values[i] = max(values[i], 0), split across the compute threads.
public func reluInPlace(_ values: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
    relu(values, into: values, count: count, threads: threads)
}

/// output[i] = max(input[i], 0), split across the compute threads; output may be input.
public func relu(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
    parallelChunks(count / 16, minimumChunk: 16_384, threads: threads) { range in
        let (from, to) = (UnsafeRawPointer(input + range.lowerBound * 16), UnsafeMutableRawPointer(output + range.lowerBound * 16))
        for block in 0..<range.count {
            let offset = block * 16 * MemoryLayout<Float>.stride
            var x = from.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            x.replace(with: 0, where: x .< 0)
            to.storeBytes(of: x, toByteOffset: offset, as: SIMD16<Float>.self)
        }
    }
    for i in (count - count % 16)..<count { output[i] = input[i] < 0 ? 0 : input[i] }
}

/// gradient[i] = output[i] > 0 ? gradient[i] : 0 — ReLU's backward from its output.
///     gradient, output: [count]
public func reluBackwardInPlace(gradient: UnsafeMutablePointer<Float>, output: UnsafePointer<Float>, count: Int, threads: Int) {
    parallelChunks(count / 16, minimumChunk: 16_384, threads: threads) { range in
        reluBackwardSerial(gradient: gradient + range.lowerBound * 16, output: output + range.lowerBound * 16,
                           count: range.count * 16)
    }
    let done = count - count % 16
    reluBackwardSerial(gradient: gradient + done, output: output + done, count: count - done)
}

private func reluBackwardSerial(gradient: UnsafeMutablePointer<Float>, output: UnsafePointer<Float>, count: Int) {
    let width = 16
    let vectorEnd = count - count % width
    let g = UnsafeMutableRawPointer(gradient), y = UnsafeRawPointer(output)
    var i = 0
    while i < vectorEnd {
        let offset = i * MemoryLayout<Float>.stride
        var d = g.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
        let o = y.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
        d.replace(with: 0, where: o .<= 0)
        g.storeBytes(of: d, toByteOffset: offset, as: SIMD16<Float>.self)
        i += width
    }
    while i < count {
        if output[i] <= 0 { gradient[i] = 0 }
        i += 1
    }
}

/// What ReLU's backward reads of its output, one bit per value: bit i % 16 of mask[i / 16] is 0
/// where output[i] <= 0, else 1 (`reluBackwardInPlace(gradient:mask:)` then gives the gradient
/// of `reluBackwardInPlace(gradient:output:)` bit for bit, from 1/32 of the bytes).
///     output: [count], mask: [(count + 15) / 16]
public func reluMask(of output: UnsafePointer<Float>, count: Int, into mask: UnsafeMutablePointer<UInt16>, threads: Int) {
    parallelChunks(count / 16, minimumChunk: 16_384, threads: threads) { range in
        let from = UnsafeRawPointer(output + range.lowerBound * 16)
        for block in 0..<range.count {
            let o = from.loadUnaligned(fromByteOffset: block * 64, as: SIMD16<Float>.self)
            mask[range.lowerBound + block] = UInt16(truncatingIfNeeded: reluMaskLaneBits.replacing(with: 0, where: o .<= 0).wrappedSum())
        }
    }
    guard count % 16 > 0 else { return }
    var bits: UInt16 = 0
    for i in (count - count % 16)..<count where !(output[i] <= 0) { bits |= 1 << (i % 16) }
    mask[count / 16] = bits
}

/// gradient[i] = 0 where `reluMask` bit i is 0: `reluBackwardInPlace(gradient:output:)` from the mask.
///     gradient: [count], mask: [(count + 15) / 16]
public func reluBackwardInPlace(gradient: UnsafeMutablePointer<Float>, mask: UnsafePointer<UInt16>, count: Int, threads: Int) {
    parallelChunks(count / 16, minimumChunk: 16_384, threads: threads) { range in
        let g = UnsafeMutableRawPointer(gradient + range.lowerBound * 16)
        for block in 0..<range.count {
            var d = g.loadUnaligned(fromByteOffset: block * 64, as: SIMD16<Float>.self)
            d.replace(with: 0, where: reluMaskZeros(mask[range.lowerBound + block]))
            g.storeBytes(of: d, toByteOffset: block * 64, as: SIMD16<Float>.self)
        }
    }
    for i in (count - count % 16)..<count where mask[i / 16] & (1 << (i % 16)) == 0 { gradient[i] = 0 }
}

/// Lane i's bit of a `reluMask` word. Built where used: as a global constant, each read went
/// through its lazy initialiser, which doubled the time of the transposed convolutions' backward.
var reluMaskLaneBits: SIMD16<Int32> {
    @inline(__always) get { SIMD16<Int32>(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768) }
}

/// The lanes of a block of 16 values that a `reluMask` word zeroes.
@inline(__always)
func reluMaskZeros(_ bits: UInt16) -> SIMDMask<SIMD16<Int32>> {
    SIMD16<Int32>(repeating: Int32(bits)) & reluMaskLaneBits .== SIMD16<Int32>()
}

/// Splits 0..<count into one contiguous chunk per thread (of `threads`) and runs them concurrently.
/// For loops whose iterations write disjoint outputs, so the result does not depend on the split.
public func parallelChunks(_ count: Int, minimumChunk: Int = 4096, threads: Int, _ body: (Range<Int>) -> Void) {
    parallelChunks(count, chunks: chunkCount(count, minimumChunk: minimumChunk, threads: threads)) { _, range in body(range) }
}

/// How many chunks `parallelChunks` splits `count` iterations into: one per thread, each
/// at least `minimumChunk` long (one chunk if `count` is smaller).
public func chunkCount(_ count: Int, minimumChunk: Int, threads: Int) -> Int {
    min(threads, max(1, count / minimumChunk))
}

/// Runs `body(chunk, range)` for `chunks` contiguous ranges covering 0..<count, concurrently. The
/// split depends only on `count` and `chunks`, so per-chunk partial results combined in chunk order
/// are reproducible.
public func parallelChunks(_ count: Int, chunks: Int, _ body: (Int, Range<Int>) -> Void) {
    guard chunks > 1 else { return body(0, 0..<count) }
    withoutActuallyEscaping(body) { escapable in
        // The chunks touch disjoint memory; the box only silences the Sendable check.
        let box = UncheckedSendable(value: escapable)
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            box.value(chunk, (count * chunk / chunks)..<(count * (chunk + 1) / chunks))
        }
    }
}

private struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
}

/// ReLU's backward pass rounded straight to bfloat16 (nearest even, NaN kept NaN), in one pass:
/// target[i] = bf16(output[i] > 0 ? gradient[i] : 0). `target` holds 2 * count bytes.
public func reluBackwardToBFloat16(gradient: UnsafePointer<Float>, output: UnsafePointer<Float>, count: Int,
                                   into target: UnsafeMutableRawPointer, threads: Int) {
    let width = 16
    parallelChunks(count / width, minimumChunk: 16_384, threads: threads) { range in
        let g = UnsafeRawPointer(gradient), y = UnsafeRawPointer(output)
        for block in range {
            let offset = block * width * MemoryLayout<Float>.stride
            var d = g.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            let o = y.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            d.replace(with: 0, where: o .<= 0)
            let bits = unsafeBitCast(d, to: SIMD16<UInt32>.self)
            var rounded = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
            rounded.replace(with: 0x7FC0, where: d .!= d)
            target.storeBytes(of: SIMD16<UInt16>(truncatingIfNeeded: rounded), toByteOffset: block * width * 2,
                              as: SIMD16<UInt16>.self)
        }
    }
    for i in (count - count % width)..<count {
        let d = output[i] > 0 ? gradient[i] : 0
        let bits = d.bitPattern
        let rounded = d.isNaN ? 0x7FC0 : UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        target.storeBytes(of: rounded, toByteOffset: i * 2, as: UInt16.self)
    }
}
