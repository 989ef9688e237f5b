import CryLabNN
import CryLabOneDNN
import Testing

/// Convolutions handing activations to the next convolution in oneDNN's nChw16c layout
/// (`Model.passesBlockedActivations`): the same numbers as with every tensor NHWC.
@Suite struct BlockedActivationTests {
    /// conv (1 -> 16) -> conv (16 -> 16) -> conv (16 -> 16) -> conv (16 -> 32, stride 2) -> conv (32 -> 32) -> 1x1 conv (32 -> 1).
    /// In winograd, the two 16 -> 16 convolutions run Winograd: the first may receive its input
    /// blocked and pass its output on blocked. The stride-2 one runs direct passes, which would
    /// need NHWC copies, so it receives NHWC; so does the 1x1, which runs on sgemm.
    func model() throws -> (model: Model, convolutions: [Conv2D]) {
        var b = GraphBuilder(inputShape: [12, 12, 1], seed: 5)
        var convolutions: [Conv2D] = []
        var value = 0
        for (index, (input, filters, kernel, stride)) in [(1, 16, 3, 1), (16, 16, 3, 1), (16, 16, 3, 1), (16, 32, 3, 2),
                                                          (32, 32, 3, 1), (32, 1, 1, 1)].enumerated() {
            let conv = Conv2D(name: "conv\(index)", inputChannels: input, filters: filters, kernelSize: kernel, stride: stride,
                              activation: filters == 1 ? .linear : .relu, generator: &b.generator)
            convolutions.append(conv)
            value = try b.add(conv, inputs: [value])
        }
        return (Model(inputShape: [12, 12, 1], nodes: b.nodes), convolutions)
    }

    /// Both runs of a comparison share `context`, so the fast mode times each pass once and both run its choice.
    func train(handOff: Bool, context: ComputeContext) throws -> (losses: [Double], weights: [Tensor], layouts: [ActivationLayout]) {
        let (model, convolutions) = try model()
        model.context = context
        model.passesBlockedActivations = handOff
        let optimizer = Adam(schedule: .constant(1e-2))
        let x = randomTensor([3, 12, 12, 1], seed: 8)
        let target = randomTensor([3, 6, 6, 1], seed: 9)
        let losses = (0..<3).map { _ in
            optimizationStep(model, input: x, optimizer: optimizer) { meanSquaredError(prediction: $0, target: target) }
        }
        return (losses, model.namedWeights.map(\.parameter.value), convolutions.map(\.lastOutputLayout))
    }

    @Test(arguments: [ConvolutionPrecision.winograd, .fast])
    func handOffsGiveTheSameNumbers(_ precision: ConvolutionPrecision) throws {
        let context = ComputeContext(precision: precision)
        do {
            let blocked = try train(handOff: true, context: context), nhwc = try train(handOff: false, context: context)
            print("blocked hand-offs (\(precision)): losses \(blocked.losses), layouts \(blocked.layouts)")
            #expect(blocked.losses == nhwc.losses)
            #expect(blocked.weights == nhwc.weights)
            #expect(blocked.losses[2] < blocked.losses[0])
            #expect(nhwc.layouts.allSatisfy { $0 == .nhwc })
            // Only convolutions whose forward pass runs Winograd write blocked, and never the 1x1's input.
            #expect(blocked.layouts[4] == .nhwc && blocked.layouts[5] == .nhwc)
            if precision == .winograd {
                let names = context.oneDNN!.implementationNames(ConvolutionGeometry(
                    batch: 3, inputHeight: 12, inputWidth: 12, inputChannels: 16, outputChannels: 16,
                    kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same))
                try #require(names[0].contains("wino"), "oneDNN has no Winograd forward for 16 -> 16 here: \(names)")
                #expect(blocked.layouts[1] == .blocked16 && blocked.layouts[2] == .nhwc, "\(blocked.layouts)")
            }
        }
    }

