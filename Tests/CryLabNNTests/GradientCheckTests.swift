import CryLabNN
import CryLabOneDNN
import Testing

/// Every layer's backward pass against central finite differences in Double through a Double reference
/// forward (see `checkGradients`). The finite-difference step is 1e-6, so a ReLU or max-pooling kink
/// falls inside it only for an input within ~1e-6 of it: ReLU activations are checked like any other.
@Suite struct GradientCheckTests {
    @Test(arguments: [
        (kernel: 3, stride: 1, padding: Padding.same, activation: Activation.relu, bias: true),
        (kernel: 3, stride: 2, padding: Padding.same, activation: Activation.linear, bias: true),
        (kernel: 5, stride: 1, padding: Padding.valid, activation: Activation.linear, bias: false),
        (kernel: 3, stride: 2, padding: Padding.valid, activation: Activation.sigmoid, bias: true),
        (kernel: 1, stride: 1, padding: Padding.same, activation: Activation.linear, bias: true),
        (kernel: 2, stride: 2, padding: Padding.valid, activation: Activation.tanh, bias: true),
    ])
    func conv2D(kernel: Int, stride: Int, padding: Padding, activation: Activation, bias: Bool) {
        for backend in ["oneDNN", "reference"] {
            var generator = SeededGenerator(seed: 1)
            let layer = Conv2D(inputChannels: 3, filters: 4, kernelSize: kernel, stride: stride, padding: padding,
                               activation: activation, useBias: bias, generator: &generator)
            try! layer.bias?.assign(randomTensor([4], seed: 5, scale: 0.1))
            layer.usesReferenceKernels = backend == "reference"
            let label = "Conv2D \(kernel)x\(kernel) stride \(stride) \(padding) \(activation)\(bias ? "" : " no bias") \(backend)"
            checkGradients(layer, inputs: [randomTensor([2, 7, 6, 3], seed: 2)], label: label)
        }
    }

    @Test(arguments: [Activation.linear, .relu, .sigmoid])
    func conv2DTranspose(activation: Activation) {
        var generator = SeededGenerator(seed: 3)
        let layer = Conv2DTranspose(inputChannels: 3, filters: 5, kernelSize: 2, stride: 2, activation: activation,
                                    generator: &generator)
        try! layer.bias!.assign(randomTensor([5], seed: 6, scale: 0.1))
        checkGradients(layer, inputs: [randomTensor([2, 3, 4, 3], seed: 4)], label: "Conv2DTranspose 2x2 stride 2 \(activation)")
    }

    /// The U-Net's upsampling path on enough input rows (batch x height = 32) that its scatter and
    /// gather split across threads, with ReLU fused into both, with and without bias; 4 filters
    /// (element by element) and 16 (the 16-lane runs).
    @Test(arguments: [true, false], [4, 16])
    func conv2DTransposeSplitAcrossThreads(bias: Bool, filters: Int) {
        var generator = SeededGenerator(seed: 21)
        let layer = Conv2DTranspose(inputChannels: 3, filters: filters, kernelSize: 2, stride: 2, activation: .relu, useBias: bias,
                                    generator: &generator)
        try! layer.bias?.assign(randomTensor([filters], seed: 22, scale: 0.1))
        checkGradients(layer, inputs: [randomTensor([4, 8, 5, 3], seed: 23)],
                       label: "Conv2DTranspose 2x2 stride 2 relu\(bias ? "" : " no bias"), \(filters) filters, 32 input rows")
    }

