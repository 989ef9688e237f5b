import CryLabNN
import CryLabOneDNN
import Foundation
import Synchronization
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

    /// Models on separate threads, each with a fresh context (its own oneDNN runtime, primitives
    /// and buffers, all created while the others run), must each give the result of one alone:
    /// their calls into oneDNN are serialised by one process-wide lock. 25 rounds of 4 at once.
    @Test func winogradModelsOnSeparateThreadsGiveTheirOwnResults() throws {
        @Sendable func run() -> [Double] {
            let x = randomTensor([2, 16, 16, 1], seed: 1)
            let model = try! Model.uNet(UNetConfiguration(inputShape: [16, 16, 1], widths: [16, 32], seed: 3))
            model.context = ComputeContext(precision: .winograd)
            let optimizer = Adam(schedule: .constant(3e-3))
            return (0..<2).map { _ in optimizationStep(model, input: x, optimizer: optimizer) { meanSquaredError(prediction: $0, target: x) } }
        }
        let alone = run()
        let results = Mutex<[[Double]]>([])
        for _ in 0..<25 {
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                let losses = run()
                results.withLock { $0.append(losses) }
            }
        }
        let all = results.withLock { $0 }
        let differing = all.filter { $0 != alone }
        #expect(all.count == 100)
        #expect(differing.isEmpty, "\(differing.count) of \(all.count) concurrent runs differ from \(alone): \(differing.prefix(3))")
    }
}