    /// The fast mode pinned to direct kernels in oneDNN's blocked layout: every convolution but the
    /// last 3x3 hands its output on blocked, the first (one input channel) included, whose NHWC
    /// input the blocked pass reads where it lies.
    @Test func directBlockedPassesHandOffToo() throws {
        let context = ComputeContext(precision: .fast, fastModeCandidates: .directBlocked)
        do {
            do {
                let blocked = try train(handOff: true, context: context), nhwc = try train(handOff: false, context: context)
                print("blocked hand-offs (direct, blocked): losses \(blocked.losses), layouts \(blocked.layouts)")
                #expect(blocked.losses == nhwc.losses)
                #expect(blocked.weights == nhwc.weights)
                #expect(blocked.losses[2] < blocked.losses[0])
                let g = ConvolutionGeometry(batch: 3, inputHeight: 12, inputWidth: 12, inputChannels: 16, outputChannels: 16,
                                            kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
                try #require(context.oneDNN!.takesBlockedInput(g, bias: true, relu: true).forward,
                             "oneDNN prefers no 16-channel blocked layout here: \(context.oneDNN!.implementationNames(g))")
                #expect(blocked.layouts == [.blocked16, .blocked16, .blocked16, .blocked16, .nhwc, .nhwc])
            }
        }
    }

    /// Inference takes the same path; the model's output is NHWC either way.
    @Test func inferenceGivesTheSameOutput() throws {
        do {
            let (model, convolutions) = try model()
            model.context = ComputeContext(precision: .winograd)
            let x = randomTensor([2, 12, 12, 1], seed: 3)
            _ = model.predict(x)  // prepares the passes: the plan looks at them
            let blocked = model.predict(x)
            let layouts = convolutions.map(\.lastOutputLayout)
            model.passesBlockedActivations = false
            let nhwc = model.predict(x)
            #expect(blocked == nhwc && blocked.layout == .nhwc)
            #expect(layouts.contains(.blocked16), "\(layouts)")
        }
    }
}

/// `DNNLConvolution` with blocked operands, for Winograd passes (read and written in place) and
/// direct ones (through NHWC copies): bit for bit the NHWC results, in nChw16c.
@Suite struct BlockedOperandTests {
    /// Winograd (`.winograd`), or direct kernels in oneDNN's blocked layout (`.fast` pinned to them).
    @Test(arguments: [1, 2], [ConvolutionPrecision.winograd, .fast])
    func blockedOperandsGiveTheNHWCResults(_ stride: Int, _ precision: ConvolutionPrecision) {
        do {
            let g = ConvolutionGeometry(batch: 2, inputHeight: 10, inputWidth: 9, inputChannels: 32, outputChannels: 16,
                                        kernelHeight: 3, kernelWidth: 3, stride: stride, padding: .same)
            let x = randomTensor(g.inputShape, seed: 1), kernel = randomTensor(g.kernelShape, seed: 2, scale: 0.2)
            let bias = randomTensor([16], seed: 3), dy = randomTensor(g.outputShape, seed: 4)
            let dnnl = oneDNN(precision, candidates: .directBlocked)
            func run(_ layout: ActivationLayout) -> (y: Tensor, dx: Tensor, dk: [Float], db: [Float], outputLayout: ActivationLayout) {
                let input = x.converted(to: layout, threads: testThreads), gradient = dy.converted(to: layout, threads: testThreads)
                var y = Tensor(zeros: g.outputShape), dx = Tensor(zeros: g.inputShape)
                var dk = [Float](repeating: 0, count: kernel.count), db = [Float](repeating: 0, count: 16)
                let written = dnnl.forward(g, input: input.values, inputLayout: layout, kernel: kernel.values, bias: bias.values,
                                           fuseReLU: false, output: &y.values, allowingBlockedOutput: layout == .blocked16,
                                           keepingRoundedInput: false).layout
                y.layout = written
                dnnl.backward(g, input: input.values, inputLayout: layout, roundedInput: nil, outputGradient: gradient.values,
                              outputLayout: layout, reluOutput: nil, kernel: kernel.values, kernelGradient: &dk,
                              biasGradient: &db, inputGradient: &dx.values)
                dx.layout = layout
                return (y, dx, dk, db, written)
            }
            let nhwc = run(.nhwc), blocked = run(.blocked16)
            let names = dnnl.implementationNames(g)
            print("blocked operands, \(precision), stride \(stride): \(names), output written \(blocked.outputLayout)")
            // Written blocked by a blocked forward: Winograd (stride 1 only here), or direct in oneDNN's
            // layout; NHWC by a direct NHWC one.
            let blockedForward = dnnl.takesBlockedInput(g, bias: true, relu: false).forward
            #expect(blockedForward == (precision == .fast || names[0].contains("wino")))
            #expect(blocked.outputLayout == (blockedForward ? .blocked16 : .nhwc))
            #expect(blocked.y.converted(to: .nhwc, threads: testThreads) == nhwc.y)
            #expect(blocked.dx.converted(to: .nhwc, threads: testThreads) == nhwc.dx)
            #expect(blocked.dk == nhwc.dk && blocked.db == nhwc.db)
            #expect(maxAbs(nhwc.dx.values) > 0 && maxAbs(nhwc.dk) > 0)
        }
    }

