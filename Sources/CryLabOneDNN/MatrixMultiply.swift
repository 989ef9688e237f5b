import CDNNL
import CryLabTensor

struct MatmulKey: Hashable {
    let m: Int, n: Int, k: Int
    let transposeA: Bool, transposeB: Bool
    /// C += A * B (a sum post-op) instead of C = A * B.
    let accumulate: Bool
    let threads: Int
    /// bf16 operands A and B; fp32 otherwise. C is fp32 either way.
    let bfloat16: Bool
}

final class MatmulPrimitive {
    let primitiveDescriptor: dnnl_primitive_desc_t
    let primitive: dnnl_primitive_t
    let scratchpadBytes: Int

    init(primitiveDescriptor: dnnl_primitive_desc_t, primitive: dnnl_primitive_t, scratchpadBytes: Int) {
        self.primitiveDescriptor = primitiveDescriptor
        self.primitive = primitive
        self.scratchpadBytes = scratchpadBytes
    }
}

/// Matrix products through oneDNN's matmul primitive (brgemm kernels). In bf16 (operands rounded,
/// fp32 accumulation) for the transposed convolution in `ConvolutionPrecision.bf16`; in fp32 for
/// Dense layers, where it streams a large weight matrix faster than sgemm (see `MatrixMultiplyMethod`).
extension DNNLConvolution {
    /// fp32 products: `dnnl_sgemm`, or the matmul primitive where `method` asks for it and it has
    /// a kernel (alpha 1, beta 0 or 1). Running them through oneDNN keeps every kernel on one thread
    /// pool (oneDNN's OpenMP team): calling OpenBLAS between oneDNN convolutions left OpenBLAS's
    /// workers spinning (sched_yield) on both cores while the next convolution ran, slowing it down.
    public func multiply(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, transposeA: Bool,
                         b: UnsafePointer<Float>, transposeB: Bool, c: UnsafeMutablePointer<Float>,
                         alpha: Float, beta: Float, method: MatrixMultiplyMethod) {
        if method == .matmul && alpha == 1 && (beta == 0 || beta == 1)
            && floatMatrixMultiply(m: m, n: n, k: k, a: a, transposeA: transposeA, b: b,
                                   transposeB: transposeB, c: c, accumulate: beta == 1) {
            return
        }
        OpenMP.apply(threads: threads)
        let status = dnnl_sgemm(transposeA ? CChar(UInt8(ascii: "T")) : CChar(UInt8(ascii: "N")),
                                transposeB ? CChar(UInt8(ascii: "T")) : CChar(UInt8(ascii: "N")),
                                Int64(m), Int64(n), Int64(k), alpha, a, Int64(transposeA ? m : k),
                                b, Int64(transposeB ? k : n), beta, c, Int64(n))
        precondition(status == dnnl_success, "oneDNN sgemm failed for \(m)x\(k) * \(k)x\(n): status \(status.rawValue)")
    }

