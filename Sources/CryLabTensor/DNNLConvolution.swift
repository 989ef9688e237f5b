import CDNNL
import Foundation

/// Convolutions through oneDNN's direct kernels (AVX-512 / AVX2 JIT, picked by oneDNN).
///
/// Activations stay in Keras's NHWC in memory and are handed to oneDNN as they are; only the
/// weights may be reordered into the blocked format the chosen kernel wants, and only when that
/// format differs from Keras's [kernelHeight, kernelWidth, inputChannels, outputChannels].
/// Primitives are created once per (geometry, pass, thread count, precision) and cached. All
/// primitives share one scratchpad owned here, so memory does not grow with the number of layers.
///
/// In `ConvolutionPrecision.bf16` the operands oneDNN reads (input, weights, output gradient) are
/// rounded to bfloat16 copies first, still NHWC, and the kernel writes fp32 (output, input gradient,
/// weight and bias gradients). If oneDNN has no bf16 kernel for a shape, or only its slow reference
/// one, that shape runs in fp32. `backward` rounds the output gradient once for both backward
/// passes, and `forward(keepingRoundedInput:)` keeps the input's copy (`BFloat16Copy`, half the
/// input's bytes, held by the layer until backward) so backward-weights need not round it again.
/// Calls are serialised by a lock: oneDNN already uses every thread inside each call.
public final class DNNLConvolution: ConvolutionKernels, @unchecked Sendable {
    public static let shared = DNNLConvolution()

    private enum Pass: Hashable {
        case forward(bias: Bool, relu: Bool)
        case backwardData
        case backwardWeights(bias: Bool)
    }

    private struct Key: Hashable {
        let geometry: ConvolutionGeometry
        let pass: Pass
        let threads: Int
        let precision: ConvolutionPrecision
    }

    /// One ready-to-run pass: the primitive, and how its weights differ from Keras's layout.
    private final class Prepared {
        /// May be fp32 under a bf16 key: the fallback when oneDNN has no fast bf16 kernel.
        let precision: ConvolutionPrecision
        let primitiveDescriptor: dnnl_primitive_desc_t
        let primitive: dnnl_primitive_t
        let weightsDescriptor: dnnl_memory_desc_t
        let kerasWeightsDescriptor: dnnl_memory_desc_t
        /// Keras layout -> kernel layout (forward, backward-data) or back (backward-weights); nil if equal.
        let weightsReorder: dnnl_primitive_t?
        let weightsBytes: Int
        let scratchpadBytes: Int
        let implementation: String
        var operandType: dnnl_data_type_t { precision == .bf16 ? dnnl_bf16 : dnnl_f32 }

        init(precision: ConvolutionPrecision, primitiveDescriptor: dnnl_primitive_desc_t, primitive: dnnl_primitive_t,
             weightsDescriptor: dnnl_memory_desc_t, kerasWeightsDescriptor: dnnl_memory_desc_t,
             weightsReorder: dnnl_primitive_t?, weightsBytes: Int, scratchpadBytes: Int, implementation: String) {
            self.precision = precision
            self.primitiveDescriptor = primitiveDescriptor
            self.primitive = primitive
            self.weightsDescriptor = weightsDescriptor
            self.kerasWeightsDescriptor = kerasWeightsDescriptor
            self.weightsReorder = weightsReorder
            self.weightsBytes = weightsBytes
            self.scratchpadBytes = scratchpadBytes
            self.implementation = implementation
        }
    }

