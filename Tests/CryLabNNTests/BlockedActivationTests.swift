import CryLabNN
import Testing

/// Convolutions handing activations to the next convolution in oneDNN's nChw16c layout
/// (`Model.passesBlockedActivations`): the same numbers as with every tensor NHWC.
@Suite struct BlockedActivationTests {
    /// conv (1 -> 16) -> conv (16 -> 16) -> conv (16 -> 16) -> conv (16 -> 32, stride 2) -> conv (32 -> 32) -> 1x1 conv (32 -> 1).
    /// The two 16 -> 16 convolutions run Winograd and may pass their outputs on blocked: the first
    /// to a Winograd pass that reads it in place, the second to a stride-2 direct pass, which needs
    /// an NHWC copy (and returns its input gradient blocked). The last 3x3 feeds the 1x1, which
    /// runs on sgemm and takes NHWC only.
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

    func train(handOff: Bool) throws -> (losses: [Double], weights: [Tensor], layouts: [ActivationLayout]) {
        let (model, convolutions) = try model()
        model.passesBlockedActivations = handOff
        let optimizer = Adam(schedule: .constant(1e-2))
        let x = randomTensor([3, 12, 12, 1], seed: 8)
        let target = randomTensor([3, 6, 6, 1], seed: 9)
        let losses = (0..<3).map { _ in
            model.trainingStep(input: x, optimizer: optimizer) { meanSquaredError(prediction: $0, target: target) }
        }
        return (losses, model.namedWeights.map(\.parameter.value), convolutions.map(\.lastOutputLayout))
    }

    @Test(arguments: [ConvolutionPrecision.winograd, .fast])
    func handOffsGiveTheSameNumbers(_ precision: ConvolutionPrecision) throws {
        try ConvolutionPrecision.withPrecision(precision) {
            let blocked = try train(handOff: true), nhwc = try train(handOff: false)
            print("blocked hand-offs (\(precision)): losses \(blocked.losses), layouts \(blocked.layouts)")
            #expect(blocked.losses == nhwc.losses)
            #expect(blocked.weights == nhwc.weights)
            #expect(blocked.losses[2] < blocked.losses[0])
            #expect(nhwc.layouts.allSatisfy { $0 == .nhwc })
            // Only convolutions whose forward pass runs Winograd write blocked, and never the 1x1's input.
            #expect(blocked.layouts[4] == .nhwc && blocked.layouts[5] == .nhwc)
            if precision == .winograd {
                let names = ConvolutionPrecision.withPrecision(.winograd) {
                    DNNLConvolution.shared.implementationNames(ConvolutionGeometry(
                        batch: 3, inputHeight: 12, inputWidth: 12, inputChannels: 16, outputChannels: 16,
                        kernelHeight: 3, kernelWidth: 3, stride: 1, padding: .same))
                }
                try #require(names[0].contains("wino"), "oneDNN has no Winograd forward for 16 -> 16 here: \(names)")
                #expect(blocked.layouts[1] == .blocked16 && blocked.layouts[2] == .blocked16, "\(blocked.layouts)")
            }
        }
    }

    /// Inference takes the same path; the model's output is NHWC either way.
    @Test func inferenceGivesTheSameOutput() throws {
        try ConvolutionPrecision.withPrecision(.winograd) {
            let (model, convolutions) = try model()
            let x = randomTensor([2, 12, 12, 1], seed: 3)
            let blocked = model.predict(x)
            let layouts = convolutions.map(\.lastOutputLayout)
            model.passesBlockedActivations = false
            let nhwc = model.predict(x)
            #expect(blocked == nhwc && blocked.layout == .nhwc)
            #expect(layouts.contains(.blocked16), "\(layouts)")
        }
    }
}
