import CryLabNN
import CryLabOneDNN
import Testing

/// oneDNN's convolution passes against the portable im2col + sgemm reference, on random tensors.
@Suite struct ConvolutionCrossCheckTests {
    static let geometries: [ConvolutionGeometry] = [
        ConvolutionGeometry(batch: 2, inputHeight: 9, inputWidth: 8, inputChannels: 1, outputChannels: 16,
                            kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same),
        ConvolutionGeometry(batch: 3, inputHeight: 16, inputWidth: 16, inputChannels: 32, outputChannels: 32,
                            kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same),
        ConvolutionGeometry(batch: 2, inputHeight: 11, inputWidth: 10, inputChannels: 20, outputChannels: 24,
                            kernelHeight: 3, kernelWidth: 3, stride: 2, padding: .same),
        ConvolutionGeometry(batch: 2, inputHeight: 12, inputWidth: 12, inputChannels: 8, outputChannels: 5,
                            kernelHeight: 5, kernelWidth: 5, stride: 2, padding: .valid),
        ConvolutionGeometry(batch: 2, inputHeight: 8, inputWidth: 8, inputChannels: 64, outputChannels: 3,
                            kernelHeight: 1, kernelWidth: 1, stride: 1, padding: .same),
        ConvolutionGeometry(batch: 1, inputHeight: 7, inputWidth: 9, inputChannels: 3, outputChannels: 7,
                            kernelHeight: 7, kernelWidth: 7, stride: 1, padding: .same),
    ]

    @Test(arguments: geometries)
    func oneDNNMatchesReference(_ g: ConvolutionGeometry) {
        compare(oneDNN(.fp32), g)
    }

    /// The sgemm path that replaces oneDNN for 1x1 stride-1 convolutions.
    @Test func pointwiseMatchesReference() {
        let g = ConvolutionGeometry(batch: 2, inputHeight: 6, inputWidth: 5, inputChannels: 32, outputChannels: 1,
                                    kernelHeight: 1, kernelWidth: 1, stride: 1, padding: .same)
        #expect(PointwiseConvolution.handles(g) && ComputeContext.default.backend.convolutionKernels(for: g) is PointwiseConvolution)
        compare(PointwiseConvolution(matrices: oneDNN(.fp32), threads: testThreads), g)
    }

    /// `tolerance` bounds `relativeError` of every pass; 1e-5 suits fp32 (only summation order differs).
    func compare(_ fast: any ConvolutionKernels, _ g: ConvolutionGeometry, tolerance: Double = 1e-5) {
        let x = randomTensor(g.inputShape, seed: 1)
        let kernel = randomTensor(g.kernelShape, seed: 2, scale: 0.3)
        let bias = randomTensor([g.outputChannels], seed: 3)
        let dy = randomTensor(g.outputShape, seed: 4)

        for relu in [false, true] {
            var a = Tensor(zeros: g.outputShape), b = Tensor(zeros: g.outputShape)
            fast.forward(g, input: x.values, kernel: kernel.values, bias: bias.values, fuseReLU: relu, output: &a.values)
            reference.forward(g, input: x.values, kernel: kernel.values, bias: bias.values, fuseReLU: relu, output: &b.values)
            let error = relativeError(a.values, b.values)
            print("\(g) forward relu=\(relu): relative error \(error)")
            #expect(error < tolerance)
        }

        var dxFast = Tensor(zeros: g.inputShape), dxReference = Tensor(zeros: g.inputShape)
        fast.backwardData(g, outputGradient: dy.values, kernel: kernel.values, inputGradient: &dxFast.values)
        reference.backwardData(g, outputGradient: dy.values, kernel: kernel.values, inputGradient: &dxReference.values)
        let dataError = relativeError(dxFast.values, dxReference.values)
        print("\(g) backward-data: relative error \(dataError)")
        #expect(dataError < tolerance)

        // Start both from the same non-zero gradient: the passes must accumulate, not overwrite.
        var dkFast = randomTensor(g.kernelShape, seed: 5), dkReference = dkFast
        var dbFast = randomTensor([g.outputChannels], seed: 6), dbReference = dbFast
        fast.backwardWeights(g, input: x.values, outputGradient: dy.values, kernelGradient: &dkFast.values, biasGradient: &dbFast.values)
        reference.backwardWeights(g, input: x.values, outputGradient: dy.values, kernelGradient: &dkReference.values,
                                  biasGradient: &dbReference.values)
        let weightError = relativeError(dkFast.values, dkReference.values)
        let biasError = relativeError(dbFast.values, dbReference.values)
        print("\(g) backward-weights: relative error kernel \(weightError), bias \(biasError)")
        #expect(weightError < tolerance)
        #expect(biasError < tolerance)
    }

