import Dispatch

/// Element-wise kernels on raw buffers, written with explicit SIMD so they vectorise
/// (the compiler kept the scalar forms as branches).

/// gradient[i] = output[i] > 0 ? gradient[i] : 0 — ReLU's backward from its output.
///     gradient, output: [count]
public func reluBackwardInPlace(gradient: UnsafeMutablePointer<Float>, output: UnsafePointer<Float>, count: Int) {
    parallelChunks(count / 16, minimumChunk: 16_384) { range in
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

/// Splits 0..<count into one contiguous chunk per compute thread and runs them concurrently.
/// For loops whose iterations write disjoint outputs, so the result does not depend on the split.
public func parallelChunks(_ count: Int, minimumChunk: Int = 4096, _ body: (Range<Int>) -> Void) {
    let chunks = min(ComputeThreads.count, max(1, count / minimumChunk))
    guard chunks > 1 else { return body(0..<count) }
    withoutActuallyEscaping(body) { escapable in
        // The chunks touch disjoint memory; the box only silences the Sendable check.
        let box = UncheckedSendable(value: escapable)
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            box.value((count * chunk / chunks)..<(count * (chunk + 1) / chunks))
        }
    }
}

private struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
}
