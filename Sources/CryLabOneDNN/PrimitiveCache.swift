import CDNNL
import CryLabTensor
import Foundation

extension DNNLConvolution {
    /// The candidates part of a cache key: the settings' in `.fast`, else all (unused).
    var keyCandidates: FastModeCandidates { precision == .fast ? fastModeCandidates : .all }

    enum Pass: Hashable {
        case forward(bias: Bool, relu: Bool)
        case backwardData
        case backwardWeights(bias: Bool)

        var isForward: Bool { if case .forward = self { true } else { false } }
    }

    /// An output gradient already reordered into a blocked pass's layout, shared by the two
    /// backward passes of one call.
    typealias BlockedCopy = (descriptor: dnnl_memory_desc_t, pointer: UnsafeMutableRawPointer)

    struct Key: Hashable {
        let geometry: ConvolutionGeometry
        let pass: Pass
        let threads: Int
        let precision: ConvolutionPrecision
        let candidates: FastModeCandidates
    }

    /// Blocked passes read and write oneDNN's layouts (nChw16c; plain NCHW for one channel), not NHWC: the layouts
    /// of one pass's two activation operands, and the reorders between them and NHWC.
    struct BlockedActivations {
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
    final class Prepared {
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

    /// `timingOn`: the NHWC activations of the call being served (input or input gradient, output
    /// or output gradient), which `fastest` may time candidates on; each candidate writes only what
    /// the call itself then overwrites. Without them it allocates its own.
    func prepared(_ g: ConvolutionGeometry, _ pass: Pass,
                          timingOn activations: (source: UnsafeMutableRawPointer, destination: UnsafeMutableRawPointer)? = nil) -> Prepared {
        let key = Key(geometry: g, pass: pass, threads: threads, precision: precision, candidates: keyCandidates)
        if let hit = cache[key] { return hit }
        OpenMP.apply(threads: threads)
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
                                            among: names, in: fastModeChoices) {
                fastest(candidates.map(\.pass), g, pass, activations)
            }
            for (i, candidate) in candidates.enumerated() where i != winner { destroy(candidate.pass) }
        }
        let result = candidates[winner].pass
        cache[key] = result
        return result
    }

    func destroy(_ p: Prepared) {
        if let reorder = p.weightsReorder { dnnl_primitive_destroy(reorder) }
        if let blocked = p.blocked {
            dnnl_primitive_destroy(blocked.sourceReorder)
            dnnl_primitive_destroy(blocked.destinationReorder)
        }
        dnnl_primitive_destroy(p.primitive)
        dnnl_primitive_desc_destroy(p.primitiveDescriptor)
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

    /// Which passes of `g`, as already prepared at the current precision and thread count, read
    /// the layer's input (or write its gradient) in nChw16c where it lies; false for passes not
    /// prepared yet. Lets a `Model` hand a blocked input only to layers it saves reorders in.
    public func takesBlockedInput(_ g: ConvolutionGeometry, bias: Bool, relu: Bool)
        -> (forward: Bool, backwardData: Bool, backwardWeights: Bool) {
        lock.withLock {
            func inPlace(_ pass: Pass) -> Bool {
                let key = Key(geometry: g, pass: pass, threads: threads, precision: precision, candidates: keyCandidates)
                return cache[key]?.blocked?.sourceIsBlocked16 == true
            }
            return (inPlace(.forward(bias: bias, relu: relu)), inPlace(.backwardData), inPlace(.backwardWeights(bias: bias)))
        }
    }

    /// Number of cached primitives (tests check that repeated shapes reuse them).
    public var cachedPrimitiveCount: Int { lock.withLock { cache.count } }
}