    /// c [m, n] = op(a) [m, k] * op(b) [k, n] (+ c if `accumulate`), a and b rounded to bfloat16.
    /// Row-major like `multiply`: a is [m, k], or [k, m] if `transposeA`; b is [k, n], or [n, k].
    /// Returns false, touching nothing, if oneDNN has no fast bf16 kernel for the shape (the caller
    /// then runs it in fp32).
    public func bfloat16Multiply(m: Int, n: Int, k: Int, a: MatrixOperand, transposeA: Bool,
                                 b: MatrixOperand, transposeB: Bool, c: UnsafeMutablePointer<Float>, accumulate: Bool) -> Bool {
        lock.withLock {
            let key = MatmulKey(m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB,
                                accumulate: accumulate, threads: threads, bfloat16: true)
            guard let p = cachedMatmul(key) else { return false }
            func bf16(_ operand: MatrixOperand, count: Int,
                      _ buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> UnsafeMutableRawPointer {
                switch operand {
                case let .float(values): return convertToBFloat16(values, count: count, buffer: buffer)
                case let .bfloat16(copy):
                    precondition(copy.count == count, "bf16 operand holds \(copy.count) values, the product needs \(count)")
                    return copy.bytes
                }
            }
            runMatmul(p, key, a: bf16(a, count: m * k, \.leftBF16Buffer), b: bf16(b, count: k * n, \.rightBF16Buffer), c: c)
            return true
        }
    }

    /// The same product on fp32 operands, read in place. Returns false, touching nothing, if oneDNN
    /// has only its reference loops for the shape.
    public func floatMatrixMultiply(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, transposeA: Bool = false,
                                    b: UnsafePointer<Float>, transposeB: Bool = false,
                                    c: UnsafeMutablePointer<Float>, accumulate: Bool = false) -> Bool {
        lock.withLock {
            let key = MatmulKey(m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB,
                                accumulate: accumulate, threads: threads, bfloat16: false)
            guard let p = cachedMatmul(key) else { return false }
            runMatmul(p, key, a: UnsafeMutableRawPointer(mutating: a), b: UnsafeMutableRawPointer(mutating: b), c: c)
            return true
        }
    }

    /// Called with the lock held.
    private func cachedMatmul(_ key: MatmulKey) -> MatmulPrimitive? {
        if let hit = matmuls[key] { return hit }
        let made = makeMatmul(key)
        matmuls[key] = made
        return made
    }

    /// Called with the lock held; a and b in the key's operand type.
    private func runMatmul(_ p: MatmulPrimitive, _ key: MatmulKey, a: UnsafeMutableRawPointer, b: UnsafeMutableRawPointer,
                           c: UnsafeMutablePointer<Float>) {
        runMatmul(p, Self.matmulDescriptors(key), a: a, b: b, c: c, what: key.bfloat16 ? "a bf16 matmul" : "an fp32 matmul")
    }

    /// Called with the lock held; a, b and c as `descriptors` describe them.
    private func runMatmul(_ p: MatmulPrimitive,
                           _ descriptors: (source: dnnl_memory_desc_t, weights: dnnl_memory_desc_t, destination: dnnl_memory_desc_t),
                           a: UnsafeMutableRawPointer, b: UnsafeMutableRawPointer, c: UnsafeMutablePointer<Float>, what: String) {
        var arguments = [
            argument(Int32(DNNL_ARG_SRC_0), descriptor: descriptors.source, pointer: a),
            argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: descriptors.weights, pointer: b),
            argument(Int32(DNNL_ARG_DST_0), descriptor: descriptors.destination, pointer: UnsafeMutableRawPointer(c)),
        ]
        if p.scratchpadBytes > 0 {
            let scratch = dnnl_primitive_desc_query_md(p.primitiveDescriptor, dnnl_query_scratchpad_md, 0)!.pointee
            arguments.append(argument(Int32(DNNL_ARG_SCRATCHPAD), descriptor: scratch,
                                      pointer: scratchpad.reserve(bytes: p.scratchpadBytes)))
        }
        defer { for a in arguments { dnnl_memory_destroy(a.memory) } }
        OpenMP.apply(threads: threads)
        Self.check(dnnl_primitive_execute(p.primitive, stream, Int32(arguments.count), arguments), "executing \(what)")
        Self.check(dnnl_stream_wait(stream), "waiting for \(what)")
    }

    /// A bfloat16 copy of `count` floats, in memory of its own, to pass as `MatrixOperand.bfloat16`.
    public func bfloat16Copy(_ values: UnsafePointer<Float>, count: Int) -> BFloat16Copy {
        let copy = BFloat16Copy(count: count)
        lock.withLock { convertToBFloat16(values, count: count, into: copy.bytes) }
        return copy
    }

    /// The oneDNN implementation chosen for a bf16 (or fp32) product, e.g. "brg:avx512_core_bf16";
    /// nil if there is none but oneDNN's reference loops.
    public func matrixMultiplyImplementation(m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool,
                                             bfloat16: Bool = true) -> String? {
        lock.withLock {
            let key = MatmulKey(m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB,
                                accumulate: false, threads: threads, bfloat16: bfloat16)
            guard let p = makeMatmul(key) else { return nil }
            defer { dnnl_primitive_destroy(p.primitive); dnnl_primitive_desc_destroy(p.primitiveDescriptor) }
            return Self.implementationName(p.primitiveDescriptor)
        }
    }

    // a: [m, k] (strides [k, 1], or [1, m] transposed), b: [k, n] (strides [n, 1], or [1, k]), c: [m, n]
    private static func matmulDescriptors(_ key: MatmulKey)
        -> (source: dnnl_memory_desc_t, weights: dnnl_memory_desc_t, destination: dnnl_memory_desc_t) {
        func strided(_ rows: Int, _ columns: Int, _ strides: [Int], _ type: dnnl_data_type_t) -> dnnl_memory_desc_t {
            var d = dnnl_memory_desc_t()
            check(dnnl_memory_desc_init_by_strides(&d, 2, [Int64(rows), Int64(columns)], type, strides.map { Int64($0) }),
                  "describing a \(rows)x\(columns) matrix")
            return d
        }
        let (m, n, k) = (key.m, key.n, key.k)
        let operandType = key.bfloat16 ? dnnl_bf16 : dnnl_f32
        return (strided(m, k, key.transposeA ? [1, m] : [k, 1], operandType),
                strided(k, n, key.transposeB ? [1, k] : [n, 1], operandType),
                strided(m, n, [n, 1], dnnl_f32))
    }

