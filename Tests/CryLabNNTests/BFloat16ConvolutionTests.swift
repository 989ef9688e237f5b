import CryLabNN
import CryLabOneDNN
import Foundation
import Testing

/// `ConvolutionPrecision.bf16`: oneDNN convolutions on bfloat16 operands with fp32 accumulation.
///
/// Every test computes with runtimes or contexts of its own precision, so the fp32 tests that run
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
        ConvolutionCrossCheckTests().compare(oneDNN(.bf16), g, tolerance: Self.bf16Tolerance)
    }

    @Test(.enabled(if: cpuHasBF16, "this CPU lacks avx512_bf16 (see /proc/cpuinfo): oneDNN has no native bf16 kernels here"))
    func bf16SelectsBF16Kernels() {
        let g = ConvolutionGeometry(batch: 2, inputHeight: 16, inputWidth: 16, inputChannels: 16, outputChannels: 32,
                                    kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
        let bf16 = oneDNN(.bf16).implementationNames(g)
        let fp32 = oneDNN(.fp32).implementationNames(g)
        print("oneDNN implementations for \(g): bf16 \(bf16), fp32 \(fp32)")
        #expect(bf16.allSatisfy { $0.contains("bf16") }, "expected bf16 kernels for forward, backward-data, backward-weights, got \(bf16)")
        #expect(fp32.allSatisfy { !$0.contains("bf16") }, "fp32 must not pick bf16 kernels, got \(fp32)")
    }

    /// The fast mode runs every pass in direct fp32 (NHWC or blocked), direct bf16 or fp32 Winograd,
    /// whichever it timed fastest: each result must be bit for bit the one of the precision (or,
    /// for Winograd and blocked direct kernels, of the fast mode pinned to that kind) whose kernel
    /// it reports.
    @Test(arguments: ConvolutionCrossCheckTests.geometries)
    func fastRunsEachPassInTheChosenPrecision(_ g: ConvolutionGeometry) {
        let x = randomTensor(g.inputShape, seed: 31), kernel = randomTensor(g.kernelShape, seed: 32, scale: 0.3)
        let bias = randomTensor([g.outputChannels], seed: 33), dy = randomTensor(g.outputShape, seed: 34)
        func run(_ precision: ConvolutionPrecision, candidates: FastModeCandidates = .all) -> (results: [[Float]], names: [String]) {
            var y = Tensor(zeros: g.outputShape), dx = Tensor(zeros: g.inputShape)
            var dk = Tensor(zeros: g.kernelShape), db = Tensor(zeros: [g.outputChannels])
            let dnnl = oneDNN(precision, candidates: candidates)
            dnnl.forward(g, input: x.values, kernel: kernel.values, bias: bias.values, fuseReLU: true, output: &y.values)
            dnnl.backwardData(g, outputGradient: dy.values, kernel: kernel.values, inputGradient: &dx.values)
            dnnl.backwardWeights(g, input: x.values, outputGradient: dy.values, kernelGradient: &dk.values, biasGradient: &db.values)
            return ([y.values, dx.values, dk.values + db.values], dnnl.implementationNames(g))
        }
        let fp32 = run(.fp32), bf16 = run(.bf16), fast = run(.fast)
        // The Winograd and blocked direct references: the fast mode pinned to each kind. (`.winograd`
        // itself leaves one-channel inputs to direct kernels, where the fast mode may still time Winograd fastest.)
        let winograd = run(.fast, candidates: .winograd)
        let directBlocked = run(.fast, candidates: .directBlocked)
        print("fast mode for \(g): \(fast.names) (fp32 \(fp32.names), bf16 \(bf16.names), winograd \(winograd.names), "
              + "direct blocked \(directBlocked.names))")
        for pass in 0..<3 {
            let chosen = [fp32, bf16, winograd, directBlocked].first { $0.names[pass] == fast.names[pass] }
            #expect(chosen != nil, "pass \(pass): fast chose \(fast.names[pass]), none of the fp32, bf16, Winograd or blocked direct kernels")
            let same = fast.results[pass] == chosen?.results[pass]
            #expect(same, "pass \(pass): fast reports \(fast.names[pass]) but its result differs from that precision's")
        }
    }

    /// The combined backward (the output gradient rounded to bf16 once for both passes) against the
    /// reference; in fp32 it must equal the two separate passes bit for bit.
    @Test(arguments: [ConvolutionPrecision.fp32, .bf16])
    func combinedBackwardMatchesSeparatePasses(_ precision: ConvolutionPrecision) {
        let g = ConvolutionCrossCheckTests.geometries[1]
        let x = randomTensor(g.inputShape, seed: 1), kernel = randomTensor(g.kernelShape, seed: 2, scale: 0.3)
        let dy = randomTensor(g.outputShape, seed: 4)
        let startKernel = randomTensor(g.kernelShape, seed: 5), startBias = randomTensor([g.outputChannels], seed: 6)
        func gradients(_ kernels: any ConvolutionKernels, combined: Bool) -> (dx: [Float], dk: [Float], db: [Float]) {
            var dx = Tensor(zeros: g.inputShape), dk = startKernel, db = startBias
            if combined {
                kernels.backward(g, input: x.values, outputGradient: dy.values, kernel: kernel.values,
                                 kernelGradient: &dk.values, biasGradient: &db.values, inputGradient: &dx.values)
            } else {
                kernels.backwardWeights(g, input: x.values, outputGradient: dy.values, kernelGradient: &dk.values, biasGradient: &db.values)
                kernels.backwardData(g, outputGradient: dy.values, kernel: kernel.values, inputGradient: &dx.values)
            }
            return (dx.values, dk.values, db.values)
        }
        let dnnl = oneDNN(precision)
        let combined = gradients(dnnl, combined: true)
        let separate = gradients(dnnl, combined: false)
        let reference = gradients(reference, combined: false)
        let errors = [relativeError(combined.dx, reference.dx), relativeError(combined.dk, reference.dk), relativeError(combined.db, reference.db)]
        print("\(precision) combined backward vs reference: relative errors dx, dkernel, dbias \(errors)")
        #expect(errors.allSatisfy { $0 < (precision == .bf16 ? Self.bf16Tolerance : 1e-5) })
        if precision == .fp32 {
            #expect(combined.dx == separate.dx && combined.dk == separate.dk && combined.db == separate.db)
        }

        // Reusing the forward pass's bf16 copy of the input rounds it the same way: identical gradients.
        var y = Tensor(zeros: g.outputShape), dx = Tensor(zeros: g.inputShape), dk = startKernel, db = startBias
        let kept = dnnl.forward(g, input: x.values, kernel: kernel.values, bias: nil, fuseReLU: false, output: &y.values,
                                keepingRoundedInput: true)
        if precision == .fp32 { #expect(kept == nil, "fp32 must not make bf16 copies") }
        dnnl.backward(g, input: x.values, roundedInput: kept, outputGradient: dy.values, reluOutput: nil, kernel: kernel.values,
                      kernelGradient: &dk.values, biasGradient: &db.values, inputGradient: &dx.values)
        #expect(dx.values == combined.dx && dk.values == combined.dk && db.values == combined.db)
    }

    /// backward(reluOutput:) applies ReLU's backward itself (fused with the bf16 rounding in bf16):
    /// it must give exactly what ReLU's backward followed by the plain backward gives, so the fused
    /// rounding matches oneDNN's (nearest even).
    @Test(arguments: [ConvolutionPrecision.fp32, .bf16])
    func backwardThroughReLUMatchesReLUThenBackward(_ precision: ConvolutionPrecision) {
        let g = ConvolutionCrossCheckTests.geometries[1]
        let x = randomTensor(g.inputShape, seed: 1), kernel = randomTensor(g.kernelShape, seed: 2, scale: 0.3)
        let gradient = randomTensor(g.outputShape, seed: 4), reluOutput = randomTensor(g.outputShape, seed: 7)
        var masked = gradient
        reluBackwardInPlace(gradient: &masked.values, output: reluOutput.values, count: masked.count, threads: testThreads)
        let dnnl = oneDNN(precision)
        func run(fused: Bool) -> [[Float]] {
            var dx = Tensor(zeros: g.inputShape), dk = randomTensor(g.kernelShape, seed: 5), db = randomTensor([g.outputChannels], seed: 6)
            dnnl.backward(
                g, input: x.values, roundedInput: nil, outputGradient: fused ? gradient.values : masked.values,
                reluOutput: fused ? reluOutput.values : nil, kernel: kernel.values,
                kernelGradient: &dk.values, biasGradient: &db.values, inputGradient: &dx.values)
            return [dx.values, dk.values, db.values]
        }
        #expect(run(fused: true) == run(fused: false))
    }

    @Test func reluBackwardToBFloat16RoundsToNearestEven() {
        // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one (1).
        let gradient: [Float] = [1, 1 + 0x1p-8, 1 + 0x1p-8 + 0x1p-20, -3.3, .infinity, .nan, 5] + [Float](repeating: 0.1, count: 16)
        let output: [Float] = [1, 1, 1, 1, 1, 1, 0] + [Float](repeating: 1, count: 16)
        var rounded = [UInt16](repeating: 0, count: gradient.count)
        rounded.withUnsafeMutableBytes { reluBackwardToBFloat16(gradient: gradient, output: output, count: gradient.count, into: $0.baseAddress!,
                                                                 threads: testThreads) }
        let expected: [UInt16] = [0x3F80, 0x3F80, 0x3F81, 0xC053, 0x7F80, 0x7FC0, 0x0000] + [UInt16](repeating: 0x3DCD, count: 16)
        #expect(rounded == expected, "\(rounded.map { String($0, radix: 16) })")
    }

    /// Conv2DTranspose on bf16 matrix products (U-Net-like 2x2 stride-2 upsampling) against fp32:
    /// output, input gradient and accumulated kernel and bias gradients within `bf16Tolerance`
    /// (relative to the largest fp32 value); products are 2x2x16 = 64 or 32 terms here.
    @Test func bf16TransposedConvolutionFollowsFP32() {
        let g = TransposedConvolutionGeometry(batch: 2, height: 6, width: 5, inputChannels: 32, outputChannels: 16, kernelSize: 2)
        let x = randomTensor([2, 6, 5, 32], seed: 21), kernel = randomTensor([2, 2, 16, 32], seed: 22, scale: 0.3)
        let bias = randomTensor([16], seed: 23), dy = randomTensor(g.outputShape, seed: 24)
        func run(_ precision: ConvolutionPrecision) -> [[Float]] {
            var y = Tensor(zeros: g.outputShape), dx = Tensor(zeros: x.shape)
            var dk = randomTensor(kernel.shape, seed: 25), db = randomTensor([16], seed: 26)
            let context = ComputeContext(precision: precision)
            transposedConvolutionForward(g, input: x.values, kernel: kernel.values, bias: bias.values, output: &y.values,
                                         context: context)
            transposedConvolutionBackward(g, input: x.values, kernel: kernel.values, outputGradient: dy.values,
                                          inputGradient: &dx.values, kernelGradient: &dk.values, biasGradient: &db.values,
                                          context: context)
            return [y.values, dx.values, dk.values, db.values]
        }
        let fp32 = run(.fp32), bf16 = run(.bf16)
        let errors = zip(bf16, fp32).map { relativeError($0, $1) }
        print("Conv2DTranspose bf16 vs fp32: relative errors y, dx, dkernel, dbias \(errors)")
        #expect(errors.allSatisfy { $0 < Self.bf16Tolerance }, "\(errors)")
        #expect(errors[0] > 0, "bf16 should round the operands; identical results mean it ran in fp32")
        // The fast mode picks one precision for the layer's products: its results are that one's, bit for bit.
        let fast = run(.fast)
        let sameAsOne = fast == fp32 || fast == bf16
        #expect(sameAsOne, "fast mode must give exactly the fp32 or the bf16 results")
    }

    @Test(.enabled(if: cpuHasBF16, "this CPU lacks avx512_bf16 (see /proc/cpuinfo): oneDNN has no native bf16 kernels here"))
    func bf16MatrixProductsUseBF16Kernels() {
        // The three products of the story U-Net's last upsampling (64x64x64 -> 128x128x32, batch 32).
        let pixels = 32 * 64 * 64, patch = 2 * 2 * 32, channels = 64
        let dnnl = oneDNN(.bf16)
        let names = [
            dnnl.matrixMultiplyImplementation(m: pixels, n: patch, k: channels, transposeA: false, transposeB: true),
            dnnl.matrixMultiplyImplementation(m: pixels, n: channels, k: patch, transposeA: false, transposeB: false),
            dnnl.matrixMultiplyImplementation(m: patch, n: channels, k: pixels, transposeA: true, transposeB: false),
        ]
        print("oneDNN bf16 matmul implementations (forward, backward-data, backward-weights): \(names)")
        #expect(names.allSatisfy { $0?.contains("bf16") == true }, "\(names)")
    }

    /// A small U-Net trained for 40 Adam steps from the same weights on the same data in fp32 and in
    /// bf16 (and with Winograd, and in the fast mode) ends at nearly the same loss: neither bf16
    /// rounding nor Winograd's transforms may change where training goes.
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
            let model = try Model.uNet(configuration)
            model.context = ComputeContext(precision: precision)
            let optimizer = Adam(schedule: .constant(3e-3))
            return (0..<40).map { _ in
                optimizationStep(model, input: input, optimizer: optimizer) { meanSquaredError(prediction: $0, target: target) }
            }
        }
        let fp32 = try train(.fp32), bf16 = try train(.bf16), winograd = try train(.winograd), fast = try train(.fast)
        let difference = abs(bf16.last! - fp32.last!) / fp32.last!
        let winogradDifference = abs(winograd.last! - fp32.last!) / fp32.last!
        let fastDifference = abs(fast.last! - fp32.last!) / fp32.last!
        print("U-Net 32x32 (8-16-32), 40 Adam steps: loss fp32 \(fp32.first!) -> \(fp32.last!), bf16 \(bf16.first!) -> \(bf16.last!), relative difference \(difference); winograd -> \(winograd.last!), \(winogradDifference); fast -> \(fast.last!), \(fastDifference)")
        #expect(fp32.last! < 0.5 * fp32.first!, "fp32 training should at least halve the loss")
        #expect(difference < 0.05, "final losses should agree within 5%: fp32 \(fp32.last!), bf16 \(bf16.last!)")
        #expect(winogradDifference < 0.01, "Winograd is fp32 with other rounding; final losses should agree within 1%: fp32 \(fp32.last!), winograd \(winograd.last!)")
        #expect(fastDifference < 0.05, "fast mode mixes the three; its final loss should agree within 5% too: fp32 \(fp32.last!), fast \(fast.last!)")
    }
}