    let lock = NSLock()
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t
    private var cache: [Key: Prepared] = [:]
    var scratchpad = GrowingBuffer()
    private var weightsBuffer = GrowingBuffer()
    private var weightsGradientBuffer = GrowingBuffer()
    /// bf16 copies of the input (forward, backward-weights) and of the output gradient (backward passes).
    private var inputBF16Buffer = GrowingBuffer()
    private var outputGradientBF16Buffer = GrowingBuffer()
    /// bf16 copies of matrix-product operands (see DNNLMatrixMultiply.swift).
    var leftBF16Buffer = GrowingBuffer()
    var rightBF16Buffer = GrowingBuffer()
    /// The fp32 gradient through ReLU, when `backward(reluOutput:)` cannot fuse it into the rounding.
    private var reluGradientBuffer = GrowingBuffer()
    /// bf16 matrix-product primitives, nil where oneDNN has only a reference kernel.
    var matmuls: [MatmulKey: MatmulPrimitive?] = [:]
    /// fp32 -> bf16 reorders of flat arrays, per (element count, thread count).
    private var conversions: [[Int]: dnnl_primitive_t] = [:]

    private init() {
        _ = MemoryPolicy.applied
        var engine: dnnl_engine_t?
        Self.check(dnnl_engine_create(&engine, dnnl_cpu, 0), "creating the CPU engine")
        var stream: dnnl_stream_t?
        Self.check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue), "creating a stream")
        self.engine = engine!
        self.stream = stream!
    }

    // MARK: Passes

    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, fuseReLU: Bool, output: UnsafeMutablePointer<Float>) {
        _ = forward(g, input: input, kernel: kernel, bias: bias, fuseReLU: fuseReLU, output: output, keepingRoundedInput: false)
    }

    /// In bf16 with `keepingRoundedInput`, the input's bf16 copy is made in memory of its own and
    /// returned, for `backward(roundedInput:)` to reuse instead of rounding the input again.
    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, fuseReLU: Bool, output: UnsafeMutablePointer<Float>,
                        keepingRoundedInput: Bool) -> BFloat16Copy? {
        lock.withLock {
            let p = prepared(g, .forward(bias: bias != nil, relu: fuseReLU))
            let weights = kernelInKernelLayout(p, kernel: kernel)
            var kept: BFloat16Copy?
            let source: UnsafeMutableRawPointer
            if keepingRoundedInput && p.precision == .bf16 {
                let copy = BFloat16Copy(count: g.inputShape.reduce(1, *))
                convertToBFloat16(input, count: copy.count, into: copy.bytes)
                kept = copy
                source = copy.bytes
            } else {
                source = operand(p, input, count: g.inputShape.reduce(1, *), buffer: \.inputBF16Buffer)
            }
            var arguments = [
                argument(Int32(DNNL_ARG_SRC_0), descriptor: sourceDescriptor(g, p.operandType), pointer: source),
                argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                argument(Int32(DNNL_ARG_DST_0), descriptor: destinationDescriptor(g), pointer: UnsafeMutableRawPointer(output)),
            ]
            if let bias {
                arguments.append(argument(41, descriptor: biasDescriptor(g), pointer: UnsafeMutableRawPointer(mutating: bias)))
            }
            execute(p, arguments)
            return kept
        }
    }

    public func backwardData(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                             kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            backwardDataPass(g, outputGradient: outputGradient, roundedOutputGradient: &roundedOutputGradient,
                             kernel: kernel, inputGradient: inputGradient)
        }
    }

    public func backwardWeights(_ g: ConvolutionGeometry, input: UnsafePointer<Float>,
                                outputGradient: UnsafePointer<Float>,
                                kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            backwardWeightsPass(g, input: input, roundedInput: nil, outputGradient: outputGradient,
                                roundedOutputGradient: &roundedOutputGradient, kernelGradient: kernelGradient, biasGradient: biasGradient)
        }
    }

    public func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         kernel: UnsafePointer<Float>, kernelGradient: UnsafeMutablePointer<Float>?,
                         biasGradient: UnsafeMutablePointer<Float>?, inputGradient: UnsafeMutablePointer<Float>?) {
        backward(g, input: input, roundedInput: nil, outputGradient: outputGradient, reluOutput: nil, kernel: kernel,
                 kernelGradient: kernelGradient, biasGradient: biasGradient, inputGradient: inputGradient)
    }

    /// Both backward passes, rounding the output gradient to bf16 once for the two (bf16 only).
    /// `roundedInput`: the copy `forward(keepingRoundedInput:)` returned for this input, if any.
    /// `reluOutput`: if given, the convolution was followed by ReLU with this output, and
    /// `outputGradient` is the gradient of the ReLU's output; when both passes run in bf16 the ReLU
    /// backward and the rounding to bf16 are done in one pass over memory.
    public func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, roundedInput: BFloat16Copy?,
                         outputGradient: UnsafePointer<Float>, reluOutput: UnsafePointer<Float>?, kernel: UnsafePointer<Float>,
                         kernelGradient: UnsafeMutablePointer<Float>?, biasGradient: UnsafeMutablePointer<Float>?,
                         inputGradient: UnsafeMutablePointer<Float>?) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            var outputGradient = outputGradient
            if let reluOutput {
                let count = g.outputShape.reduce(1, *)
                let allBF16 = (kernelGradient == nil || prepared(g, .backwardWeights(bias: biasGradient != nil)).precision == .bf16)
                    && (inputGradient == nil || prepared(g, .backwardData).precision == .bf16)
                if allBF16 {
                    let target = outputGradientBF16Buffer.reserve(bytes: count * 2)
                    reluBackwardToBFloat16(gradient: outputGradient, output: reluOutput, count: count, into: target)
                    roundedOutputGradient = target
                } else {
                    let masked = reluGradientBuffer.reserve(bytes: count * 4).assumingMemoryBound(to: Float.self)
                    masked.update(from: outputGradient, count: count)
                    reluBackwardInPlace(gradient: masked, output: reluOutput, count: count)
                    outputGradient = UnsafePointer(masked)
                }
            }
            if let kernelGradient {
                backwardWeightsPass(g, input: input, roundedInput: roundedInput, outputGradient: outputGradient,
                                    roundedOutputGradient: &roundedOutputGradient, kernelGradient: kernelGradient, biasGradient: biasGradient)
            }
            if let inputGradient {
                backwardDataPass(g, outputGradient: outputGradient, roundedOutputGradient: &roundedOutputGradient,
                                 kernel: kernel, inputGradient: inputGradient)
            }
        }
    }

    // MARK: Passes, called with the lock held

    /// `roundedOutputGradient`: the bf16 copy of `outputGradient` if a pass already made it; set when this one does.
    private func backwardDataPass(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                                  roundedOutputGradient: inout UnsafeMutableRawPointer?,
                                  kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>) {
        do {
            let p = prepared(g, .backwardData)
            let weights = kernelInKernelLayout(p, kernel: kernel)
            let diffDestination = outputGradientOperand(p, outputGradient, count: g.outputShape.reduce(1, *),
                                                        rounded: &roundedOutputGradient)
            execute(p, [
                argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: destinationDescriptor(g, p.operandType), pointer: diffDestination),
                argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                argument(Int32(DNNL_ARG_DIFF_SRC_0), descriptor: sourceDescriptor(g), pointer: UnsafeMutableRawPointer(inputGradient)),
            ])
        }
    }

    private func backwardWeightsPass(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, roundedInput: BFloat16Copy?,
                                     outputGradient: UnsafePointer<Float>,
                                     roundedOutputGradient: inout UnsafeMutableRawPointer?,
                                     kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?) {
        do {
            let p = prepared(g, .backwardWeights(bias: biasGradient != nil))
            // oneDNN overwrites its outputs; ours accumulate, so compute into scratch and add.
            let kernelCount = g.kernelHeight * g.kernelWidth * g.inputChannels * g.outputChannels
            let fresh = weightsGradientBuffer.reserve(bytes: (p.weightsBytes + 63) / 64 * 64 + (g.outputChannels + kernelCount) * 4)
            let freshKernel = fresh
            let freshBias = fresh + (p.weightsBytes + 63) / 64 * 64
            let inputCount = g.inputShape.reduce(1, *)
            let source = p.precision == .bf16 && roundedInput?.count == inputCount
                ? roundedInput!.bytes : operand(p, input, count: inputCount, buffer: \.inputBF16Buffer)
            let diffDestination = outputGradientOperand(p, outputGradient, count: g.outputShape.reduce(1, *),
                                                        rounded: &roundedOutputGradient)
            var arguments = [
                argument(Int32(DNNL_ARG_SRC_0), descriptor: sourceDescriptor(g, p.operandType), pointer: source),
                argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: destinationDescriptor(g, p.operandType), pointer: diffDestination),
                argument(Int32(DNNL_ARG_DIFF_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: freshKernel),
            ]
            if biasGradient != nil {
                arguments.append(argument(169, descriptor: biasDescriptor(g), pointer: freshBias))
            }
            execute(p, arguments)
            var kerasKernel = freshKernel.assumingMemoryBound(to: Float.self)
            if let reorder = p.weightsReorder {
                // Blocked gradient -> Keras layout, into the space after the bias.
                let target = freshBias + g.outputChannels * 4
                runReorder(reorder, from: (p.weightsDescriptor, freshKernel), to: (p.kerasWeightsDescriptor, target))
                kerasKernel = target.assumingMemoryBound(to: Float.self)
            }
            for i in 0..<kernelCount { kernelGradient[i] += kerasKernel[i] }
            if let biasGradient {
                let b = freshBias.assumingMemoryBound(to: Float.self)
                for i in 0..<g.outputChannels { biasGradient[i] += b[i] }
            }
        }
    }

    /// The names of the oneDNN implementations chosen for forward, backward-data and backward-weights
    /// at the current precision, e.g. "jit:avx512_core" or "jit_bf16:avx512_core_bf16".
    public func implementationNames(_ g: ConvolutionGeometry) -> [String] {
        lock.withLock {
            [prepared(g, .forward(bias: true, relu: true)).implementation,
             prepared(g, .backwardData).implementation,
             prepared(g, .backwardWeights(bias: true)).implementation]
        }
    }

    /// Number of cached primitives (tests check that repeated shapes reuse them).
    public var cachedPrimitiveCount: Int { lock.withLock { cache.count } }

    // MARK: Execution helpers

    private func kernelInKernelLayout(_ p: Prepared, kernel: UnsafePointer<Float>) -> UnsafeMutableRawPointer {
        guard let reorder = p.weightsReorder else { return UnsafeMutableRawPointer(mutating: kernel) }
        let target = weightsBuffer.reserve(bytes: p.weightsBytes)
        runReorder(reorder, from: (p.kerasWeightsDescriptor, UnsafeMutableRawPointer(mutating: kernel)),
                   to: (p.weightsDescriptor, target))
        return target
    }

    /// The pointer oneDNN should read an operand from: `values` itself in fp32, else a bf16 copy
    /// in `buffer` (same layout, half the bytes).
    private func operand(_ p: Prepared, _ values: UnsafePointer<Float>, count: Int,
                         buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> UnsafeMutableRawPointer {
        guard p.precision == .bf16 else { return UnsafeMutableRawPointer(mutating: values) }
        return convertToBFloat16(values, count: count, buffer: buffer)
    }

    /// `operand` for the output gradient, reusing (or recording) its bf16 copy in `rounded`.
    private func outputGradientOperand(_ p: Prepared, _ values: UnsafePointer<Float>, count: Int,
                                       rounded: inout UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer {
        guard p.precision == .bf16 else { return UnsafeMutableRawPointer(mutating: values) }
        if let rounded { return rounded }
        let made = convertToBFloat16(values, count: count, buffer: \.outputGradientBF16Buffer)
        rounded = made
        return made
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
        let key = [count, ComputeThreads.count]
        let conversion: dnnl_primitive_t
        if let cached = conversions[key] {
            conversion = cached
        } else {
            OpenMP.applyToCurrentThread()
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
        OpenMP.applyToCurrentThread()
        run(conversion, from: (descriptor([count], dnnl_x), source), to: (descriptor([count], dnnl_x, type: dnnl_bf16), target))
    }

    private func runReorder(_ reorder: dnnl_primitive_t,
                            from: (dnnl_memory_desc_t, UnsafeMutableRawPointer),
                            to: (dnnl_memory_desc_t, UnsafeMutableRawPointer)) {
        // Weight reorders are small (at most a few MB): one thread avoids an OpenMP barrier, which
        // costs a scheduler time slice (~8 ms measured) whenever another process holds a core.
        OpenMP.setThreads(1)
        defer { OpenMP.setThreads(ComputeThreads.count) }
        run(reorder, from: from, to: to)
    }

    private func run(_ reorder: dnnl_primitive_t,
                     from: (dnnl_memory_desc_t, UnsafeMutableRawPointer),
                     to: (dnnl_memory_desc_t, UnsafeMutableRawPointer)) {
        let arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: from.0, pointer: from.1),
                         argument(Int32(DNNL_ARG_DST_0), descriptor: to.0, pointer: to.1)]
        defer { for a in arguments { dnnl_memory_destroy(a.memory) } }
        Self.check(dnnl_primitive_execute(reorder, stream, Int32(arguments.count), arguments), "reordering")
        Self.check(dnnl_stream_wait(stream), "waiting for a reorder")
    }

    private func execute(_ p: Prepared, _ arguments: [dnnl_exec_arg_t]) {
        OpenMP.applyToCurrentThread()
        var all = arguments
        if p.scratchpadBytes > 0 {
            var descriptor = dnnl_primitive_desc_query_md(p.primitiveDescriptor, dnnl_query_scratchpad_md, 0)!.pointee
            var memory: dnnl_memory_t?
            Self.check(dnnl_memory_create(&memory, &descriptor, engine, scratchpad.reserve(bytes: p.scratchpadBytes)), "creating scratchpad memory")
            all.append(dnnl_exec_arg_t(arg: 80, memory: memory))
        }
        defer { for a in all { dnnl_memory_destroy(a.memory) } }
        Self.check(dnnl_primitive_execute(p.primitive, stream, Int32(all.count), all), "executing a convolution")
        Self.check(dnnl_stream_wait(stream), "waiting for a convolution")
    }

    func argument(_ index: Int32, descriptor: dnnl_memory_desc_t, pointer: UnsafeMutableRawPointer) -> dnnl_exec_arg_t {
        var descriptor = descriptor
        var memory: dnnl_memory_t?
        Self.check(dnnl_memory_create(&memory, &descriptor, engine, pointer), "wrapping a buffer as oneDNN memory")
        return dnnl_exec_arg_t(arg: index, memory: memory)
    }

    // MARK: Descriptors (oneDNN's logical dimension order is always N, C, H, W / O, I, H, W)

    private func descriptor(_ dims: [Int], _ tag: dnnl_format_tag_t, type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        let dims64 = dims.map { Int64($0) }
        Self.check(dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dims64, type, tag), "describing \(dims)")
        return d
    }

    // x: [batch, height, width, channels]
    private func sourceDescriptor(_ g: ConvolutionGeometry, _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        descriptor([g.batch, g.inputChannels, g.inputHeight, g.inputWidth], dnnl_nhwc, type: type)
    }

    // y: [batch, outputHeight, outputWidth, outputChannels]
    private func destinationDescriptor(_ g: ConvolutionGeometry, _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        descriptor([g.batch, g.outputChannels, g.outputHeight, g.outputWidth], dnnl_nhwc, type: type)
    }

    private func weightsDescriptor(_ g: ConvolutionGeometry, _ tag: dnnl_format_tag_t,
                                   _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        descriptor([g.outputChannels, g.inputChannels, g.kernelHeight, g.kernelWidth], tag, type: type)
    }

    private func biasDescriptor(_ g: ConvolutionGeometry) -> dnnl_memory_desc_t {
        descriptor([g.outputChannels], dnnl_x)
    }

    // MARK: Primitive creation (once per key)

    private func prepared(_ g: ConvolutionGeometry, _ pass: Pass) -> Prepared {
        let key = Key(geometry: g, pass: pass, threads: ComputeThreads.count, precision: ConvolutionPrecision.current)
        if let hit = cache[key] { return hit }
        OpenMP.applyToCurrentThread()
        var made: Prepared? = nil
        if key.precision != .fp32 {
            made = make(g, pass, operandType: dnnl_bf16)
            if let chosen = made, chosen.implementation.hasPrefix("ref") {
                // oneDNN's reference loops are orders of magnitude slower than fp32 JIT.
                destroy(chosen)
                made = nil
            }
        }
        var result = made ?? make(g, pass, operandType: dnnl_f32)!
        if key.precision == .fast, let bf16 = made {
            result = faster(bf16, make(g, pass, operandType: dnnl_f32)!, g, pass)
        }
        cache[key] = result
        return result
    }

    /// Whichever of two ready passes (bf16 first, fp32 second) runs faster here, timed on zeroed
    /// buffers: one untimed run each, then one timed run each, and a second when the two are
    /// within 30 % (the better of the two counts). bf16 must win by
    /// `ConvolutionPrecision.fastModeBFloat16Margin`. The other one is destroyed.
    private func faster(_ bf16: Prepared, _ fp32: Prepared, _ g: ConvolutionGeometry, _ pass: Pass) -> Prepared {
        let inputBytes = g.inputShape.reduce(1, *) * 4, outputBytes = g.outputShape.reduce(1, *) * 4
        let weightsBytes = max(bf16.weightsBytes, fp32.weightsBytes), biasBytes = g.outputChannels * 4
        let memory = UnsafeMutableRawPointer.allocate(byteCount: inputBytes + outputBytes + weightsBytes + biasBytes, alignment: 64)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: inputBytes + outputBytes + weightsBytes + biasBytes)
        let (input, output) = (memory, memory + inputBytes)
        let (weights, bias) = (output + outputBytes, output + outputBytes + weightsBytes)
        func run(_ p: Prepared) -> Double {
            var arguments: [dnnl_exec_arg_t]
            switch pass {
            case let .forward(hasBias, _):
                arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: sourceDescriptor(g, p.operandType), pointer: input),
                             argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                             argument(Int32(DNNL_ARG_DST_0), descriptor: destinationDescriptor(g), pointer: output)]
                if hasBias { arguments.append(argument(41, descriptor: biasDescriptor(g), pointer: bias)) }
            case .backwardData:
                arguments = [argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: destinationDescriptor(g, p.operandType), pointer: output),
                             argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                             argument(Int32(DNNL_ARG_DIFF_SRC_0), descriptor: sourceDescriptor(g), pointer: input)]
            case let .backwardWeights(hasBias):
                arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: sourceDescriptor(g, p.operandType), pointer: input),
                             argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: destinationDescriptor(g, p.operandType), pointer: output),
                             argument(Int32(DNNL_ARG_DIFF_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights)]
                if hasBias { arguments.append(argument(169, descriptor: biasDescriptor(g), pointer: bias)) }
            }
            let start = DispatchTime.now().uptimeNanoseconds
            execute(p, arguments)
            return Double(DispatchTime.now().uptimeNanoseconds - start)
        }
        _ = run(bf16)
        _ = run(fp32)
        var best = (bf16: Double.infinity, fp32: Double.infinity)
        for round in 0..<2 {
            if round == 1 && max(best.bf16, best.fp32) > 1.3 * min(best.bf16, best.fp32) { break }
            best.bf16 = min(best.bf16, run(bf16))
            best.fp32 = min(best.fp32, run(fp32))
        }
        let (kept, dropped) = best.bf16 < ConvolutionPrecision.fastModeBFloat16Margin * best.fp32 ? (bf16, fp32) : (fp32, bf16)
        destroy(dropped)
        return kept
    }

    private func destroy(_ p: Prepared) {
        if let reorder = p.weightsReorder { dnnl_primitive_destroy(reorder) }
        dnnl_primitive_destroy(p.primitive)
        dnnl_primitive_desc_destroy(p.primitiveDescriptor)
    }

    /// `operandType` is the type of what the kernel reads (input, weights, output gradient);
    /// what it writes is always fp32.
    private func forwardDescriptor(_ g: ConvolutionGeometry, bias: Bool, operandType: dnnl_data_type_t) -> dnnl_convolution_desc_t {
        var source = sourceDescriptor(g, operandType)
        var destination = destinationDescriptor(g)
        var weights = weightsDescriptor(g, dnnl_format_tag_any, operandType)
        var biasMD = biasDescriptor(g)
        var d = dnnl_convolution_desc_t()
        let status = withUnsafePointer(to: &biasMD) { biasPointer in
            dnnl_convolution_forward_desc_init(
                &d, dnnl_forward_training, dnnl_convolution_direct, &source, &weights, bias ? biasPointer : nil,
                &destination, strides(g), [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)])
        }
        Self.check(status, "describing \(g)")
        return d
    }

    private func strides(_ g: ConvolutionGeometry) -> [Int64] { [Int64(g.stride), Int64(g.stride)] }

    /// nil if oneDNN has no bf16 kernel for this shape (fp32 always has one).
    private func make(_ g: ConvolutionGeometry, _ pass: Pass, operandType: dnnl_data_type_t) -> Prepared? {
        func created(_ status: dnnl_status_t, _ what: @autoclosure () -> String) -> Bool {
            if status == dnnl_unimplemented && operandType == dnnl_bf16 { return false }
            Self.check(status, what())
            return true
        }
        var attributes: dnnl_primitive_attr_t?
        Self.check(dnnl_primitive_attr_create(&attributes), "creating attributes")
        defer { dnnl_primitive_attr_destroy(attributes) }
        Self.check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "scratchpad mode")

        var descriptor: dnnl_primitive_desc_t?
        let weightsQuery: dnnl_query_t
        switch pass {
        case let .forward(bias, relu):
            if relu {
                var postOps: dnnl_post_ops_t?
                Self.check(dnnl_post_ops_create(&postOps), "creating post-ops")
                Self.check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0), "appending ReLU")
                Self.check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "setting post-ops")
                dnnl_post_ops_destroy(postOps)
            }
            var d = forwardDescriptor(g, bias: bias, operandType: operandType)
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, nil), "choosing a forward kernel for \(g)")
            else { return nil }
            weightsQuery = dnnl_query_weights_md
        case .backwardData:
            guard let hint = forwardHint(g, operandType: operandType) else { return nil }
            defer { dnnl_primitive_desc_destroy(hint) }
            var diffSource = sourceDescriptor(g)
            var diffDestination = destinationDescriptor(g, operandType)
            var weights = weightsDescriptor(g, dnnl_format_tag_any, operandType)
            var d = dnnl_convolution_desc_t()
            Self.check(dnnl_convolution_backward_data_desc_init(
                &d, dnnl_convolution_direct, &diffSource, &weights, &diffDestination, strides(g),
                [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)]), "describing backward-data \(g)")
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, hint), "choosing a backward-data kernel for \(g)")
            else { return nil }
            weightsQuery = dnnl_query_weights_md
        case let .backwardWeights(bias):
            guard let hint = forwardHint(g, operandType: operandType) else { return nil }
            defer { dnnl_primitive_desc_destroy(hint) }
            var source = sourceDescriptor(g, operandType)
            var diffDestination = destinationDescriptor(g, operandType)
            var diffWeights = weightsDescriptor(g, dnnl_format_tag_any)
            var diffBias = biasDescriptor(g)
            var d = dnnl_convolution_desc_t()
            let status = withUnsafePointer(to: &diffBias) { biasPointer in
                dnnl_convolution_backward_weights_desc_init(
                    &d, dnnl_convolution_direct, &source, &diffWeights, bias ? biasPointer : nil, &diffDestination,
                    strides(g), [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)])
            }
            Self.check(status, "describing backward-weights \(g)")
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, hint), "choosing a backward-weights kernel for \(g)")
            else { return nil }
            weightsQuery = dnnl_query_diff_weights_md
        }
        var primitive: dnnl_primitive_t?
        Self.check(dnnl_primitive_create(&primitive, descriptor), "creating a primitive for \(g)")

        var chosen = dnnl_primitive_desc_query_md(descriptor, weightsQuery, 0)!.pointee
        var keras = weightsDescriptor(g, dnnl_hwio)
        var reorder: dnnl_primitive_t?
        if dnnl_memory_desc_equal(&chosen, &keras) == 0 {
            var reorderDescriptor: dnnl_primitive_desc_t?
            if case .backwardWeights = pass {
                Self.check(dnnl_reorder_primitive_desc_create(&reorderDescriptor, &chosen, engine, &keras, engine, nil), "weights reorder")
            } else {
                Self.check(dnnl_reorder_primitive_desc_create(&reorderDescriptor, &keras, engine, &chosen, engine, nil), "weights reorder")
            }
            Self.check(dnnl_primitive_create(&reorder, reorderDescriptor), "creating a weights reorder")
            dnnl_primitive_desc_destroy(reorderDescriptor)
        }
        let scratchpadBytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(descriptor, dnnl_query_scratchpad_md, 0))
        var name: UnsafePointer<CChar>?
        dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name)
        return Prepared(precision: operandType == dnnl_bf16 ? .bf16 : .fp32, primitiveDescriptor: descriptor!, primitive: primitive!,
                        weightsDescriptor: chosen, kerasWeightsDescriptor: keras, weightsReorder: reorder,
                        weightsBytes: dnnl_memory_desc_get_size(&chosen), scratchpadBytes: scratchpadBytes,
                        implementation: name.map { String(cString: $0) } ?? "?")
    }

    private func forwardHint(_ g: ConvolutionGeometry, operandType: dnnl_data_type_t) -> dnnl_primitive_desc_t? {
        var d = forwardDescriptor(g, bias: true, operandType: operandType)
        var hint: dnnl_primitive_desc_t?
        let status = dnnl_primitive_desc_create(&hint, &d, nil, engine, nil)
        if status == dnnl_unimplemented && operandType == dnnl_bf16 { return nil }
        Self.check(status, "forward hint for \(g)")
        return hint!
    }

    static func check(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
        if status != dnnl_success {
            fatalError("oneDNN failed while \(what()): status \(status.rawValue)")
        }
    }
}

/// A 64-byte-aligned buffer that only ever grows; reused across calls.
struct GrowingBuffer {
    private var pointer: UnsafeMutableRawPointer?
    private var capacity = 0

    mutating func reserve(bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > capacity || pointer == nil {
            pointer?.deallocate()
            capacity = max(bytes, 64)
            pointer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }
        return pointer!
    }
}

/// A bfloat16 copy of an fp32 array in memory of its own, same layout: a convolution's input kept
/// from forward for backward-weights, or a matrix operand read by several products.
public final class BFloat16Copy: @unchecked Sendable {
    let count: Int
    let bytes: UnsafeMutableRawPointer

    init(count: Int) {
        self.count = count
        bytes = UnsafeMutableRawPointer.allocate(byteCount: max(count * 2, 64), alignment: 64)
    }

    deinit { bytes.deallocate() }
}
