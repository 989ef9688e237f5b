import CDNNL
import CryLabTensor
import Foundation

extension DNNLConvolution {
    /// An NHWC copy of nChw16c activations of `shape` ([batch, height, width, channels]), in `buffer`.
    func nhwcCopy(of values: UnsafePointer<Float>, _ shape: [Int],
                          buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> UnsafeMutablePointer<Float> {
        let target = self[keyPath: buffer].reserve(bytes: shape.reduce(1, *) * 4).assumingMemoryBound(to: Float.self)
        convertLayout(values, shape, toBlocked: false, into: target)
        return target
    }

    /// Reorders activations of `shape` from NHWC to nChw16c (`toBlocked`) or back, with every compute thread.
    func convertLayout(_ values: UnsafePointer<Float>, _ shape: [Int], toBlocked: Bool, into target: UnsafeMutablePointer<Float>) {
        precondition(shape.count == 4 && shape[3] % 16 == 0, "nChw16c needs [batch, height, width, channels / 16 * 16], got \(shape)")
        let dims = [shape[0], shape[3], shape[1], shape[2]]
        let (nhwc, blocked16) = (descriptor(dims, dnnl_nhwc), descriptor(dims, dnnl_nChw16c))
        let (from, to) = toBlocked ? (nhwc, blocked16) : (blocked16, nhwc)
        let key = dims + [toBlocked ? 1 : 0]
        let reorder: dnnl_primitive_t
        if let cached = layoutReorders[key] {
            reorder = cached
        } else {
            OpenMP.apply(threads: threads)
            reorder = reorderPrimitive(from: from, to: to, toBlocked ? "NHWC -> nChw16c reorder" : "nChw16c -> NHWC reorder")
            layoutReorders[key] = reorder
        }
        reorderActivations(reorder, from: (from, UnsafeMutableRawPointer(mutating: values)), to: (to, UnsafeMutableRawPointer(target)))
    }

    /// Rounds `count` floats to bfloat16 (nearest even) into `buffer`, with every compute thread.
    func convertToBFloat16(_ values: UnsafePointer<Float>, count: Int,
                           buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> UnsafeMutableRawPointer {
        let target = self[keyPath: buffer].reserve(bytes: count * 2)
        convertToBFloat16(values, count: count, into: target)
        return target
    }

    /// Rounds `count` floats to bfloat16 into `target` (2 * count bytes).
    func convertToBFloat16(_ values: UnsafePointer<Float>, count: Int, into target: UnsafeMutableRawPointer) {
        let source = UnsafeMutableRawPointer(mutating: values)
        let key = [count, threads]
        let conversion: dnnl_primitive_t
        if let cached = conversions[key] {
            conversion = cached
        } else {
            OpenMP.apply(threads: threads)
            var from = descriptor([count], dnnl_x), to = descriptor([count], dnnl_x, type: dnnl_bf16)
            var reorderDescriptor: dnnl_primitive_desc_t?
            Self.check(dnnl_reorder_primitive_desc_create(&reorderDescriptor, &from, engine, &to, engine, nil), "fp32 -> bf16 reorder")
            defer { dnnl_primitive_desc_destroy(reorderDescriptor) }
            var made: dnnl_primitive_t?
            Self.check(dnnl_primitive_create(&made, reorderDescriptor), "creating an fp32 -> bf16 reorder")
            conversion = made!
            conversions[key] = conversion
        }
        // Activations are large (up to tens of MB): unlike weight reorders this uses every thread.
        OpenMP.apply(threads: threads)
        run(conversion, from: (descriptor([count], dnnl_x), source), to: (descriptor([count], dnnl_x, type: dnnl_bf16), target))
    }

    func runReorder(_ reorder: dnnl_primitive_t,
                            from: (dnnl_memory_desc_t, UnsafeMutableRawPointer),
                            to: (dnnl_memory_desc_t, UnsafeMutableRawPointer)) {
        // Weight reorders are small (at most a few MB): one thread avoids an OpenMP barrier, which
        // costs a scheduler time slice (~8 ms measured) whenever another process holds a core.
        OpenMP.apply(threads: 1)
        defer { OpenMP.apply(threads: threads) }
        run(reorder, from: from, to: to)
    }

    /// An activation reorder (tens of MB): with every compute thread, unlike weight reorders.
    func reorderActivations(_ reorder: dnnl_primitive_t,
                                    from: (dnnl_memory_desc_t, UnsafeMutableRawPointer),
                                    to: (dnnl_memory_desc_t, UnsafeMutableRawPointer)) {
        OpenMP.apply(threads: threads)
        timed(\.reorderSeconds, \.reorderCalls) { run(reorder, from: from, to: to) }
    }
}
