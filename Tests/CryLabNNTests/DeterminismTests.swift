import CryLabNN
import Testing

/// Same seed and thread count => bit-identical losses and weights, in each convolution precision
/// (the fast mode excepted: its choice of kernels depends on timing).
@Suite struct DeterminismTests {
    /// Widths of 16 and more, so that the Winograd kernels take part.
    func run(_ context: ComputeContext) throws -> (losses: [Double], weights: [Tensor]) {
        let config = UNetConfiguration(inputShape: [16, 16, 1], widths: [16, 32, 48], batchNormalization: true,
                                       dropoutRate: 0.2, seed: 42)
        let model = try Model.uNet(config)
        model.context = context
        let optimizer = Adam(schedule: .cosine(peak: 1e-3, warmupSteps: 1, totalSteps: 4, minimum: 1e-5))
        let x = randomTensor([4, 16, 16, 1], seed: 1)
        let mask = Tensor(shape: x.shape, values: x.values.map { $0 > 0 ? 1 : 0 })
        var losses: [Double] = []
        for _ in 0..<3 {
            losses.append(optimizationStep(model, input: x, optimizer: optimizer, clipNorm: 1) {
                meanSquaredError(prediction: $0, target: x, mask: mask)
            })
        }
        return (losses, model.namedWeights.map(\.parameter.value))
    }

    @Test(arguments: [ConvolutionPrecision.fp32, .bf16, .winograd])
    func twoRunsAreBitIdentical(_ precision: ConvolutionPrecision) throws {
        // Two contexts, so two runtimes: nothing carries over from the first run to the second.
        let first = try run(ComputeContext(precision: precision, threads: 2))
        let second = try run(ComputeContext(precision: precision, threads: 2))
        print("determinism (\(precision)): losses \(first.losses) and \(second.losses)")
        #expect(first.losses == second.losses)
        #expect(first.weights == second.weights)
        #expect(first.losses[2] < first.losses[0])
    }
}