    private static func implementationName(_ descriptor: dnnl_primitive_desc_t) -> String {
        var name: UnsafePointer<CChar>?
        dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name)
        return name.map { String(cString: $0) } ?? "?"
    }

    /// nil if oneDNN has no matmul of the key's type for the shape, or only its reference loops.
    private func makeMatmul(_ key: MatmulKey) -> MatmulPrimitive? {
        var (source, weights, destination) = Self.matmulDescriptors(key)
        return makeMatmul(source: &source, weights: &weights, destination: &destination, accumulate: key.accumulate,
                          describing: "a matmul \(key)", failureMeansNone: false)
    }

    /// A matmul primitive on the runtime's scratchpad, adding into the destination if `accumulate`;
    /// nil where oneDNN has none for these descriptors (or, with `failureMeansNone`, fails to make
    /// one) or only its reference loops.
    private func makeMatmul(source: inout dnnl_memory_desc_t, weights: inout dnnl_memory_desc_t, destination: inout dnnl_memory_desc_t,
                    accumulate: Bool, describing what: String, failureMeansNone: Bool) -> MatmulPrimitive? {
        OpenMP.apply(threads: threads)
        var d = dnnl_matmul_desc_t()
        Self.check(dnnl_matmul_desc_init(&d, &source, &weights, nil, &destination), "describing \(what)")
        var attributes: dnnl_primitive_attr_t?
        Self.check(dnnl_primitive_attr_create(&attributes), "creating attributes")
        defer { dnnl_primitive_attr_destroy(attributes) }
        Self.check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "scratchpad mode")
        if accumulate {
            var postOps: dnnl_post_ops_t?
            Self.check(dnnl_post_ops_create(&postOps), "creating post-ops")
            Self.check(dnnl_post_ops_append_sum(postOps, 1), "appending a sum")
            Self.check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "setting post-ops")
            dnnl_post_ops_destroy(postOps)
        }
        var descriptor: dnnl_primitive_desc_t?
        let status = dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, nil)
        if status == dnnl_unimplemented || (failureMeansNone && status != dnnl_success) { return nil }
        Self.check(status, "choosing a kernel for \(what)")
        if Self.implementationName(descriptor!).hasPrefix("ref") {
            dnnl_primitive_desc_destroy(descriptor)
            return nil
        }
        var primitive: dnnl_primitive_t?
        Self.check(dnnl_primitive_create(&primitive, descriptor), "creating \(what)")
        let scratchpadBytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(descriptor, dnnl_query_scratchpad_md, 0))
        return MatmulPrimitive(primitiveDescriptor: descriptor!, primitive: primitive!, scratchpadBytes: scratchpadBytes)
    }
}

/// A weight matrix b [k, n] rounded to bf16 in a layout oneDNN's matmul chose (blocked on
/// AVX-512), made by one runtime for its products (`MatrixKernels.bfloat16Weights`).
final class BFloat16MatmulWeights: PreparedWeights, @unchecked Sendable {
    let shape: [Int]
    let byteCount: Int
    let descriptor: dnnl_memory_desc_t
    let bytes: UnsafeMutableRawPointer
    /// The runtime that made it: only its products read these bytes.
    let runtime: ObjectIdentifier

    init(shape: [Int], descriptor: dnnl_memory_desc_t, runtime: ObjectIdentifier) {
        var descriptor = descriptor
        self.shape = shape
        self.descriptor = descriptor
        byteCount = dnnl_memory_desc_get_size(&descriptor)
        bytes = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
        self.runtime = runtime
    }

    deinit { bytes.deallocate() }
}