    @Test func primitivesAreCachedPerShape() {
        let g = ConvolutionGeometry(batch: 1, inputHeight: 13, inputWidth: 5, inputChannels: 3, outputChannels: 2,
                                    kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
        let x = randomTensor(g.inputShape, seed: 1), k = randomTensor(g.kernelShape, seed: 2)
        var y = Tensor(zeros: g.outputShape)
        let dnnl = oneDNN(.fp32)
        dnnl.forward(g, input: x.values, kernel: k.values, bias: nil, fuseReLU: false, output: &y.values)
        let before = dnnl.cachedPrimitiveCount
        for _ in 0..<3 {
            dnnl.forward(g, input: x.values, kernel: k.values, bias: nil, fuseReLU: false, output: &y.values)
        }
        // A runtime of the test's own: the same shape again makes no new primitive.
        #expect(dnnl.cachedPrimitiveCount == before)
        let names = dnnl.implementationNames(g)
        print("oneDNN implementations for \(g): \(names)")
        #expect(names.allSatisfy { !$0.isEmpty && $0 != "?" })
    }

    /// Conv2DTranspose (GEMM + scatter) against the definition, written as plain loops.
    @Test func transposedConvolutionMatchesDefinition() {
        var generator = SeededGenerator(seed: 9)
        let layer = Conv2DTranspose(inputChannels: 3, filters: 4, kernelSize: 2, stride: 2, generator: &generator)
        try! layer.bias!.assign(randomTensor([4], seed: 10))
        let x = randomTensor([2, 3, 5, 3], seed: 11)
        let y = layer.forward(x)
        let k = layer.kernel.value.values, b = layer.bias!.value.values
        var expected = [Float](repeating: 0, count: 2 * 6 * 10 * 4)
        for n in 0..<2 { for h in 0..<3 { for w in 0..<5 { for i in 0..<2 { for j in 0..<2 { for o in 0..<4 {
            var sum = b[o]
            for c in 0..<3 { sum += x.values[((n * 3 + h) * 5 + w) * 3 + c] * k[((i * 2 + j) * 4 + o) * 3 + c] }
            expected[((n * 6 + h * 2 + i) * 10 + w * 2 + j) * 4 + o] = sum
        } } } } } }
        #expect(y.shape == [2, 6, 10, 4])
        #expect(maxAbsDifference(y.values, expected) < 1e-5)
    }

    /// Inference skips recording the argmax positions; the pooled values must not change.
    @Test func maxPoolingInferenceEqualsTraining() {
        for (shape, pool, stride, padding) in [([2, 8, 6, 5], 2, 2, Padding.valid), ([1, 7, 5, 3], 3, 2, .same)] {
            var x = randomTensor(shape, seed: 12)
            x.values[3] = x.values[3 + shape[3]]  // a tie inside the first window
            let layer = MaxPool2D(poolSize: pool, stride: stride, padding: padding)
            let inference = layer.forward([x], training: false)
            let training = layer.forward([x], training: true)
            layer.releaseCache()
            let same = inference == training
            #expect(same, "pool \(pool) stride \(stride): inference and training outputs differ by \(maxAbsDifference(inference.values, training.values))")
            // Every output is the largest value of its window (checked for the first window).
            let first = (0..<min(pool, shape[1])).flatMap { r in (0..<min(pool, shape[2])).map { c in x.values[(r * shape[2] + c) * shape[3]] } }
            let firstOutput = inference.values[0], firstMaximum = first.max()!
            if padding == .valid { #expect(firstOutput == firstMaximum) }
        }
    }
}