    /// Kernels other than the stride: overlapping patches (k > s), gaps between them (k < s), 'same' cropping.
    @Test(arguments: [
        (kernel: 3, stride: 2, padding: Padding.same, activation: Activation.relu, bias: true),
        (kernel: 3, stride: 2, padding: Padding.valid, activation: Activation.linear, bias: true),
        (kernel: 3, stride: 1, padding: Padding.same, activation: Activation.sigmoid, bias: true),
        (kernel: 4, stride: 2, padding: Padding.same, activation: Activation.linear, bias: false),
        (kernel: 5, stride: 3, padding: Padding.valid, activation: Activation.tanh, bias: true),
        (kernel: 5, stride: 3, padding: Padding.same, activation: Activation.linear, bias: true),
        (kernel: 1, stride: 2, padding: Padding.valid, activation: Activation.linear, bias: true),
        (kernel: 2, stride: 3, padding: Padding.same, activation: Activation.linear, bias: true),
        (kernel: 2, stride: 2, padding: Padding.same, activation: Activation.relu, bias: true),
    ])
    func conv2DTransposeGeneral(kernel: Int, stride: Int, padding: Padding, activation: Activation, bias: Bool) throws {
        var generator = SeededGenerator(seed: 14)
        let layer = Conv2DTranspose(inputChannels: 3, filters: 4, kernelSize: kernel, stride: stride, padding: padding,
                                    activation: activation, useBias: bias, generator: &generator)
        try! layer.bias?.assign(randomTensor([4], seed: 15, scale: 0.1))
        let x = randomTensor([2, 4, 3, 3], seed: 16)
        // Keras: 'valid' (length - 1) * stride + kernel, but never less than length * stride; 'same' length * stride.
        let valid = [2, max(3 * stride + kernel, 4 * stride), max(2 * stride + kernel, 3 * stride), 4]
        #expect(try layer.outputShape(inputShapes: [x.shape]) == (padding == .same ? [2, 4 * stride, 3 * stride, 4] : valid))
        let label = "Conv2DTranspose \(kernel)x\(kernel) stride \(stride) \(padding) \(activation)\(bias ? "" : " no bias")"
        checkGradients(layer, inputs: [x], label: label)
    }

    @Test func dense() {
        for activation in [Activation.linear, .relu, .sigmoid, .softmax, .tanh] {
            var generator = SeededGenerator(seed: 7)
            let layer = Dense(inputFeatures: 6, units: 5, activation: activation, useBias: activation != .tanh, generator: &generator)
            try! layer.bias?.assign(randomTensor([5], seed: 8, scale: 0.1))
            checkGradients(layer, inputs: [randomTensor([4, 6], seed: 9)], label: "Dense \(activation)")
        }
    }

    /// Training (batch statistics), frozen (inference mode with the moving statistics inside a training
    /// step, as in Keras) and frozen with `frozenUsesBatchStatistics`; 2-D feature maps and 1-D features.
    @Test func batchNormalization() {
        for shape in [[4, 3, 3, 5], [6, 5]] {
            for (frozen, batchStatistics) in [(false, true), (true, false), (true, true)] {
                let layer = BatchNormalization(channels: 5)
                #expect(layer.epsilon == 1e-3 && layer.momentum == 0.99)  // Keras's defaults
                layer.trainable = !frozen
                layer.frozenUsesBatchStatistics = frozen && batchStatistics
                try! layer.gamma.assign(randomTensor([5], seed: 10, scale: 2))
                try! layer.beta.assign(randomTensor([5], seed: 11))
                try! layer.movingMean.assign(randomTensor([5], seed: 12, scale: 0.5))
                try! layer.movingVariance.assign(Tensor(shape: [5], values: [0.5, 1, 1.5, 2, 0.8]))
                let mode = frozen ? (batchStatistics ? "frozen, batch statistics" : "frozen") : "training"
                checkGradients(layer, inputs: [randomTensor(shape, seed: 13)],
                               label: "BatchNormalization \(shape.count == 4 ? "2-D" : "1-D") \(mode)")
            }
        }
    }