/// Inference products on kept bf16 weights. Measured on the story head's first Dense layer
/// (32 x 65,536 by 65,536 x 1,024, 2 threads, AMD EPYC with AVX512-BF16, a C probe of oneDNN
/// 2.6): 71-75 ms with plain fp32 weights, 43-44 with fp32 weights in the matmul's own layout,
/// 41-45 with bf16 weights in plain layout, 21-24 with bf16 weights in its own layout. The product
/// streams the weights once, so halving their bytes and reading them in kernel order pays most.
extension DNNLConvolution {
    public func bfloat16Weights(_ b: UnsafePointer<Float>, m: Int, k: Int, n: Int) -> (any PreparedWeights)? {
        lock.withLock {
            guard let layout = preferredWeightsLayout(m: m, n: n, k: k),
                  keptWeightsMatmul(m: m, n: n, k: k, weights: layout) != nil else { return nil }
            let weights = BFloat16MatmulWeights(shape: [k, n], descriptor: layout, runtime: ObjectIdentifier(self))
            let plain = plainMatrix(k, n, dnnl_f32)
            let reorder = reorderPrimitive(from: plain, to: layout, "fp32 -> bf16 weights reorder")
            defer { dnnl_primitive_destroy(reorder) }
            OpenMP.apply(threads: threads)
            run(reorder, from: (plain, UnsafeMutableRawPointer(mutating: b)), to: (layout, weights.bytes))
            return weights
        }
    }

    public func bfloat16Multiply(m: Int, a: UnsafePointer<Float>, weights: any PreparedWeights,
                                 c: UnsafeMutablePointer<Float>) -> Bool {
        guard let weights = weights as? BFloat16MatmulWeights, weights.runtime == ObjectIdentifier(self) else { return false }
        let (k, n) = (weights.shape[0], weights.shape[1])
        return lock.withLock {
            guard let p = keptWeightsMatmul(m: m, n: n, k: k, weights: weights.descriptor) else { return false }
            let source = convertToBFloat16(a, count: m * k, buffer: \.leftBF16Buffer)
            runMatmul(p, (plainMatrix(m, k, dnnl_bf16), weights.descriptor, plainMatrix(m, n, dnnl_f32)),
                      a: source, b: weights.bytes, c: c, what: "a bf16 matmul on kept weights")
            return true
        }
    }

    /// [rows, columns], row-major.
    private func plainMatrix(_ rows: Int, _ columns: Int, _ type: dnnl_data_type_t) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        Self.check(dnnl_memory_desc_init_by_strides(&d, 2, [Int64(rows), Int64(columns)], type, [Int64(columns), 1]),
                   "describing a \(rows)x\(columns) matrix")
        return d
    }

    /// Called with the lock held. The bf16 weights layout oneDNN's matmul picks for [m, k] x [k, n];
    /// nil where it has only reference loops.
    private func preferredWeightsLayout(m: Int, n: Int, k: Int) -> dnnl_memory_desc_t? {
        let key = [m, n, k, threads]
        if let known = preferredWeightsLayouts[key] { return known }
        OpenMP.apply(threads: threads)
        var (source, destination) = (plainMatrix(m, k, dnnl_bf16), plainMatrix(m, n, dnnl_f32))
        var weights = dnnl_memory_desc_t()
        Self.check(dnnl_memory_desc_init_by_tag(&weights, 2, [Int64(k), Int64(n)], dnnl_bf16, dnnl_format_tag_any),
                   "describing a \(k)x\(n) bf16 matrix")
        var d = dnnl_matmul_desc_t()
        Self.check(dnnl_matmul_desc_init(&d, &source, &weights, nil, &destination), "describing a bf16 matmul \(m)x\(k)x\(n)")
        var descriptor: dnnl_primitive_desc_t?
        var layout: dnnl_memory_desc_t?
        if dnnl_primitive_desc_create(&descriptor, &d, nil, engine, nil) == dnnl_success {
            if !Self.implementationName(descriptor!).hasPrefix("ref") {
                layout = dnnl_primitive_desc_query_md(descriptor, dnnl_query_weights_md, 0)!.pointee
            }
            dnnl_primitive_desc_destroy(descriptor)
        }
        preferredWeightsLayouts[key] = .some(layout)
        return layout
    }

    /// Called with the lock held. The matmul of [m, k] (bf16) by kept weights in `layout`, made on
    /// first use per layout; nil where oneDNN has only reference loops for it.
    private func keptWeightsMatmul(m: Int, n: Int, k: Int, weights layout: dnnl_memory_desc_t) -> MatmulPrimitive? {
        let key = [m, n, k, threads]
        var layout = layout
        if let known = keptWeightsMatmuls[key, default: []].first(where: { entry in
            var entryLayout = entry.layout
            return dnnl_memory_desc_equal(&entryLayout, &layout) != 0
        }) { return known.primitive }
        var (source, destination) = (plainMatrix(m, k, dnnl_bf16), plainMatrix(m, n, dnnl_f32))
        let made = makeMatmul(source: &source, weights: &layout, destination: &destination, accumulate: false,
                              describing: "a bf16 matmul \(m)x\(k)x\(n) on kept weights", failureMeansNone: true)
        keptWeightsMatmuls[key, default: []].append((layout, made))
        return made
    }
}
