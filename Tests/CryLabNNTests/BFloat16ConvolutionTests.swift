import CryLabNN
import Foundation
import Testing

/// `ConvolutionPrecision.bf16`: oneDNN convolutions on bfloat16 operands with fp32 accumulation.
///
/// Every test scopes the precision to its own task with `withPrecision`, so the fp32 tests that run
/// in parallel keep fp32.
@Suite struct BFloat16ConvolutionTests {
    /// Whether the CPU has AVX512-BF16 instructions; without them oneDNN emulates bf16 or has no bf16 kernel.
    static let cpuHasBF16: Bool = {
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return flags.contains("avx512_bf16")
    }()

    /// bf16 keeps 8 significant bits, so each operand is off by up to 2^-9 ≈ 2e-3 relative; sums of
    /// a few hundred products with independent rounding stay well inside 2e-2 of the largest result.
    static let bf16Tolerance = 2e-2

    @Test(arguments: ConvolutionCrossCheckTests.geometries)
    func bf16MatchesReferenceWithinBF16Tolerance(_ g: ConvolutionGeometry) {
        ConvolutionPrecision.withPrecision(.bf16) {
            ConvolutionCrossCheckTests().compare(DNNLConvolution.shared, g, tolerance: Self.bf16Tolerance)
        }
    }

    @Test(.enabled(if: cpuHasBF16, "this CPU lacks avx512_bf16 (see /proc/cpuinfo): oneDNN has no native bf16 kernels here"))
    func bf16SelectsBF16Kernels() {
        let g = ConvolutionGeometry(batch: 2, inputHeight: 16, inputWidth: 16, inputChannels: 16, outputChannels: 32,
                                    kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
        let bf16 = ConvolutionPrecision.withPrecision(.bf16) { DNNLConvolution.shared.implementationNames(g) }
        let fp32 = ConvolutionPrecision.withPrecision(.fp32) { DNNLConvolution.shared.implementationNames(g) }
        print("oneDNN implementations for \(g): bf16 \(bf16), fp32 \(fp32)")
        #expect(bf16.allSatisfy { $0.contains("bf16") }, "expected bf16 kernels for forward, backward-data, backward-weights, got \(bf16)")
        #expect(fp32.allSatisfy { !$0.contains("bf16") }, "fp32 must not pick bf16 kernels, got \(fp32)")
    }

    @Test func precisionIsScopedToTheTask() {
        #expect(ConvolutionPrecision.current == .fp32)
        ConvolutionPrecision.withPrecision(.bf16) { #expect(ConvolutionPrecision.current == .bf16) }
        #expect(ConvolutionPrecision.current == .fp32)
    }

    /// A small U-Net trained for 40 Adam steps from the same weights on the same data in fp32 and in
    /// bf16 ends at nearly the same loss: bf16 rounding must not change where training goes.
    @Test func bf16TrainingFollowsFP32() throws {
        let configuration = UNetConfiguration(inputShape: [32, 32, 1], widths: [8, 16, 32], seed: 7)
        // Targets: smooth blobs; inputs: the blobs plus fixed noise (a denoising task).
        var generator = SeededGenerator(seed: 11)
        let batch = 8, side = 32
        var clean = [Float](), noisy = [Float]()
        for n in 0..<batch {
            let cx = Float(8 + (n * 5) % 16), cy = Float(10 + (n * 7) % 12)
            for y in 0..<side { for x in 0..<side {
                let d2 = (Float(x) - cx) * (Float(x) - cx) + (Float(y) - cy) * (Float(y) - cy)
                let value = exp(-d2 / 40)
                clean.append(value)
                noisy.append(value + generator.nextFloat(in: -0.2, 0.2))
            } }
        }
        let input = Tensor(shape: [batch, side, side, 1], values: noisy)
        let target = Tensor(shape: [batch, side, side, 1], values: clean)

        func train(_ precision: ConvolutionPrecision) throws -> [Double] {
            try ConvolutionPrecision.withPrecision(precision) {
                let model = try Model.uNet(configuration)
                let optimizer = Adam(schedule: .constant(3e-3))
                return (0..<40).map { _ in
                    model.trainingStep(input: input, optimizer: optimizer) { meanSquaredError(prediction: $0, target: target) }
                }
            }
        }
        let fp32 = try train(.fp32), bf16 = try train(.bf16)
        let difference = abs(bf16.last! - fp32.last!) / fp32.last!
        print("U-Net 32x32 (8-16-32), 40 Adam steps: loss fp32 \(fp32.first!) -> \(fp32.last!), bf16 \(bf16.first!) -> \(bf16.last!), relative difference \(difference)")
        #expect(fp32.last! < 0.5 * fp32.first!, "fp32 training should at least halve the loss")
        #expect(difference < 0.05, "final losses should agree within 5%: fp32 \(fp32.last!), bf16 \(bf16.last!)")
    }
}
