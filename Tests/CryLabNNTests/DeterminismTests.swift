import CryLabNN
import Testing

/// Same seed and thread count => bit-identical losses and weights.
@Suite struct DeterminismTests {
    func run() throws -> (losses: [Double], weights: [Tensor]) {
        let config = UNetConfiguration(inputShape: [16, 16, 1], widths: [4, 8, 16], batchNormalization: true,
                                       dropoutRate: 0.2, seed: 42)
        let model = try Model.uNet(config)
        let optimizer = Adam(schedule: .cosine(peak: 1e-3, warmupSteps: 1, totalSteps: 4, minimum: 1e-5))
        let x = randomTensor([4, 16, 16, 1], seed: 1)
        let mask = Tensor(shape: x.shape, values: x.values.map { $0 > 0 ? 1 : 0 })
        var losses: [Double] = []
        for _ in 0..<3 {
            losses.append(model.trainingStep(input: x, optimizer: optimizer, clipNorm: 1) {
                meanSquaredError(prediction: $0, target: x, mask: mask)
            })
        }
        return (losses, model.namedWeights.map(\.parameter.value))
    }

    @Test func twoRunsAreBitIdentical() throws {
        ComputeThreads.set(2)
        let first = try run()
        let second = try run()
        print("determinism: losses \(first.losses) and \(second.losses)")
        #expect(first.losses == second.losses)
        #expect(first.weights == second.weights)
        #expect(first.losses[2] < first.losses[0])
    }
}
