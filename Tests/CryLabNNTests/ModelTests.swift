import CryLabNN
import Foundation
import Testing

@Suite struct ModelTests {
    @Test func storyUNetParameterCounts() throws {
        let model = try Model.uNet(.story)
        #expect(model.parameterCount == 7_759_521)
        // The encoder up to (and including) the second 256-filter convolution.
        let encoderNames = (0..<8).map { $0 == 0 ? "conv2d" : "conv2d_\($0)" }
        let encoderCount = encoderNames.reduce(0) { $0 + model.layer(named: $1)!.parameterCount }
        #expect(encoderCount == 1_171_680)
        let classifier = try Model.classifier(ClassifierConfiguration(head: .pooled))
        let convolutionCount = classifier.layers.filter { $0 is Conv2D }.reduce(0) { $0 + $1.parameterCount }
        #expect(convolutionCount == 1_171_680)
        #expect(try model.outputShape(batch: 2) == [2, 128, 128, 1])
    }

    @Test func kerasLayerNamesInCreationOrder() throws {
        let model = try Model.uNet(.story)
        let names = model.layers.map(\.name)
        #expect(Array(names.prefix(6)) == ["conv2d", "conv2d_1", "max_pooling2d", "conv2d_2", "conv2d_3", "max_pooling2d_1"])
        #expect(names.contains("conv2d_transpose") && names.contains("conv2d_transpose_3"))
        #expect(names.contains("concatenate_3") && !names.contains("concatenate_4"))
        #expect(names.last == "conv2d_18")
        let kernel = model.layer(named: "conv2d_transpose")!.weight(named: "kernel")!
        #expect(kernel.shape == [2, 2, 256, 512])  // [kh, kw, out, in]
        #expect(model.layer(named: "conv2d_2")!.weight(named: "kernel")!.shape == [3, 3, 32, 64])

        let classifier = try Model.classifier(.story)
        let head = classifier.layers.map(\.name).drop { $0 != "flatten" }
        #expect(Array(head) == ["flatten", "dense", "batch_normalization", "dropout", "dense_1", "dense_2", "dense_3"])
        #expect(classifier.layer(named: "dense")!.weight(named: "kernel")!.shape == [65_536, 1024])
        // encoder 1,171,680 + Dense 65,536x1024 (67,109,888) + BN 4x1024 + 524,800 + 65,664 + 516
        #expect(classifier.parameterCount == 68_876_644)
        #expect(classifier.trainableParameterCount == 68_876_644 - 2 * 1024)
        #expect(classifier.layer(named: "batch_normalization")!.weights.map(\.name)
            == ["gamma", "beta", "moving_mean", "moving_variance"])
    }

    @Test func configurationRoundTripsThroughJSON() throws {
        var c = UNetConfiguration(inputShape: [16, 16, 1], widths: [4, 8, 16], skipConnections: [true, false],
                                  batchNormalization: true, dropoutRate: 0.1, outputActivation: .sigmoid, seed: 7)
        c.kernelSize = 5
        for configuration in [ModelConfiguration(uNet: c),
                              ModelConfiguration(classifier: ClassifierConfiguration(encoder: c, encoderLevels: 2, head: .story, classes: 3))] {
            let json = try configuration.json()
            let decoded = try ModelConfiguration(json: json)
            #expect(decoded == configuration)
            let a = try configuration.build(), b = try decoded.build()
            #expect(a.layers.map(\.name) == b.layers.map(\.name))
            #expect(a.namedWeights.map(\.parameter.value) == b.namedWeights.map(\.parameter.value))
        }
        let noSkip = try Model.uNet(c)
        #expect(noSkip.layers.filter { $0 is Concatenate }.count == 1)
        #expect(noSkip.layers.contains { $0 is BatchNormalization } && noSkip.layers.contains { $0 is ReLU })
    }

    @Test func settingWeightsReportsPathAndShapes() throws {
        let model = try Model.uNet(UNetConfiguration(inputShape: [8, 8, 1], widths: [2, 4]))
        #expect(throws: WeightError.shapeMismatch(path: "conv2d/kernel", expected: [3, 3, 1, 2], actual: [3, 3, 2, 1])) {
            try model.setWeight(layer: "conv2d", weight: "kernel", to: Tensor(zeros: [3, 3, 2, 1]))
        }
        #expect(throws: WeightError.self) { try model.setWeight(layer: "conv9", weight: "kernel", to: Tensor(zeros: [1])) }
        let error = WeightError.shapeMismatch(path: "conv2d/kernel", expected: [3, 3, 1, 2], actual: [3, 3, 2, 1])
        #expect(error.description.contains("conv2d/kernel") && error.description.contains("[3, 3, 1, 2]"))
        var all: [String: Tensor] = [:]
        for (path, p) in model.namedWeights { all[path] = Tensor(shape: p.shape, repeating: 0.5) }
        try model.setWeights(all)
        #expect(model.namedWeights.allSatisfy { $0.parameter.value.values.allSatisfy { $0 == 0.5 } })
        all.removeValue(forKey: "conv2d/bias")
        #expect(throws: WeightError.missingWeight(path: "conv2d/bias")) { try model.setWeights(all) }
    }

    /// Gradients through a whole U-Net against Double finite differences of its MSE loss, computed through
    /// the layers' Double references composed along the model's graph (skip connections: a tensor used
    /// twice gets the sum of both gradients). Plain, and with BatchNormalization and Dropout. The weights
    /// stay random, signs and all: with a 1e-6 step, ReLU and max-pooling kinks almost never fall inside it.
    @Test(arguments: [false, true])
    func uNetGradientsMatchFiniteDifferences(batchNormalizationAndDropout: Bool) throws {
        let model = try Model.uNet(UNetConfiguration(inputShape: [8, 8, 1], widths: [3, 4, 5],
                                                     batchNormalization: batchNormalizationAndDropout,
                                                     dropoutRate: batchNormalizationAndDropout ? 0.2 : 0,
                                                     outputActivation: .linear, seed: 3))
        randomizeInitialWeights(model, seed: 8)
        let x = randomTensor([2, 8, 8, 1], seed: 4)
        let target = randomTensor([2, 8, 8, 1], seed: 5)
        let mask = Tensor(shape: x.shape, values: x.values.map { $0 > -0.5 ? 1 : 0 })
        let label = batchNormalizationAndDropout ? "U-Net with BatchNormalization and Dropout" : "U-Net"
        try checkModelGradients(model, input: x, label: label,
                                loss: { meanSquaredError(prediction: $0, target: target, mask: mask) },
                                referenceLoss: { referenceMeanSquaredError(prediction: $0, target: DoubleTensor(target),
                                                                           mask: DoubleTensor(mask)) })
    }

    /// A classifier (encoder with BatchNormalization, its first block frozen, so in inference mode; head
    /// Dense + BatchNormalization + Dropout; softmax) trained through the fused softmax + cross-entropy
    /// gradient, against Double finite differences of the cross-entropy.
    @Test func classifierGradientsMatchFiniteDifferences() throws {
        let head = HeadConfiguration(pooling: .flatten, hidden: [.init(units: 6, batchNormalization: true, dropoutRate: 0.25)])
        let model = try Model.classifier(ClassifierConfiguration(
            encoder: UNetConfiguration(inputShape: [8, 8, 1], widths: [2, 3, 4], batchNormalization: true, seed: 5),
            encoderLevels: 2, head: head, classes: 3))
        randomizeInitialWeights(model, seed: 9)
        model.freeze(encoderBlocks: 0..<1)
        let x = randomTensor([4, 8, 8, 1], seed: 6)
        let labels = Tensor(shape: [4, 3], values: [1, 0, 0, 0, 1, 0, 0, 0, 1, 0.2, 0.8, 0])  // [batch, classes]
        let classWeights: [Float] = [1, 0.5, 2]
        try checkModelGradients(model, input: x, label: "classifier",
                                loss: { softmaxCrossEntropy(probabilities: $0, labels: labels, classWeights: classWeights,
                                                            labelSmoothing: 0.1) },
                                referenceLoss: { referenceCrossEntropy(probabilities: $0, labels: DoubleTensor(labels),
                                                                       classWeights: classWeights.map(Double.init),
                                                                       labelSmoothing: Double(Float(0.1))) })
    }

    /// Replaces the builders' zero biases, unit gammas and default moving statistics by random values,
    /// so that every weight shapes the output.
    func randomizeInitialWeights(_ model: Model, seed: UInt64) {
        for (i, (path, p)) in model.namedWeights.enumerated() {
            let noise = randomTensor(p.shape, seed: seed + UInt64(i), scale: 0.2)
            switch path.split(separator: "/").last! {
            case "bias", "beta", "moving_mean": try! p.assign(noise)
            case "gamma", "moving_variance": try! p.assign(Tensor(shape: p.shape, values: noise.values.map { 1 + $0 }))
            default: break
            }
        }
    }

    @Test func freezingStopsUpdatesAndBatchNormUsesMovingStatistics() throws {
        let config = ClassifierConfiguration(
            encoder: UNetConfiguration(inputShape: [8, 8, 1], widths: [2, 3, 4], batchNormalization: true),
            encoderLevels: 2, head: .story, classes: 3)
        let model = try Model.classifier(config)
        #expect(model.encoderBlocks.count == 2)
        model.freeze(encoderBlocks: 0..<1)
        try model.freeze(layersNamed: ["dense_1"])
        let frozen = model.encoderBlocks[0] + [model.layer(named: "dense_1")!]
        let before = frozen.map { $0.weights.map(\.value) }
        let otherBefore = model.layer(named: "conv2d_2")!.weights.map(\.value)
        let x = randomTensor([4, 8, 8, 1], seed: 1)
        let labels = Tensor(shape: [4, 3], values: [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0])
        let optimizer = Adam()
        for _ in 0..<2 {
            optimizationStep(model, input: x, optimizer: optimizer) { softmaxCrossEntropy(probabilities: $0, labels: labels) }
        }
        // Frozen: no gradients, no updates, and BatchNorm's moving statistics untouched (inference mode).
        #expect(frozen.map { $0.weights.map(\.value) } == before)
        #expect(frozen.allSatisfy { $0.weights.allSatisfy { $0.gradient == nil } })
        #expect(model.layer(named: "conv2d_2")!.weights.map(\.value) != otherBefore)
        let unfrozenNorm = model.layers.compactMap { $0 as? BatchNormalization }.first { $0.trainable }!
        #expect(unfrozenNorm.movingMean.value.values != [Float](repeating: 0, count: unfrozenNorm.channels))
        // The flag lets a frozen BatchNorm keep using batch statistics.
        let frozenNorm = model.encoderBlocks[0].compactMap { $0 as? BatchNormalization }.first!
        #expect(!frozenNorm.usesBatchStatistics(training: true))
        frozenNorm.frozenUsesBatchStatistics = true
        #expect(frozenNorm.usesBatchStatistics(training: true))
        // Freezing is not the mode flag: an unfrozen BatchNorm in inference mode uses moving statistics.
        #expect(!unfrozenNorm.usesBatchStatistics(training: false))
        #expect(model.trainableParameterCount < model.parameterCount)
    }

    @Test func classifierReusesPretrainedEncoderByName() throws {
        let encoder = UNetConfiguration(inputShape: [16, 16, 1], widths: [2, 4, 8], seed: 11)
        let uNet = try Model.uNet(encoder)
        let classifier = try Model.classifier(ClassifierConfiguration(encoder: UNetConfiguration(inputShape: [16, 16, 1],
                                                                                                  widths: [2, 4, 8], seed: 99),
                                                                       encoderLevels: 2, head: .pooled, classes: 4))
        let copied = try classifier.copyWeights(from: uNet, layerNames: ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3"])
        #expect(copied == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3"])
        for name in copied {
            #expect(classifier.layer(named: name)!.weights.map(\.value) == uNet.layer(named: name)!.weights.map(\.value))
        }
        #expect(try classifier.outputShape(batch: 3) == [3, 4])
    }
}

