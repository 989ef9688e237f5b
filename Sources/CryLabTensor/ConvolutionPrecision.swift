/// The arithmetic oneDNN convolutions use. Parameters, gradients and the optimiser stay fp32 either way.
///
/// - `fp32`: the default; results match the reference kernels to ~1e-6.
/// - `bf16`: inputs, weights and output gradients are rounded to bfloat16 (8 mantissa bits) just
///   before each oneDNN convolution; products are accumulated and returned in fp32. About 2 decimal
///   digits per operand, so single results differ from fp32 by ~1e-2 relative. Fast only on CPUs
///   with AVX512-BF16 (`avx512_bf16` in /proc/cpuinfo); elsewhere oneDNN emulates it.
///
/// - `winograd`: fp32, but each pass of a 3x3 stride-1 convolution runs through oneDNN's Winograd
///   F(4x4, 3x3) kernel wherever oneDNN offers one (AVX-512 CPUs): 4x4 output tiles from 36
///   products each instead of 144, with the activations reordered between NHWC and oneDNN's
///   blocked layout around the call. The transforms cost some accuracy (tests allow 1e-4 relative,
///   against 1e-5 for direct fp32). Passes oneDNN declines, and convolutions of one input channel
///   (which its Winograd kernels pad to 16), run direct fp32.
///
/// - `fast`: each oneDNN pass (forward, backward-data, backward-weights of each shape) runs in
///   whichever of direct fp32 (NHWC, or oneDNN's preferred blocked layout), direct bf16 and fp32
///   Winograd was fastest when they were timed on this machine, once, when the shape was first
///   seen (`FastModeCandidates`; a pass reading or writing NHWC is charged the reorders it would
///   cost between blocked neighbours); each transposed convolution likewise in fp32 or bf16. On a CPU where bf16 kernels are slower than fp32 ones
///   (measured: some AVX512-BF16 hosts run them at half the fp32 speed) bf16 loses everywhere;
///   where they are faster it wins. Results are those of the kernel chosen for each pass. The
///   choices can be kept in a file for later processes (`FastModeChoices`; `crylab pretrain` and
///   `finetune` keep them in ~/.cache/crylab), which then skip the timing and run the same kernels.
///   A model then also times its whole first training step (and first inference pass) with those
///   per-pass choices against the same step in bf16, Winograd and fp32 throughout, and runs the
///   fastest of the four (`Model.settleWholeStep`; kept in the same file), so `fast` is not slower
///   than the best single precision by more than the trial's noise.
///
/// Transposed convolutions run their matrix products in bf16 too; 1x1 stride-1 convolutions (one
/// sgemm) still run in fp32. In inference (`bf16` and `fast`), Dense layers read their kernel as a
/// bf16 copy they keep until the kernel changes; training-mode Dense products stay fp32.
public enum ConvolutionPrecision: String, Sendable, CaseIterable {
    case fp32, bf16, winograd, fast

    /// In `fast`, bf16 is kept only if its timed run took less than this share of fp32's: it
    /// also pays for rounding its operands, which the timing leaves out.
    public static let fastModeBFloat16Margin = 0.9
}

/// The kinds of oneDNN convolution pass `ConvolutionPrecision.fast` chooses among.
public struct FastModeCandidates: OptionSet, Hashable, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Direct, bf16 operands, NHWC.
    public static let bf16 = FastModeCandidates(rawValue: 1)
    /// Winograd F(4x4, 3x3), fp32, nChw16c.
    public static let winograd = FastModeCandidates(rawValue: 2)
    /// Direct, fp32, NHWC.
    public static let direct = FastModeCandidates(rawValue: 4)
    /// Direct, fp32, in the layouts oneDNN prefers for the shape where those are not NHWC (nChw16c
    /// on AVX-512): dearer than NHWC alone in places, but no reorders between blocked neighbours.
    public static let directBlocked = FastModeCandidates(rawValue: 8)
    public static let all: FastModeCandidates = [.bf16, .winograd, .direct, .directBlocked]

    /// Each kind with its name (the benchmark's `--fast-without` and `FastModeChoices` use them).
    private static let kinds: [(kind: FastModeCandidates, name: String)] =
        [(.bf16, "bf16"), (.winograd, "winograd"), (.direct, "direct"), (.directBlocked, "direct-blocked")]

    /// The names of the kinds in this set, in a fixed order.
    public var names: [String] { Self.kinds.filter { contains($0.kind) }.map(\.name) }

    /// The kind called `name`, one of `FastModeCandidates.all.names`; nil for any other name.
    public init?(name: String) {
        guard let found = Self.kinds.first(where: { $0.name == name }) else { return nil }
        self = found.kind
    }

    /// The name of a single kind.
    public var name: String { names.joined(separator: "+") }
}
