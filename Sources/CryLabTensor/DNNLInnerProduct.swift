import CDNNL

/// A Dense kernel reordered once into the layout oneDNN's inner-product kernel reads fastest for a
/// given number of input rows, for inference that reuses it (the story head's first layer, batch
/// 32, 65,536 -> 1,024 units: see `Dense`). Holds the reordered copy (as many bytes as the kernel)
/// and the primitive; both are freed with it.
public final class PackedDenseWeights: @unchecked Sendable {
    public let rows: Int, inputFeatures: Int, units: Int
    /// The compute thread count the primitive was made for.
    public let threads: Int
    /// oneDNN's name for the kernel, e.g. "brgemm:avx512_core".
    public let implementation: String
    fileprivate let primitiveDescriptor: dnnl_primitive_desc_t
    fileprivate let primitive: dnnl_primitive_t
    fileprivate let weightsDescriptor: dnnl_memory_desc_t
    fileprivate let weights: UnsafeMutableRawPointer
    fileprivate let scratchpadBytes: Int

    fileprivate init(rows: Int, inputFeatures: Int, units: Int, threads: Int, implementation: String,
                     primitiveDescriptor: dnnl_primitive_desc_t, primitive: dnnl_primitive_t,
                     weightsDescriptor: dnnl_memory_desc_t, weights: UnsafeMutableRawPointer, scratchpadBytes: Int) {
        (self.rows, self.inputFeatures, self.units, self.threads) = (rows, inputFeatures, units, threads)
        self.implementation = implementation
        self.primitiveDescriptor = primitiveDescriptor
        self.primitive = primitive
        self.weightsDescriptor = weightsDescriptor
        self.weights = weights
        self.scratchpadBytes = scratchpadBytes
    }

    deinit {
        weights.deallocate()
        dnnl_primitive_destroy(primitive)
        dnnl_primitive_desc_destroy(primitiveDescriptor)
    }
}

/// Dense inference through oneDNN's inner product on a pre-reordered kernel.
///
///     x: [rows, inputFeatures] -> y: [rows, units]
///     kernel: [inputFeatures, units] (Keras's layout), bias: [units]
extension DNNLConvolution {
    /// The kernel reordered for `rows` input rows, or nil if oneDNN has no kernel for the shape that
    /// wants a layout of its own (then the plain matrix product is as good).
    public func packDenseWeights(_ kernel: UnsafePointer<Float>, inputFeatures: Int, units: Int, rows: Int) -> PackedDenseWeights? {
        lock.withLock {
            OpenMP.applyToCurrentThread()
            var (source, weights, bias, destination) = Self.innerProductDescriptors(rows: rows, inputFeatures: inputFeatures,
                                                                                    units: units, weights: dnnl_format_tag_any)
            var d = dnnl_inner_product_desc_t()
            Self.check(dnnl_inner_product_forward_desc_init(&d, dnnl_forward_inference, &source, &weights, &bias, &destination),
                       "describing a \(rows)x\(inputFeatures) -> \(units) inner product")
            var attributes: dnnl_primitive_attr_t?
            Self.check(dnnl_primitive_attr_create(&attributes), "creating attributes")
            defer { dnnl_primitive_attr_destroy(attributes) }
            Self.check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "scratchpad mode")
            var descriptor: dnnl_primitive_desc_t?
            let status = dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, nil)
            if status == dnnl_unimplemented { return nil }
            Self.check(status, "choosing an inner-product kernel for \(rows)x\(inputFeatures) -> \(units)")
            var name: UnsafePointer<CChar>?
            dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name)
            let implementation = name.map { String(cString: $0) } ?? "?"
            let packed = dnnl_primitive_desc_query_md(descriptor, dnnl_query_weights_md, 0)!.pointee
            let keras = Self.innerProductDescriptors(rows: rows, inputFeatures: inputFeatures, units: units, weights: dnnl_io).weights
            // Reference loops, or gemm-based kernels that read the kernel as it is: nothing to gain.
            guard !implementation.hasPrefix("ref"), !implementation.split(separator: ":").contains("gemm"),
                  dnnl_memory_desc_equal([packed], [keras]) == 0 else {
                dnnl_primitive_desc_destroy(descriptor)
                return nil
            }
            var primitive: dnnl_primitive_t?
            Self.check(dnnl_primitive_create(&primitive, descriptor), "creating an inner product")
            let bytes = dnnl_memory_desc_get_size([packed])
            let memory = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            let reorder = reorderPrimitive(from: keras, to: packed, "Dense kernel reorder")
            defer { dnnl_primitive_destroy(reorder) }
            run(reorder, from: (keras, UnsafeMutableRawPointer(mutating: kernel)), to: (packed, memory))
            let scratchpadBytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(descriptor, dnnl_query_scratchpad_md, 0))
            return PackedDenseWeights(rows: rows, inputFeatures: inputFeatures, units: units, threads: ComputeThreads.count,
                                      implementation: implementation, primitiveDescriptor: descriptor!, primitive: primitive!,
                                      weightsDescriptor: packed, weights: memory, scratchpadBytes: scratchpadBytes)
        }
    }

    /// y [rows, units] = x [rows, inputFeatures] * kernel + bias, with the kernel `packed` holds.
    public func denseForward(_ packed: PackedDenseWeights, input: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                             output: UnsafeMutablePointer<Float>) {
        lock.withLock {
            let d = Self.innerProductDescriptors(rows: packed.rows, inputFeatures: packed.inputFeatures, units: packed.units,
                                                 weights: dnnl_io)
            let arguments = [
                argument(Int32(DNNL_ARG_SRC_0), descriptor: d.source, pointer: UnsafeMutableRawPointer(mutating: input)),
                argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: packed.weightsDescriptor, pointer: packed.weights),
                argument(Int32(DNNL_ARG_BIAS), descriptor: d.bias, pointer: UnsafeMutableRawPointer(mutating: bias)),
                argument(Int32(DNNL_ARG_DST_0), descriptor: d.destination, pointer: UnsafeMutableRawPointer(output)),
            ]
            executeProduct(packed.primitive, packed.primitiveDescriptor, scratchpadBytes: packed.scratchpadBytes, arguments,
                           "an inner product")
        }
    }

    // x: [rows, inputFeatures] (nc), kernel: oneDNN's [units, inputFeatures] dims, Keras's [inputFeatures, units] order (io),
    // bias: [units], y: [rows, units] (nc)
    private static func innerProductDescriptors(rows: Int, inputFeatures: Int, units: Int, weights tag: dnnl_format_tag_t)
        -> (source: dnnl_memory_desc_t, weights: dnnl_memory_desc_t, bias: dnnl_memory_desc_t, destination: dnnl_memory_desc_t) {
        func described(_ dims: [Int], _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t {
            var d = dnnl_memory_desc_t()
            check(dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dims.map { Int64($0) }, dnnl_f32, tag), "describing \(dims)")
            return d
        }
        return (described([rows, inputFeatures], dnnl_nc), described([units, inputFeatures], tag),
                described([units], dnnl_x), described([rows, units], dnnl_nc))
    }
}