@Suite struct OptimizerTests {
    @Test func adamFirstStepsMatchClosedForm() {
        let p = Parameter(name: "w", value: Tensor(shape: [2], values: [1, -2]))
        let adam = Adam()
        var m: [Double] = [0, 0], v: [Double] = [0, 0], theta: [Double] = [1, -2]
        for t in 1...3 {
            let g: [Float] = [Float(t) * 0.5, -0.25]
            p.zeroGradient()
            let layerGradient = Tensor(shape: [2], values: g)
            p.addToGradient(layerGradient)
            adam.step([p], threads: testThreads)
            let alpha = 1e-3 * (1 - pow(0.999, Double(t))).squareRoot() / (1 - pow(0.9, Double(t)))
            for i in 0..<2 {
                m[i] += (Double(g[i]) - m[i]) * 0.1
                v[i] += (Double(g[i]) * Double(g[i]) - v[i]) * 0.001
                theta[i] -= alpha * m[i] / (v[i].squareRoot() + 1e-7)
            }
        }
        #expect(abs(Double(p.value.values[0]) - theta[0]) < 1e-6)
        #expect(abs(Double(p.value.values[1]) - theta[1]) < 1e-6)
    }

    @Test func adamWAndSGDMomentum() {
        let p = Parameter(name: "w", value: Tensor(shape: [1], values: [2]))
        p.addToGradient(Tensor(shape: [1], values: [0]))
        let adamW = Adam.adamW(schedule: .constant(0.1), weightDecay: 0.5)
        adamW.step([p], threads: testThreads)
        #expect(abs(p.value.values[0] - 2 * (1 - 0.05)) < 1e-6)  // zero gradient: decay only

        let q = Parameter(name: "w", value: Tensor(shape: [1], values: [1]))
        let sgd = SGD(schedule: .constant(0.1), momentum: 0.9)
        q.addToGradient(Tensor(shape: [1], values: [1]))
        sgd.step([q], threads: testThreads)  // velocity -0.1 -> 0.9
        sgd.step([q], threads: testThreads)  // velocity -0.19 -> 0.71
        #expect(abs(q.value.values[0] - 0.71) < 1e-6)
    }

