import CDNNL
import Foundation

/// Convolutions through oneDNN's direct kernels (AVX-512 / AVX2 JIT, picked by oneDNN), or its
/// Winograd ones.
///
/// Activations stay in Keras's NHWC in memory and are handed to direct kernels as they are; only the
/// weights may be reordered into the blocked format the chosen kernel wants, and only when that
/// format differs from Keras's [kernelHeight, kernelWidth, inputChannels, outputChannels].
/// Blocked passes take oneDNN's own activation layouts (nChw16c): Winograd kernels
/// (`ConvolutionPrecision.winograd`, and `.fast` where they time fastest) always, and in `.fast`
/// direct kernels made in the layouts oneDNN prefers (`FastModeCandidates.directBlocked`) where
/// those time fastest. A call reorders what such a pass reads from NHWC into two reused buffers
/// and what it writes back (`BlockedActivations`), except for operands handed over already
/// blocked (`ActivationLayout.blocked16`, see `forward(inputLayout:allowingBlockedOutput:)`),
/// which it reads and writes where they lie. NHWC passes get NHWC copies of blocked operands.
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

        var isForward: Bool { if case .forward = self { true } else { false } }
    }

    /// An output gradient already reordered into a blocked pass's layout, shared by the two
    /// backward passes of one call.
    private typealias BlockedCopy = (descriptor: dnnl_memory_desc_t, pointer: UnsafeMutableRawPointer)

    private struct Key: Hashable {
        let geometry: ConvolutionGeometry
        let pass: Pass
        let threads: Int
        let precision: ConvolutionPrecision
        var candidates = ConvolutionPrecision.current == .fast ? ConvolutionPrecision.fastModeCandidates : .all
    }

    /// Blocked passes read and write oneDNN's layouts (nChw16c; plain NCHW for one channel), not NHWC: the layouts
    /// of one pass's two activation operands, and the reorders between them and NHWC.
    private struct BlockedActivations {
        /// src (forward, backward-weights) or diff_src (backward-data).
        let source: dnnl_memory_desc_t
        /// dst (forward) or diff_dst (backward passes).
        let destination: dnnl_memory_desc_t
        /// NHWC -> blocked where the pass reads the operand, blocked -> NHWC where it writes it.
        let sourceReorder: dnnl_primitive_t
        let destinationReorder: dnnl_primitive_t
        /// Whether `source` / `destination` is `ActivationLayout.blocked16` itself (nChw16c, channels
        /// a multiple of 16): then an operand already in that layout is used where it lies.
        let sourceIsBlocked16: Bool
        let destinationIsBlocked16: Bool
        /// Whether `source` / `destination` holds NHWC's bytes (one channel in plain NCHW does): then
        /// an NHWC operand is used where it lies, without its reorder.
        let sourceIsNHWC: Bool
        let destinationIsNHWC: Bool
        var sourceBytes: Int { dnnl_memory_desc_get_size([source]) }
        var destinationBytes: Int { dnnl_memory_desc_get_size([destination]) }
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
        /// Set for blocked passes (always fp32); nil for NHWC ones.
        let blocked: BlockedActivations?
        var operandType: dnnl_data_type_t { precision == .bf16 ? dnnl_bf16 : dnnl_f32 }

        init(precision: ConvolutionPrecision, primitiveDescriptor: dnnl_primitive_desc_t, primitive: dnnl_primitive_t,
             weightsDescriptor: dnnl_memory_desc_t, kerasWeightsDescriptor: dnnl_memory_desc_t,
             weightsReorder: dnnl_primitive_t?, weightsBytes: Int, scratchpadBytes: Int, implementation: String,
             blocked: BlockedActivations?) {
            self.blocked = blocked
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
    private var timingStore: Timing?
    var scratchpad = GrowingBuffer()
    private var weightsBuffer = GrowingBuffer()
    private var weightsGradientBuffer = GrowingBuffer()
    /// bf16 copies of the input (forward, backward-weights) and of the output gradient (backward passes).
    private var inputBF16Buffer = GrowingBuffer()
    private var outputGradientBF16Buffer = GrowingBuffer()
    /// bf16 copies of matrix-product operands (see DNNLMatrixMultiply.swift).
    var leftBF16Buffer = GrowingBuffer()
    var rightBF16Buffer = GrowingBuffer()
    /// Blocked activations for Winograd passes: src or diff_src, and dst or diff_dst.
    private var blockedSourceBuffer = GrowingBuffer()
    private var blockedDestinationBuffer = GrowingBuffer()
    /// The fp32 gradient through ReLU, when `backward(reluOutput:)` cannot fuse it into the rounding.
    private var reluGradientBuffer = GrowingBuffer()
    /// NHWC copies of nChw16c operands (`ActivationLayout.blocked16`) for passes that take NHWC:
    /// the input (or, in backward-data, the input gradient before its reorder to nChw16c: the
    /// backward-weights pass that may have read the input's copy is done by then), and the output gradient.
    private var nhwcInputBuffer = GrowingBuffer()
    private var nhwcOutputGradientBuffer = GrowingBuffer()
    /// NHWC <-> nChw16c reorders, per [batch, channels, height, width, direction].
    private var layoutReorders: [[Int]: dnnl_primitive_t] = [:]
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
        forward(g, input: input, inputLayout: .nhwc, kernel: kernel, bias: bias, fuseReLU: fuseReLU, output: output,
                allowingBlockedOutput: false, keepingRoundedInput: keepingRoundedInput).rounded
    }

    /// `input` in `inputLayout`. With `allowingBlockedOutput`, a blocked forward pass that writes
    /// nChw16c writes `output` in that layout, sparing its reorder to NHWC; the layout written is
    /// returned. A blocked input is read in place by such a pass, and reordered to NHWC for others.
    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout,
                        kernel: UnsafePointer<Float>, bias: UnsafePointer<Float>?, fuseReLU: Bool,
                        output: UnsafeMutablePointer<Float>, allowingBlockedOutput: Bool,
                        keepingRoundedInput: Bool) -> (layout: ActivationLayout, rounded: BFloat16Copy?) {
        lock.withLock {
            let p = prepared(g, .forward(bias: bias != nil, relu: fuseReLU),
                             timingOn: (UnsafeMutableRawPointer(mutating: input), UnsafeMutableRawPointer(output)))
            let weights = kernelInKernelLayout(p, kernel: kernel)
            let sourceInPlace = inputLayout == .blocked16 && p.blocked?.sourceIsBlocked16 == true
            let destinationInPlace = allowingBlockedOutput && p.blocked?.destinationIsBlocked16 == true
            let input = inputLayout == .blocked16 && !sourceInPlace
                ? UnsafePointer(nhwcCopy(of: input, g.inputShape, buffer: \.nhwcInputBuffer)) : input
            var kept: BFloat16Copy?
            let source: UnsafeMutableRawPointer
            if sourceInPlace {
                source = UnsafeMutableRawPointer(mutating: input)
            } else if keepingRoundedInput && p.precision == .bf16 {
                let copy = BFloat16Copy(count: g.inputShape.reduce(1, *))
                convertToBFloat16(input, count: copy.count, into: copy.bytes)
                kept = copy
                source = copy.bytes
            } else {
                source = operand(p, input, count: g.inputShape.reduce(1, *), buffer: \.inputBF16Buffer)
            }
            var unused: BlockedCopy?
            perform(p, .forward(bias: bias != nil, relu: fuseReLU), g, source: source, destination: UnsafeMutableRawPointer(output),
                    weights: weights, bias: bias.map { UnsafeMutableRawPointer(mutating: $0) }, blockedOutputGradient: &unused,
                    sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
            return (destinationInPlace ? .blocked16 : .nhwc, kept)
        }
    }

    public func backwardData(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                             kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            var blockedOutputGradient: BlockedCopy?
            backwardDataPass(g, outputGradient: outputGradient, roundedOutputGradient: &roundedOutputGradient,
                             blockedOutputGradient: &blockedOutputGradient, kernel: kernel, inputGradient: inputGradient)
        }
    }

    public func backwardWeights(_ g: ConvolutionGeometry, input: UnsafePointer<Float>,
                                outputGradient: UnsafePointer<Float>,
                                kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            var blockedOutputGradient: BlockedCopy?
            backwardWeightsPass(g, input: input, roundedInput: nil, outputGradient: outputGradient,
                                roundedOutputGradient: &roundedOutputGradient, blockedOutputGradient: &blockedOutputGradient,
                                kernelGradient: kernelGradient, biasGradient: biasGradient)
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
    ///
    /// `inputLayout` is the layout of `input`, in which `inputGradient` is written; `outputLayout`
    /// that of `outputGradient` (and `reluOutput`). Blocked operands are used in place by blocked
    /// passes that take nChw16c, and reordered from or to NHWC for the others.
    public func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout = .nhwc,
                         roundedInput: BFloat16Copy?, outputGradient: UnsafePointer<Float>,
                         outputLayout: ActivationLayout = .nhwc, reluOutput: UnsafePointer<Float>?, kernel: UnsafePointer<Float>,
                         kernelGradient: UnsafeMutablePointer<Float>?, biasGradient: UnsafeMutablePointer<Float>?,
                         inputGradient: UnsafeMutablePointer<Float>?) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            var blockedOutputGradient: BlockedCopy?
            // Both passes are prepared before either runs: the fast mode's first-call timing runs
            // Winograd candidates through the blocked buffers, which must stay untouched once the
            // first pass has left the blocked output gradient there for the second.
            let gradient = UnsafeMutableRawPointer(mutating: outputGradient)
            let weightsPass = kernelGradient.map { _ in
                prepared(g, .backwardWeights(bias: biasGradient != nil), timingOn: (UnsafeMutableRawPointer(mutating: input), gradient))
            }
            let dataPass = inputGradient.map { prepared(g, .backwardData, timingOn: (UnsafeMutableRawPointer($0), gradient)) }
            var outputGradient = outputGradient
            if let reluOutput {
                let count = g.outputShape.reduce(1, *)
                let allBF16 = [weightsPass, dataPass].allSatisfy { $0 == nil || $0!.precision == .bf16 }
                if allBF16 && outputLayout == .nhwc {
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
            // Blocked operands: in place where a pass takes nChw16c, else NHWC copies (the output
            // gradient's made once for both passes).
            let blockedGradient = outputLayout == .blocked16
            var nhwcGradient: UnsafePointer<Float>?
            func gradientOperand(for pass: Prepared) -> (pointer: UnsafePointer<Float>, inPlace: Bool) {
                if !blockedGradient { return (outputGradient, false) }
                if pass.blocked?.destinationIsBlocked16 == true { return (outputGradient, true) }
                if nhwcGradient == nil {
                    nhwcGradient = UnsafePointer(nhwcCopy(of: outputGradient, g.outputShape, buffer: \.nhwcOutputGradientBuffer))
                }
                return (nhwcGradient!, false)
            }
            if let kernelGradient, let weightsPass {
                let sourceInPlace = inputLayout == .blocked16 && weightsPass.blocked?.sourceIsBlocked16 == true
                let input = inputLayout == .blocked16 && !sourceInPlace
                    ? UnsafePointer(nhwcCopy(of: input, g.inputShape, buffer: \.nhwcInputBuffer)) : input
                let (dy, destinationInPlace) = gradientOperand(for: weightsPass)
                backwardWeightsPass(g, input: input, roundedInput: roundedInput, outputGradient: dy,
                                    roundedOutputGradient: &roundedOutputGradient, blockedOutputGradient: &blockedOutputGradient,
                                    kernelGradient: kernelGradient, biasGradient: biasGradient,
                                    sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
            }
            if let inputGradient, let dataPass {
                let sourceInPlace = inputLayout == .blocked16 && dataPass.blocked?.sourceIsBlocked16 == true
                let target = inputLayout == .blocked16 && !sourceInPlace
                    ? nhwcInputBuffer.reserve(bytes: g.inputShape.reduce(1, *) * 4).assumingMemoryBound(to: Float.self)
                    : inputGradient
                let (dy, destinationInPlace) = gradientOperand(for: dataPass)
                backwardDataPass(g, outputGradient: dy, roundedOutputGradient: &roundedOutputGradient,
                                 blockedOutputGradient: &blockedOutputGradient, kernel: kernel, inputGradient: target,
                                 sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
                if target != inputGradient { convertLayout(target, g.inputShape, toBlocked: true, into: inputGradient) }
            }
        }
    }

    /// An NHWC copy of nChw16c activations of `shape` ([batch, height, width, channels]), in `buffer`.
    private func nhwcCopy(of values: UnsafePointer<Float>, _ shape: [Int],
                          buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> UnsafeMutablePointer<Float> {
        let target = self[keyPath: buffer].reserve(bytes: shape.reduce(1, *) * 4).assumingMemoryBound(to: Float.self)
        convertLayout(values, shape, toBlocked: false, into: target)
        return target
    }

    /// Reorders activations of `shape` from NHWC to nChw16c (`toBlocked`) or back, with every compute thread.
    private func convertLayout(_ values: UnsafePointer<Float>, _ shape: [Int], toBlocked: Bool, into target: UnsafeMutablePointer<Float>) {
        precondition(shape.count == 4 && shape[3] % 16 == 0, "nChw16c needs [batch, height, width, channels / 16 * 16], got \(shape)")
        let dims = [shape[0], shape[3], shape[1], shape[2]]
        let (nhwc, blocked16) = (descriptor(dims, dnnl_nhwc), descriptor(dims, dnnl_nChw16c))
        let (from, to) = toBlocked ? (nhwc, blocked16) : (blocked16, nhwc)
        let key = dims + [toBlocked ? 1 : 0]
        let reorder: dnnl_primitive_t
        if let cached = layoutReorders[key] {
            reorder = cached
        } else {
            OpenMP.applyToCurrentThread()
            reorder = reorderPrimitive(from: from, to: to, toBlocked ? "NHWC -> nChw16c reorder" : "nChw16c -> NHWC reorder")
            layoutReorders[key] = reorder
        }
        reorderActivations(reorder, from: (from, UnsafeMutableRawPointer(mutating: values)), to: (to, UnsafeMutableRawPointer(target)))
    }

    // MARK: Passes, called with the lock held

    /// `roundedOutputGradient`: the bf16 copy of `outputGradient` if a pass already made it; set when this one does.
    /// `blockedOutputGradient`: likewise its copy in a blocked pass's layout.
    private func backwardDataPass(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                                  roundedOutputGradient: inout UnsafeMutableRawPointer?,
                                  blockedOutputGradient: inout BlockedCopy?,
                                  kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>,
                                  sourceInPlace: Bool = false, destinationInPlace: Bool = false) {
        let p = prepared(g, .backwardData, timingOn: (UnsafeMutableRawPointer(inputGradient), UnsafeMutableRawPointer(mutating: outputGradient)))
        let weights = kernelInKernelLayout(p, kernel: kernel)
        let diffDestination = outputGradientOperand(p, outputGradient, count: g.outputShape.reduce(1, *),
                                                    rounded: &roundedOutputGradient)
        perform(p, .backwardData, g, source: UnsafeMutableRawPointer(inputGradient), destination: diffDestination,
                weights: weights, bias: nil, blockedOutputGradient: &blockedOutputGradient,
                sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
    }

    private func backwardWeightsPass(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, roundedInput: BFloat16Copy?,
                                     outputGradient: UnsafePointer<Float>,
                                     roundedOutputGradient: inout UnsafeMutableRawPointer?,
                                     blockedOutputGradient: inout BlockedCopy?,
                                     kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?,
                                     sourceInPlace: Bool = false, destinationInPlace: Bool = false) {
        do {
            let p = prepared(g, .backwardWeights(bias: biasGradient != nil),
                             timingOn: (UnsafeMutableRawPointer(mutating: input), UnsafeMutableRawPointer(mutating: outputGradient)))
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
            perform(p, .backwardWeights(bias: biasGradient != nil), g, source: source, destination: diffDestination,
                    weights: freshKernel, bias: biasGradient == nil ? nil : freshBias, blockedOutputGradient: &blockedOutputGradient,
                    sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
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

    /// Where convolution time goes, summed over calls while `timing` is non-nil (the benchmark's
    /// `--breakdown` sets it to `Timing()` and reads it back after one step).
    public struct Timing: Sendable {
        /// In oneDNN's convolution primitives (every pass, every precision).
        public var kernelSeconds = 0.0
        public var kernelCalls = 0
        /// In the reorders of activations between NHWC and a blocked pass's layout.
        public var reorderSeconds = 0.0
        public var reorderCalls = 0
        public init() {}
    }

    public var timing: Timing? {
        get { lock.withLock { timingStore } }
        set { lock.withLock { timingStore = newValue } }
    }

    /// Which passes of `g`, as already prepared at the current precision and thread count, read
    /// the layer's input (or write its gradient) in nChw16c where it lies; false for passes not
    /// prepared yet. Lets a `Model` hand a blocked input only to layers it saves reorders in.
    public func takesBlockedInput(_ g: ConvolutionGeometry, bias: Bool, relu: Bool)
        -> (forward: Bool, backwardData: Bool, backwardWeights: Bool) {
        lock.withLock {
            func inPlace(_ pass: Pass) -> Bool {
                let key = Key(geometry: g, pass: pass, threads: ComputeThreads.count, precision: ConvolutionPrecision.current)
                return cache[key]?.blocked?.sourceIsBlocked16 == true
            }
            return (inPlace(.forward(bias: bias, relu: relu)), inPlace(.backwardData), inPlace(.backwardWeights(bias: bias)))
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

    /// Runs `p` on NHWC activations (in `p`'s operand type where the pass reads them). `source` is
    /// the input (forward, backward-weights: read) or the input gradient (backward-data: written);
    /// `destination` is the output (forward: written) or the output gradient (backward: read).
    /// `weights` and `bias` are the weights (gradients, for backward-weights) in `p`'s layout.
    /// A blocked pass reorders what it reads into blocked buffers first and what it writes back to
    /// NHWC after, using `blockedOutputGradient` if an earlier pass of the same call made it; an
    /// operand whose blocked layout holds NHWC's bytes (one channel) is used where it lies.
    ///
    /// `sourceInPlace` / `destinationInPlace`: that operand is (or is to be written) in the blocked
    /// pass's own layout, nChw16c (`BlockedActivations.sourceIsBlocked16`), where the pointer says:
    /// no buffer, no reorder.
    private func perform(_ p: Prepared, _ pass: Pass, _ g: ConvolutionGeometry,
                         source: UnsafeMutableRawPointer, destination: UnsafeMutableRawPointer,
                         weights: UnsafeMutableRawPointer, bias: UnsafeMutableRawPointer?,
                         blockedOutputGradient: inout BlockedCopy?,
                         sourceInPlace: Bool = false, destinationInPlace: Bool = false) {
        precondition((!sourceInPlace || p.blocked?.sourceIsBlocked16 == true)
                     && (!destinationInPlace || p.blocked?.destinationIsBlocked16 == true),
                     "an operand in place needs a blocked pass that reads and writes nChw16c")
        let nhwcSource = sourceDescriptor(g, pass == .backwardData ? dnnl_f32 : p.operandType)
        let nhwcDestination = destinationDescriptor(g, pass.isForward ? dnnl_f32 : p.operandType)
        var src = (descriptor: nhwcSource, pointer: source), dst = (descriptor: nhwcDestination, pointer: destination)
        if let b = p.blocked {
            if sourceInPlace || b.sourceIsNHWC {
                src = (b.source, source)
            } else {
                src = (b.source, blockedSourceBuffer.reserve(bytes: b.sourceBytes))
                if pass != .backwardData { reorderActivations(b.sourceReorder, from: (nhwcSource, source), to: src) }
            }
            if destinationInPlace || b.destinationIsNHWC {
                dst = (b.destination, destination)
            } else if pass.isForward {
                dst = (b.destination, blockedDestinationBuffer.reserve(bytes: b.destinationBytes))
            } else if let shared = blockedOutputGradient, dnnl_memory_desc_equal([shared.descriptor], [b.destination]) != 0 {
                dst = shared
            } else {
                dst = (b.destination, blockedDestinationBuffer.reserve(bytes: b.destinationBytes))
                reorderActivations(b.destinationReorder, from: (nhwcDestination, destination), to: dst)
                blockedOutputGradient = dst
            }
        }
        var arguments: [dnnl_exec_arg_t]
        switch pass {
        case .forward:
            arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: src.descriptor, pointer: src.pointer),
                         argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                         argument(Int32(DNNL_ARG_DST_0), descriptor: dst.descriptor, pointer: dst.pointer)]
            if let bias { arguments.append(argument(41, descriptor: biasDescriptor(g), pointer: bias)) }
        case .backwardData:
            arguments = [argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: dst.descriptor, pointer: dst.pointer),
                         argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                         argument(Int32(DNNL_ARG_DIFF_SRC_0), descriptor: src.descriptor, pointer: src.pointer)]
        case .backwardWeights:
            arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: src.descriptor, pointer: src.pointer),
                         argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: dst.descriptor, pointer: dst.pointer),
                         argument(Int32(DNNL_ARG_DIFF_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights)]
            if let bias { arguments.append(argument(169, descriptor: biasDescriptor(g), pointer: bias)) }
        }
        execute(p, arguments)
        if let b = p.blocked {
            if pass == .backwardData && !sourceInPlace && !b.sourceIsNHWC {
                reorderActivations(b.sourceReorder, from: src, to: (nhwcSource, source))
            }
            if pass.isForward && !destinationInPlace && !b.destinationIsNHWC {
                reorderActivations(b.destinationReorder, from: dst, to: (nhwcDestination, destination))
            }
        }
    }

    /// An activation reorder (tens of MB): with every compute thread, unlike weight reorders.
    private func reorderActivations(_ reorder: dnnl_primitive_t,
                                    from: (dnnl_memory_desc_t, UnsafeMutableRawPointer),
                                    to: (dnnl_memory_desc_t, UnsafeMutableRawPointer)) {
        OpenMP.applyToCurrentThread()
        timed(\.reorderSeconds, \.reorderCalls) { run(reorder, from: from, to: to) }
    }

    /// Runs body, adding its time and one call to `timing` if it is set.
    private func timed(_ seconds: WritableKeyPath<Timing, Double>, _ calls: WritableKeyPath<Timing, Int>, _ body: () -> Void) {
        guard timingStore != nil else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        timingStore![keyPath: seconds] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        timingStore![keyPath: calls] += 1
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
        timed(\.kernelSeconds, \.kernelCalls) {
            Self.check(dnnl_primitive_execute(p.primitive, stream, Int32(all.count), all), "executing a convolution")
            Self.check(dnnl_stream_wait(stream), "waiting for a convolution")
        }
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
    private func sourceDescriptor(_ g: ConvolutionGeometry, _ type: dnnl_data_type_t = dnnl_f32,
                                  _ tag: dnnl_format_tag_t = dnnl_nhwc) -> dnnl_memory_desc_t {
        descriptor([g.batch, g.inputChannels, g.inputHeight, g.inputWidth], tag, type: type)
    }

    // y: [batch, outputHeight, outputWidth, outputChannels]
    private func destinationDescriptor(_ g: ConvolutionGeometry, _ type: dnnl_data_type_t = dnnl_f32,
                                       _ tag: dnnl_format_tag_t = dnnl_nhwc) -> dnnl_memory_desc_t {
        descriptor([g.batch, g.outputChannels, g.outputHeight, g.outputWidth], tag, type: type)
    }

    private func weightsDescriptor(_ g: ConvolutionGeometry, _ tag: dnnl_format_tag_t,
                                   _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        descriptor([g.outputChannels, g.inputChannels, g.kernelHeight, g.kernelWidth], tag, type: type)
    }

    private func biasDescriptor(_ g: ConvolutionGeometry) -> dnnl_memory_desc_t {
        descriptor([g.outputChannels], dnnl_x)
    }

    // MARK: Primitive creation (once per key)

    /// `timingOn`: the NHWC activations of the call being served (input or input gradient, output
    /// or output gradient), which `fastest` may time candidates on; each candidate writes only what
    /// the call itself then overwrites. Without them it allocates its own.
    private func prepared(_ g: ConvolutionGeometry, _ pass: Pass,
                          timingOn activations: (source: UnsafeMutableRawPointer, destination: UnsafeMutableRawPointer)? = nil) -> Prepared {
        let key = Key(geometry: g, pass: pass, threads: ComputeThreads.count, precision: ConvolutionPrecision.current)
        if let hit = cache[key] { return hit }
        OpenMP.applyToCurrentThread()
        // The candidates the precision allows, where oneDNN has them; fp32 direct always exists.
        let allowed = key.precision == .fast ? key.candidates : []
        var candidates: [(kind: FastModeCandidates, pass: Prepared)] = []
        if key.precision == .bf16 || allowed.contains(.bf16), let bf16 = make(g, pass, operandType: dnnl_bf16) {
            if bf16.implementation.hasPrefix("ref") {
                // oneDNN's reference loops are orders of magnitude slower than fp32 JIT.
                destroy(bf16)
            } else {
                candidates.append((.bf16, bf16))
            }
        }
        // `.winograd` leaves single-channel inputs to direct kernels: oneDNN's Winograd pads them to 16
        // channels (on the story U-Net's first layer its forward took 37 ms, direct 4.8).
        if (key.precision == .winograd && g.inputChannels > 1) || allowed.contains(.winograd),
           let winograd = make(g, pass, operandType: dnnl_f32, algorithm: dnnl_convolution_winograd) {
            candidates.append((.winograd, winograd))
        }
        if allowed.contains(.directBlocked), let direct = make(g, pass, operandType: dnnl_f32, activations: dnnl_format_tag_any) {
            // Direct kernels in the layouts oneDNN prefers (nChw16c on AVX-512), where those are not NHWC.
            if direct.blocked.map({ $0.sourceIsNHWC && $0.destinationIsNHWC }) ?? true {
                destroy(direct)
            } else {
                candidates.append((.directBlocked, direct))
            }
        }
        if allowed.contains(.direct) || candidates.isEmpty {
            candidates.append((.direct, make(g, pass, operandType: dnnl_f32)!))
        }
        var winner = 0
        if candidates.count > 1 {
            // Only `.fast` offers a choice. A stored one is taken as it is; a new one is stored.
            let names = candidates.map { $0.kind.name }
            winner = FastModeChoices.choose("convolution \(g), \(pass), \(key.threads) threads, among \(names.joined(separator: ", "))",
                                            among: names, in: ConvolutionPrecision.fastModeChoices) {
                fastest(candidates.map(\.pass), g, pass, activations)
            }
            for (i, candidate) in candidates.enumerated() where i != winner { destroy(candidate.pass) }
        }
        let result = candidates[winner].pass
        cache[key] = result
        return result
    }

    /// How fast each of the ready passes runs here, in nanoseconds: one untimed run each, then one
    /// timed run each, and a second when the two fastest are within 30 % (the better of the two counts).
    /// A blocked pass is timed without the reorders of operands it takes in nChw16c, since a
    /// `Model` hands those over blocked between such passes (`ActivationLayout.blocked16`); with
    /// the reorders of any others. For the same reason an NHWC pass, when blocked ones compete, is
    /// charged one timed reorder per operand whose channels fill blocks of 16. A bf16 pass must win by
    /// `ConvolutionPrecision.fastModeBFloat16Margin` (its time is divided by it), since the timing
    /// leaves out the rounding of its operands.
    ///
    /// The runs use the call's own activations when given (a bf16 candidate reads them as bf16
    /// bits: the values do not matter, only the time), so timing needs no activation-sized memory
    /// beyond what training holds anyway; weights and bias are zeroed buffers of their own.
    private func fastest(_ candidates: [Prepared], _ g: ConvolutionGeometry, _ pass: Pass,
                         _ activations: (source: UnsafeMutableRawPointer, destination: UnsafeMutableRawPointer)?) -> [Double] {
        let activationBytes = activations == nil ? (g.inputShape.reduce(1, *) + g.outputShape.reduce(1, *)) * 4 : 0
        let weightsBytes = candidates.map(\.weightsBytes).max()!, biasBytes = g.outputChannels * 4
        let total = activationBytes + weightsBytes + biasBytes
        let memory = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 64)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        let (weights, bias) = (memory, memory + weightsBytes)
        let (input, output) = activations ?? (bias + biasBytes, bias + biasBytes + g.inputShape.reduce(1, *) * 4)
        let hasBias = switch pass {
        case let .forward(bias, _), let .backwardWeights(bias): bias
        case .backwardData: false
        }
        func time(_ p: Prepared) -> Double {
            var blockedOutputGradient: BlockedCopy?
            let start = DispatchTime.now().uptimeNanoseconds
            perform(p, pass, g, source: input, destination: output, weights: weights, bias: hasBias ? bias : nil,
                    blockedOutputGradient: &blockedOutputGradient,
                    sourceInPlace: p.blocked?.sourceIsBlocked16 == true, destinationInPlace: p.blocked?.destinationIsBlocked16 == true)
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start)
            return p.precision == .bf16 ? elapsed / ConvolutionPrecision.fastModeBFloat16Margin : elapsed
        }
        for p in candidates { _ = time(p) }
        // A pass that reads or writes NHWC where a blocked one would not is charged the reorders it
        // then costs between blocked neighbours: one of each operand with channels a multiple of 16.
        var reorderCost = (source: 0.0, destination: 0.0)
        if candidates.contains(where: { $0.blocked != nil }) && candidates.contains(where: { $0.blocked == nil }) {
            func reorderTime(_ values: UnsafeMutableRawPointer, _ shape: [Int], _ buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> Double {
                guard shape[3] % 16 == 0 else { return 0 }
                let target = self[keyPath: buffer].reserve(bytes: shape.reduce(1, *) * 4).assumingMemoryBound(to: Float.self)
                let from = values.assumingMemoryBound(to: Float.self)
                convertLayout(from, shape, toBlocked: true, into: target)  // creates the reorder: untimed
                let start = DispatchTime.now().uptimeNanoseconds
                convertLayout(from, shape, toBlocked: true, into: target)
                return Double(DispatchTime.now().uptimeNanoseconds - start)
            }
            reorderCost = (reorderTime(input, g.inputShape, \.blockedSourceBuffer),
                           reorderTime(output, g.outputShape, \.blockedDestinationBuffer))
        }
        func charge(_ p: Prepared) -> Double {
            guard let b = p.blocked else { return reorderCost.source + reorderCost.destination }
            return (b.sourceIsBlocked16 || b.sourceIsNHWC ? 0 : reorderCost.source)
                + (b.destinationIsBlocked16 || b.destinationIsNHWC ? 0 : reorderCost.destination)
        }
        var best = [Double](repeating: .infinity, count: candidates.count)
        for round in 0..<2 {
            let sorted = best.sorted()
            if round == 1 && sorted[1] > 1.3 * sorted[0] { break }
            for (i, p) in candidates.enumerated() { best[i] = min(best[i], time(p) + charge(p)) }
        }
        return best
    }

    private func destroy(_ p: Prepared) {
        if let reorder = p.weightsReorder { dnnl_primitive_destroy(reorder) }
        if let blocked = p.blocked {
            dnnl_primitive_destroy(blocked.sourceReorder)
            dnnl_primitive_destroy(blocked.destinationReorder)
        }
        dnnl_primitive_destroy(p.primitive)
        dnnl_primitive_desc_destroy(p.primitiveDescriptor)
    }

    /// Activations are NHWC for direct kernels unless asked otherwise; Winograd ones choose their own (blocked) layout.
    private func activationTag(_ algorithm: dnnl_alg_kind_t) -> dnnl_format_tag_t {
        algorithm == dnnl_convolution_winograd ? dnnl_format_tag_any : dnnl_nhwc
    }

    /// `operandType` is the type of what the kernel reads (input, weights, output gradient);
    /// what it writes is always fp32.
    private func forwardDescriptor(_ g: ConvolutionGeometry, bias: Bool, operandType: dnnl_data_type_t,
                                   algorithm: dnnl_alg_kind_t, activations: dnnl_format_tag_t) -> dnnl_convolution_desc_t {
        var source = sourceDescriptor(g, operandType, activations)
        var destination = destinationDescriptor(g, dnnl_f32, activations)
        var weights = weightsDescriptor(g, dnnl_format_tag_any, operandType)
        var biasMD = biasDescriptor(g)
        var d = dnnl_convolution_desc_t()
        let status = withUnsafePointer(to: &biasMD) { biasPointer in
            dnnl_convolution_forward_desc_init(
                &d, dnnl_forward_training, algorithm, &source, &weights, bias ? biasPointer : nil,
                &destination, strides(g), [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)])
        }
        Self.check(status, "describing \(g)")
        return d
    }

    private func strides(_ g: ConvolutionGeometry) -> [Int64] { [Int64(g.stride), Int64(g.stride)] }

    /// nil if oneDNN has no kernel for this shape in bf16, with Winograd or in the layouts asked for
    /// (fp32 direct in NHWC always has one).
    private func make(_ g: ConvolutionGeometry, _ pass: Pass, operandType: dnnl_data_type_t,
                      algorithm: dnnl_alg_kind_t = dnnl_convolution_direct, activations: dnnl_format_tag_t? = nil) -> Prepared? {
        let activations = activations ?? activationTag(algorithm)
        let optional = operandType == dnnl_bf16 || activations != dnnl_nhwc
        func created(_ status: dnnl_status_t, _ what: @autoclosure () -> String) -> Bool {
            if status == dnnl_unimplemented && optional { return false }
            Self.check(status, what())
            return true
        }
        var attributes: dnnl_primitive_attr_t?
        Self.check(dnnl_primitive_attr_create(&attributes), "creating attributes")
        defer { dnnl_primitive_attr_destroy(attributes) }
        Self.check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "scratchpad mode")

        var descriptor: dnnl_primitive_desc_t?
        let weightsQuery: dnnl_query_t
        // The activation operands' queries: src or diff_src, dst or diff_dst.
        let sourceQuery: dnnl_query_t, destinationQuery: dnnl_query_t
        switch pass {
        case let .forward(bias, relu):
            if relu {
                var postOps: dnnl_post_ops_t?
                Self.check(dnnl_post_ops_create(&postOps), "creating post-ops")
                Self.check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0), "appending ReLU")
                Self.check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "setting post-ops")
                dnnl_post_ops_destroy(postOps)
            }
            var d = forwardDescriptor(g, bias: bias, operandType: operandType, algorithm: algorithm, activations: activations)
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, nil), "choosing a forward kernel for \(g)")
            else { return nil }
            (weightsQuery, sourceQuery, destinationQuery) = (dnnl_query_weights_md, dnnl_query_src_md, dnnl_query_dst_md)
        case .backwardData:
            guard let hint = forwardHint(g, operandType: operandType, algorithm: algorithm, activations: activations) else { return nil }
            defer { dnnl_primitive_desc_destroy(hint) }
            var diffSource = sourceDescriptor(g, dnnl_f32, activations)
            var diffDestination = destinationDescriptor(g, operandType, activations)
            var weights = weightsDescriptor(g, dnnl_format_tag_any, operandType)
            var d = dnnl_convolution_desc_t()
            Self.check(dnnl_convolution_backward_data_desc_init(
                &d, algorithm, &diffSource, &weights, &diffDestination, strides(g),
                [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)]), "describing backward-data \(g)")
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, hint), "choosing a backward-data kernel for \(g)")
            else { return nil }
            (weightsQuery, sourceQuery, destinationQuery) = (dnnl_query_weights_md, dnnl_query_diff_src_md, dnnl_query_diff_dst_md)
        case let .backwardWeights(bias):
            guard let hint = forwardHint(g, operandType: operandType, algorithm: algorithm, activations: activations) else { return nil }
            defer { dnnl_primitive_desc_destroy(hint) }
            var source = sourceDescriptor(g, operandType, activations)
            var diffDestination = destinationDescriptor(g, operandType, activations)
            var diffWeights = weightsDescriptor(g, dnnl_format_tag_any)
            var diffBias = biasDescriptor(g)
            var d = dnnl_convolution_desc_t()
            let status = withUnsafePointer(to: &diffBias) { biasPointer in
                dnnl_convolution_backward_weights_desc_init(
                    &d, algorithm, &source, &diffWeights, bias ? biasPointer : nil, &diffDestination,
                    strides(g), [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)])
            }
            Self.check(status, "describing backward-weights \(g)")
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, hint), "choosing a backward-weights kernel for \(g)")
            else { return nil }
            (weightsQuery, sourceQuery, destinationQuery) = (dnnl_query_diff_weights_md, dnnl_query_src_md, dnnl_query_diff_dst_md)
        }
        var primitive: dnnl_primitive_t?
        Self.check(dnnl_primitive_create(&primitive, descriptor), "creating a primitive for \(g)")

        var chosen = dnnl_primitive_desc_query_md(descriptor, weightsQuery, 0)!.pointee
        var keras = weightsDescriptor(g, dnnl_hwio)
        var reorder: dnnl_primitive_t?
        if dnnl_memory_desc_equal(&chosen, &keras) == 0 {
            if case .backwardWeights = pass {
                reorder = reorderPrimitive(from: chosen, to: keras, "weights reorder")
            } else {
                reorder = reorderPrimitive(from: keras, to: chosen, "weights reorder")
            }
        }
        var blocked: BlockedActivations?
        if activations != dnnl_nhwc {
            let source = dnnl_primitive_desc_query_md(descriptor, sourceQuery, 0)!.pointee
            let destination = dnnl_primitive_desc_query_md(descriptor, destinationQuery, 0)!.pointee
            let nhwcSource = sourceDescriptor(g), nhwcDestination = destinationDescriptor(g)
            var (source16, destination16) = (sourceDescriptor(g, dnnl_f32, dnnl_nChw16c), destinationDescriptor(g, dnnl_f32, dnnl_nChw16c))
            var (chosenSource, chosenDestination) = (source, destination)
            /// Whether a chosen layout is NHWC's bytes: NHWC itself, or plain NCHW of one channel.
            func isNHWC(_ chosen: dnnl_memory_desc_t, channels: Int, _ descriptor: (dnnl_format_tag_t) -> dnnl_memory_desc_t) -> Bool {
                var (chosen, nhwc, nchw) = (chosen, descriptor(dnnl_nhwc), descriptor(dnnl_nchw))
                return dnnl_memory_desc_equal(&chosen, &nhwc) != 0 || (channels == 1 && dnnl_memory_desc_equal(&chosen, &nchw) != 0)
            }
            blocked = BlockedActivations(
                source: source, destination: destination,
                sourceReorder: pass == .backwardData
                    ? reorderPrimitive(from: source, to: nhwcSource, "blocked -> NHWC input-gradient reorder")
                    : reorderPrimitive(from: nhwcSource, to: source, "NHWC -> blocked input reorder"),
                destinationReorder: pass.isForward
                    ? reorderPrimitive(from: destination, to: nhwcDestination, "blocked -> NHWC output reorder")
                    : reorderPrimitive(from: nhwcDestination, to: destination, "NHWC -> blocked output-gradient reorder"),
                sourceIsBlocked16: g.inputChannels % 16 == 0 && dnnl_memory_desc_equal(&chosenSource, &source16) != 0,
                destinationIsBlocked16: g.outputChannels % 16 == 0 && dnnl_memory_desc_equal(&chosenDestination, &destination16) != 0,
                sourceIsNHWC: isNHWC(source, channels: g.inputChannels) { sourceDescriptor(g, dnnl_f32, $0) },
                destinationIsNHWC: isNHWC(destination, channels: g.outputChannels) { destinationDescriptor(g, dnnl_f32, $0) })
        }
        let scratchpadBytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(descriptor, dnnl_query_scratchpad_md, 0))
        var name: UnsafePointer<CChar>?
        dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name)
        return Prepared(precision: operandType == dnnl_bf16 ? .bf16 : .fp32, primitiveDescriptor: descriptor!, primitive: primitive!,
                        weightsDescriptor: chosen, kerasWeightsDescriptor: keras, weightsReorder: reorder,
                        weightsBytes: dnnl_memory_desc_get_size(&chosen), scratchpadBytes: scratchpadBytes,
                        implementation: (name.map { String(cString: $0) } ?? "?")
                            + (blocked != nil && algorithm == dnnl_convolution_direct ? " (blocked)" : ""),
                        blocked: blocked)
    }

    private func reorderPrimitive(from: dnnl_memory_desc_t, to: dnnl_memory_desc_t, _ what: String) -> dnnl_primitive_t {
        var (from, to) = (from, to)
        var reorderDescriptor: dnnl_primitive_desc_t?
        Self.check(dnnl_reorder_primitive_desc_create(&reorderDescriptor, &from, engine, &to, engine, nil), what)
        defer { dnnl_primitive_desc_destroy(reorderDescriptor) }
        var reorder: dnnl_primitive_t?
        Self.check(dnnl_primitive_create(&reorder, reorderDescriptor), "creating a \(what)")
        return reorder!
    }

    private func forwardHint(_ g: ConvolutionGeometry, operandType: dnnl_data_type_t, algorithm: dnnl_alg_kind_t,
                             activations: dnnl_format_tag_t) -> dnnl_primitive_desc_t? {
        var d = forwardDescriptor(g, bias: true, operandType: operandType, algorithm: algorithm, activations: activations)
        var hint: dnnl_primitive_desc_t?
        let status = dnnl_primitive_desc_create(&hint, &d, nil, engine, nil)
        if status == dnnl_unimplemented && (operandType == dnnl_bf16 || activations != dnnl_nhwc) { return nil }
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