    @Test func weightlessLayers() {
        let image = randomTensor([2, 4, 6, 3], seed: 20)
        checkGradients(MaxPool2D(), inputs: [image], label: "MaxPooling2D 2x2")
        // Odd sizes: 'same' pads before the first row and column too.
        let oddImage = randomTensor([2, 5, 7, 3], seed: 22)
        // 2x2 on odd sizes: 'valid' leaves the last row and column out (zero gradient), 'same' pads
        // after them (the windows there hold fewer pixels).
        checkGradients(MaxPool2D(), inputs: [oddImage], label: "MaxPooling2D 2x2 odd sizes")
        checkGradients(MaxPool2D(padding: .same), inputs: [oddImage], label: "MaxPooling2D 2x2 same, odd sizes")
        checkGradients(MaxPool2D(poolSize: 3, stride: 2, padding: .same), inputs: [oddImage], label: "MaxPooling2D 3x3 stride 2 same")
        checkGradients(MaxPool2D(poolSize: 3, stride: 1, padding: .same), inputs: [oddImage], label: "MaxPooling2D 3x3 stride 1 same")
        checkGradients(MaxPool2D(poolSize: 3, stride: 1, padding: .valid), inputs: [image], label: "MaxPooling2D 3x3 stride 1 valid")
        checkGradients(UpSampling2D(size: 2), inputs: [image], label: "UpSampling2D 2")
        checkGradients(UpSampling2D(size: 3), inputs: [image], label: "UpSampling2D 3")
        checkGradients(GlobalAveragePooling2D(), inputs: [image])
        checkGradients(Flatten(), inputs: [image])
        checkGradients(ReLU(), inputs: [image])
        checkGradients(LeakyReLU(), inputs: [image])
        checkGradients(Concatenate(), inputs: [image, randomTensor([2, 4, 6, 2], seed: 21)])
        // The reference reads the mask the layer is about to draw from its generator (see `referenceForward`).
        checkGradients(Dropout(rate: 0.4, seed: 5), inputs: [image])
    }

    @Test func dropoutInvertedScaling() {
        let dropout = Dropout(rate: 0.25, seed: 1)
        let x = Tensor(shape: [10_000], repeating: 1)
        let y = dropout.forward([x], training: true)
        let kept = y.values.filter { $0 != 0 }
        #expect(kept.allSatisfy { abs($0 - 1 / 0.75) < 1e-6 })
        #expect(abs(Double(kept.count) / 10_000 - 0.75) < 0.02)
        #expect(dropout.forward([x], training: false) == x)
    }

    /// Loss values and gradients against Double references: masked MSE w.r.t. the prediction,
    /// cross-entropy (class weights, label smoothing, one soft label) w.r.t. the logits of its softmax.
    @Test func losses() {
        let prediction = randomTensor([3, 4], seed: 30)
        let target = randomTensor([3, 4], seed: 31)
        let mask = Tensor(shape: [3, 4], values: [1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0.5, 1])
        for m in [nil, mask] {
            let label = m == nil ? "MSE" : "MSE masked"
            let loss = meanSquaredError(prediction: prediction, target: target, mask: m)
            func reference(_ p: [DoubleTensor]) -> Double {
                referenceMeanSquaredError(prediction: p[0], target: DoubleTensor(target), mask: m.map(DoubleTensor.init))
            }
            checkLoss(loss, reference, at: DoubleTensor(prediction), label: label)
        }

        let logits = randomTensor([3, 4], seed: 32, scale: 2)
        let labels = Tensor(shape: [3, 4], values: [0, 1, 0, 0, 0.7, 0, 0.3, 0, 0, 0, 0, 1])  // [batch, classes]
        let classWeights: [Float] = [1, 2, 0.5, 3]
        var probabilities = logits
        Activation.softmax.apply(&probabilities, threads: testThreads)
        let loss = softmaxCrossEntropy(probabilities: probabilities, labels: labels, classWeights: classWeights, labelSmoothing: 0.1)
        func reference(_ z: [DoubleTensor]) -> Double {
            referenceCrossEntropy(probabilities: referenceActivation(z[0], .softmax), labels: DoubleTensor(labels),
                                  classWeights: classWeights.map(Double.init), labelSmoothing: Double(Float(0.1)))
        }
        checkLoss(loss, reference, at: DoubleTensor(logits), label: "cross-entropy w.r.t. logits")
    }

    /// A loss's value against its Double reference at `point`, and its gradient against Double finite differences.
    func checkLoss(_ loss: LossResult, _ reference: ([DoubleTensor]) -> Double, at point: DoubleTensor, label: String,
                   sourceLocation: SourceLocation = #_sourceLocation) {
        let expected = reference([point])
        let valueError = abs(loss.value - expected) / abs(expected)
        #expect(valueError <= forwardTolerance, "\(label): value \(loss.value), reference \(expected)", sourceLocation: sourceLocation)
        let gradient = AnalyticGradient(name: "gradient", tensor: 0, gradient: loss.gradient.tensor)
        let worst = compareWithFiniteDifferences(reference, at: [point], [gradient], label: label, sourceLocation: sourceLocation)
        print("gradient check \(label): value relative error \(valueError), worst gradient error \(worst.error)")
    }
}
