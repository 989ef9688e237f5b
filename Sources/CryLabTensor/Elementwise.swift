/// Element-wise kernels on raw buffers, written with explicit SIMD so they vectorise
/// (the compiler kept the scalar forms as branches).

/// gradient[i] = output[i] > 0 ? gradient[i] : 0 — ReLU's backward from its output.
///     gradient, output: [count]
public func reluBackwardInPlace(gradient: UnsafeMutablePointer<Float>, output: UnsafePointer<Float>, count: Int) {
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
