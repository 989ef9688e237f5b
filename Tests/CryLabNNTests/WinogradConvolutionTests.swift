import CryLabNN
import CryLabOneDNN
import Foundation
import Testing

/// `ConvolutionPrecision.winograd`: oneDNN's Winograd F(4x4, 3x3) kernels, which read and write
/// blocked activations, behind the same NHWC interface as the direct kernels.
///
/// Every test scopes the precision to its own task with `withPrecision`.
@Suite struct WinogradConvolutionTests {
    /// oneDNN 2.6 has Winograd kernels for AVX-512 CPUs only.
    static let cpuHasAVX512: Bool = {
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return flags.contains("avx512f")
    }()

    /// The transforms multiply by constants up to 8 and add many terms before the products, so
    /// rounding grows: measured errors here are ~1e-6 (direct fp32: ~1e-7). A wrong transform,
    /// layout or padding gives errors of order one.
    static let tolerance = 1e-4

    /// 3x3 stride-1 shapes with channel counts that are multiples of 16: square and odd-sized
    /// images, 'same' and 'valid' padding, more output than input channels and fewer.
    static let eligible: [ConvolutionGeometry] = [
        ConvolutionCrossCheckTests.geometries[1],
        ConvolutionGeometry(batch: 2, inputHeight: 13, inputWidth: 10, inputChannels: 16, outputChannels: 48,
                            kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same),
        ConvolutionGeometry(batch: 2, inputHeight: 12, inputWidth: 9, inputChannels: 32, outputChannels: 16,
                            kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .valid),
    ]

    @Test(.enabled(if: cpuHasAVX512, "this CPU lacks AVX-512 (avx512f in /proc/cpuinfo): oneDNN has no Winograd kernels here"),
          arguments: eligible)
    func winogradMatchesReference(_ g: ConvolutionGeometry) {
        let names = oneDNN(.winograd).implementationNames(g)
        print("oneDNN implementations for \(g) in winograd: \(names)")
        #expect(names.allSatisfy { $0.contains("wino") }, "expected Winograd kernels for all three passes, got \(names)")
        ConvolutionCrossCheckTests().compare(oneDNN(.winograd), g, tolerance: Self.tolerance)
    }

    /// Shapes Winograd cannot take (stride 2, 5x5, 1x1 and 7x7 kernels) run direct fp32: the same
    /// kernels and the same results, bit for bit.
    @Test(arguments: [2, 3, 4, 5])
    func otherShapesRunDirectFP32(_ index: Int) {
        let g = ConvolutionCrossCheckTests.geometries[index]
        let x = randomTensor(g.inputShape, seed: 41), kernel = randomTensor(g.kernelShape, seed: 42, scale: 0.3)
        let dy = randomTensor(g.outputShape, seed: 43)
        func run(_ precision: ConvolutionPrecision) -> [[Float]] {
            var y = Tensor(zeros: g.outputShape), dx = Tensor(zeros: g.inputShape), dk = Tensor(zeros: g.kernelShape)
            let kernels = ComputeContext(precision: precision).backend.convolutionKernels(for: g)
            kernels.forward(g, input: x.values, kernel: kernel.values, bias: nil, fuseReLU: true, output: &y.values)
            kernels.backward(g, input: x.values, outputGradient: dy.values, kernel: kernel.values,
                             kernelGradient: &dk.values, biasGradient: nil, inputGradient: &dx.values)
            return [y.values, dx.values, dk.values]
        }
        let same = run(.winograd) == run(.fp32)
        #expect(same, "\(g): winograd must fall back to direct fp32 exactly")
    }

    /// The combined backward reorders the output gradient into the blocked layout once for both
    /// passes, after applying ReLU's backward: it must equal ReLU's backward followed by the two
    /// separate passes, bit for bit.
    @Test(.enabled(if: cpuHasAVX512, "this CPU lacks AVX-512 (avx512f in /proc/cpuinfo): oneDNN has no Winograd kernels here"))
    func combinedBackwardThroughReLUMatchesSeparatePasses() {
        let g = Self.eligible[1]
        let x = randomTensor(g.inputShape, seed: 1), kernel = randomTensor(g.kernelShape, seed: 2, scale: 0.3)
        let gradient = randomTensor(g.outputShape, seed: 4), reluOutput = randomTensor(g.outputShape, seed: 7)
        var masked = gradient
        reluBackwardInPlace(gradient: &masked.values, output: reluOutput.values, count: masked.count, threads: testThreads)
        let startKernel = randomTensor(g.kernelShape, seed: 5), startBias = randomTensor([g.outputChannels], seed: 6)
        do {
            let dnnl = oneDNN(.winograd)
            var dx = Tensor(zeros: g.inputShape), dk = startKernel, db = startBias
            dnnl.backward(g, input: x.values, roundedInput: nil, outputGradient: gradient.values, reluOutput: reluOutput.values,
                          kernel: kernel.values, kernelGradient: &dk.values, biasGradient: &db.values, inputGradient: &dx.values)
            var dxSeparate = Tensor(zeros: g.inputShape), dkSeparate = startKernel, dbSeparate = startBias
            dnnl.backwardWeights(g, input: x.values, outputGradient: masked.values, kernelGradient: &dkSeparate.values,
                                 biasGradient: &dbSeparate.values)
            dnnl.backwardData(g, outputGradient: masked.values, kernel: kernel.values, inputGradient: &dxSeparate.values)
            #expect(dx.values == dxSeparate.values && dk.values == dkSeparate.values && db.values == dbSeparate.values)
            // And both against the reference, so neither can be wrong the same way.
            var dxReference = Tensor(zeros: g.inputShape), dkReference = startKernel, dbReference = startBias
            reference.backward(g, input: x.values, outputGradient: masked.values, kernel: kernel.values,
                               kernelGradient: &dkReference.values, biasGradient: &dbReference.values,
                               inputGradient: &dxReference.values)
            let errors = [relativeError(dx.values, dxReference.values), relativeError(dk.values, dkReference.values),
                          relativeError(db.values, dbReference.values)]
            #expect(errors.allSatisfy { $0 < Self.tolerance }, "relative errors dx, dkernel, dbias \(errors)")
        }
    }
}
