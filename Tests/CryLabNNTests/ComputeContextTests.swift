import CryLabNN
import CryLabOneDNN
import Testing

/// Compute contexts belong to models, not to the process: models of different precisions run
/// side by side, each exactly as it runs alone.
@Suite struct ComputeContextTests {
    /// Per model, the losses of three Adam steps and the final weights, the models' steps interleaved.
    func train(_ precisions: [ConvolutionPrecision]) throws -> [(losses: [Double], weights: [Tensor])] {
        let configuration = UNetConfiguration(inputShape: [16, 16, 1], widths: [16, 32], seed: 3)
        let x = randomTensor([2, 16, 16, 1], seed: 1)
        let models = try precisions.map { precision in
            let model = try Model.uNet(configuration)
            model.context = ComputeContext(precision: precision, threads: 2)
            return (model: model, optimizer: Adam(schedule: .constant(3e-3)))
        }
        var losses = [[Double]](repeating: [], count: models.count)
        for _ in 0..<3 {
            for (index, (model, optimizer)) in models.enumerated() {
                losses[index].append(optimizationStep(model, input: x, optimizer: optimizer) {
                    meanSquaredError(prediction: $0, target: x)
                })
            }
        }
        return models.enumerated().map { (losses[$0.offset], $0.element.model.namedWeights.map(\.parameter.value)) }
    }

    @Test func fp32AndBF16ModelsInterleavedGiveTheirOwnResults() throws {
        let fp32Alone = try train([.fp32])[0], bf16Alone = try train([.bf16])[0]
        let together = try train([.fp32, .bf16])
        print("fp32 alone \(fp32Alone.losses), bf16 alone \(bf16Alone.losses), interleaved \(together.map(\.losses))")
        #expect(together[0].losses == fp32Alone.losses && together[0].weights == fp32Alone.weights)
        #expect(together[1].losses == bf16Alone.losses && together[1].weights == bf16Alone.weights)
        #expect(fp32Alone.losses != bf16Alone.losses, "the bf16 model must round its operands, not run in fp32")
    }
}