    @Test func schedulesAndClipping() {
        #expect(LearningRateSchedule.constant(0.1).rate(atStep: 100) == 0.1)
        let step = LearningRateSchedule.step(initial: 1, factor: 0.5, every: 10)
        #expect(step.rate(atStep: 9) == 1 && step.rate(atStep: 10) == 0.5 && step.rate(atStep: 25) == 0.25)
        let cosine = LearningRateSchedule.cosine(peak: 1, warmupSteps: 4, totalSteps: 14, minimum: 0.1)
        #expect(cosine.rate(atStep: 0) == 0.25 && cosine.rate(atStep: 3) == 1)
        #expect(abs(cosine.rate(atStep: 9) - 0.55) < 1e-6)
        #expect(abs(cosine.rate(atStep: 14) - 0.1) < 1e-6 && abs(cosine.rate(atStep: 99) - 0.1) < 1e-6)

        let a = Parameter(name: "a", value: Tensor(zeros: [2])), b = Parameter(name: "b", value: Tensor(zeros: [1]))
        a.addToGradient(Tensor(shape: [2], values: [3, 0]))
        b.addToGradient(Tensor(shape: [1], values: [4]))
        let norm = clipGradientsByGlobalNorm([a, b], maxNorm: 1)
        #expect(norm == 5)
        #expect(abs(a.gradient!.values[0] - 0.6) < 1e-6 && abs(b.gradient!.values[0] - 0.8) < 1e-6)
    }
}