    /// One input channel: oneDNN's blocked direct kernels take it as plain NCHW, NHWC's bytes, and
    /// read it where it lies while writing nChw16c; the same numbers as NHWC direct fp32 to rounding.
    @Test func oneChannelInputFeedsABlockedDirectPass() {
        let g = ConvolutionGeometry(batch: 2, inputHeight: 11, inputWidth: 10, inputChannels: 1, outputChannels: 32,
                                    kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same)
        let x = randomTensor(g.inputShape, seed: 11), kernel = randomTensor(g.kernelShape, seed: 12, scale: 0.3)
        let bias = randomTensor([32], seed: 13), dy = randomTensor(g.outputShape, seed: 14)
        func run(_ dnnl: DNNLConvolution, blocked: Bool) -> (y: Tensor, dk: [Float], db: [Float], written: ActivationLayout) {
            var y = Tensor(zeros: g.outputShape)
            var dk = [Float](repeating: 0, count: kernel.count), db = [Float](repeating: 0, count: 32)
            y.layout = dnnl.forward(g, input: x.values, inputLayout: .nhwc, kernel: kernel.values, bias: bias.values,
                                    fuseReLU: true, output: &y.values, allowingBlockedOutput: blocked, keepingRoundedInput: false).layout
            let gradient = dy.converted(to: y.layout, threads: testThreads)
            dnnl.backward(g, input: x.values, inputLayout: .nhwc, roundedInput: nil, outputGradient: gradient.values,
                          outputLayout: y.layout, reluOutput: nil, kernel: kernel.values, kernelGradient: &dk,
                          biasGradient: &db, inputGradient: nil)
            return (y.converted(to: .nhwc, threads: testThreads), dk, db, y.layout)
        }
        let reference = run(oneDNN(.fp32), blocked: false)
        let blocked = run(oneDNN(.fast, candidates: .directBlocked), blocked: true)
        print("one-channel blocked direct pass: output written \(blocked.written)")
        #expect(reference.written == .nhwc && blocked.written == .blocked16)
        #expect(relativeError(blocked.y.values, reference.y.values) < 1e-5)
        #expect(relativeError(blocked.dk, reference.dk) < 1e-5 && relativeError(blocked.db, reference.db) < 1e-5)
        #expect(maxAbs(reference.y.values) > 0 && maxAbs(reference.dk) > 0)
    }

    @Test func conversionsRoundTrip() {
        let x = randomTensor([2, 3, 5, 48], seed: 6)
        let blocked = x.converted(to: .blocked16, threads: testThreads)
        #expect(blocked.layout == .blocked16 && blocked.values != x.values)
        // Value (n, y, x, c) sits at (((n * 3 + c / 16) * 3 + y) * 5 + x) * 16 + c % 16.
        let (n, row, column, channel) = (1, 1, 4, 39)
        let blockedIndex: Int = (((n * 3 + channel / 16) * 3 + row) * 5 + column) * 16 + channel % 16
        let nhwcIndex: Int = ((n * 3 + row) * 5 + column) * 48 + channel
        #expect(blocked.values[blockedIndex] == x.values[nhwcIndex])
        #expect(blocked.converted(to: .nhwc, threads: testThreads) == x)
        let parts = splitChannels(blocked, widths: [16, 32], layouts: [.nhwc, .blocked16], threads: testThreads)
        #expect(concatenateChannels(parts, layout: .nhwc, threads: testThreads) == x)
    }
}

/// The same through a U-Net: pooling reads its blocked input as 16-channel blocks, concatenation
/// joins an NHWC upsampling with a blocked skip into a blocked output, and the skip's gradient
/// sums a blocked pooling gradient with a blocked concatenation one.
@Suite struct BlockedUNetTests {
    /// Both runs of a comparison share `context`, so the fast mode times each pass once and both run its choice.
    func train(handOff: Bool, context: ComputeContext, batchNormalization: Bool = false) throws
        -> (losses: [Double], weights: [Tensor], layouts: [String: ActivationLayout]) {
        do {
            let model = try Model.uNet(UNetConfiguration(inputShape: [16, 16, 1], widths: [16, 32, 48],
                                                         batchNormalization: batchNormalization, seed: 7))
            model.context = context
            model.passesBlockedActivations = handOff
            let optimizer = Adam(schedule: .constant(3e-3))
            let x = randomTensor([2, 16, 16, 1], seed: 4)
            let losses = (0..<3).map { _ in
                optimizationStep(model, input: x, optimizer: optimizer) { meanSquaredError(prediction: $0, target: x) }
            }
            var layouts: [String: ActivationLayout] = [:]
            for layer in model.layers {
                switch layer {
                case let conv as Conv2D: layouts[conv.name] = conv.lastOutputLayout
                case let pool as MaxPool2D: layouts[pool.name] = pool.lastOutputLayout
                case let concatenate as Concatenate: layouts[concatenate.name] = concatenate.lastOutputLayout
                case let norm as BatchNormalization: layouts[norm.name] = norm.lastOutputLayout
                case let relu as ReLU: layouts[relu.name] = relu.lastOutputLayout
                default: break
                }
            }
            return (losses, model.namedWeights.map(\.parameter.value), layouts)
        }
    }

    @Test(arguments: [ConvolutionPrecision.winograd, .fast])
    func poolingAndConcatenationHandOffsGiveTheSameNumbers(_ precision: ConvolutionPrecision) throws {
        let context = ComputeContext(precision: precision)
        let blocked = try train(handOff: true, context: context), nhwc = try train(handOff: false, context: context)
        let blockedNames = blocked.layouts.filter { $0.value == .blocked16 }.keys.sorted()
        print("U-Net blocked hand-offs (\(precision)): losses \(blocked.losses); blocked outputs \(blockedNames)")
        #expect(blocked.losses == nhwc.losses)
        #expect(blocked.weights == nhwc.weights)
        #expect(blocked.losses[2] < blocked.losses[0])
        #expect(nhwc.layouts.values.allSatisfy { $0 == .nhwc })
        if precision == .winograd {
            // Level 1 (16 channels): conv2d -> conv2d_1 -> pooling and the skip; level 2 likewise.
            for name in ["conv2d_1", "max_pooling2d", "conv2d_3", "max_pooling2d_1"] {
                #expect(blocked.layouts[name] == .blocked16, "\(name): \(blocked.layouts)")
            }
            #expect(blocked.layouts.keys.contains { $0.hasPrefix("concatenate") && blocked.layouts[$0] == .blocked16 },
                    "a concatenation should write blocked: \(blocked.layouts)")
        }
    }

    /// With BatchNormalization and ReLU layers between the convolutions (as in the recommended
    /// recipe), both pass blocked tensors on; still bit for bit. (The first convolution, of one
    /// input channel, runs direct in `.winograd` and writes NHWC.)
    @Test func batchNormalizationHandOffsGiveTheSameNumbers() throws {
        let context = ComputeContext(precision: .winograd)
        let blocked = try train(handOff: true, context: context, batchNormalization: true)
        let nhwc = try train(handOff: false, context: context, batchNormalization: true)
        let blockedNames = blocked.layouts.filter { $0.value == .blocked16 }.keys.sorted()
        print("BatchNorm U-Net blocked hand-offs: losses \(blocked.losses); blocked outputs \(blockedNames)")
        #expect(blocked.losses == nhwc.losses)
        #expect(blocked.weights == nhwc.weights)
        for name in ["conv2d_1", "batch_normalization_1", "re_lu_1", "max_pooling2d", "conv2d_2", "batch_normalization_2", "re_lu_2"] {
            #expect(blocked.layouts[name] == .blocked16, "\(name): \(blocked.layouts)")
        }
        #expect(blocked.layouts["conv2d"] == .nhwc)
    }
}
