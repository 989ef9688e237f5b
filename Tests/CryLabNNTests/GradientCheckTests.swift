import CryLabNN
import Testing

/// Every layer's backward pass against central finite differences (see `checkGradients`).
@Suite struct GradientCheckTests {
    @Test(arguments: [
        (kernel: 3, stride: 1, padding: Padding.same, activation: Activation.relu),
        (kernel: 3, stride: 2, padding: Padding.same, activation: Activation.linear),
        (kernel: 5, stride: 1, padding: Padding.valid, activation: Activation.linear),
        (kernel: 3, stride: 2, padding: Padding.valid, activation: Activation.sigmoid),
        (kernel: 1, stride: 1, padding: Padding.same, activation: Activation.linear),
    ])
    func conv2D(kernel: Int, stride: Int, padding: Padding, activation: Activation) {
        for backend in [ConvolutionBackend.oneDNN, .reference] {
            var generator = SeededGenerator(seed: 1)
            let layer = Conv2D(inputChannels: 3, filters: 4, kernelSize: kernel, stride: stride, padding: padding,
                               activation: activation, generator: &generator)
            try! layer.bias!.assign(randomTensor([4], seed: 5, scale: 0.1))
            layer.backend = backend
            checkGradients(layer, inputs: [randomTensor([2, 7, 6, 3], seed: 2)])
        }
    }

    /// Smooth activations only: a ReLU kink within the finite-difference step makes the check flaky,
    /// and ReLU's derivative is checked on its own (ReLU layer, Conv2D with fused ReLU).
    @Test(arguments: [Activation.linear, .sigmoid])
    func conv2DTranspose(activation: Activation) {
        var generator = SeededGenerator(seed: 3)
        let layer = Conv2DTranspose(inputChannels: 3, filters: 5, kernelSize: 2, stride: 2, activation: activation,
                                    generator: &generator)
        try! layer.bias!.assign(randomTensor([5], seed: 6, scale: 0.1))
        checkGradients(layer, inputs: [randomTensor([2, 3, 4, 3], seed: 4)])
    }

    @Test func dense() {
        for activation in [Activation.linear, .relu, .softmax, .tanh] {
            var generator = SeededGenerator(seed: 7)
            let layer = Dense(inputFeatures: 6, units: 5, activation: activation, generator: &generator)
            try! layer.bias!.assign(randomTensor([5], seed: 8, scale: 0.1))
            checkGradients(layer, inputs: [randomTensor([4, 6], seed: 9)])
        }
    }

    @Test func batchNormalization() {
        for shape in [[4, 3, 3, 5], [6, 5]] {
            for frozen in [false, true] {
                // Frozen: inference mode (moving statistics) inside a training step, as in Keras.
                let layer = BatchNormalization(channels: 5)
                layer.trainable = !frozen
                try! layer.gamma.assign(randomTensor([5], seed: 10, scale: 2))
                try! layer.beta.assign(randomTensor([5], seed: 11))
                try! layer.movingMean.assign(randomTensor([5], seed: 12, scale: 0.5))
                try! layer.movingVariance.assign(Tensor(shape: [5], values: [0.5, 1, 1.5, 2, 0.8]))
                checkGradients(layer, inputs: [randomTensor(shape, seed: 13)])
            }
        }
    }

    @Test func weightlessLayers() {
        let image = randomTensor([2, 4, 6, 3], seed: 20)
        checkGradients(MaxPool2D(), inputs: [image])
        checkGradients(MaxPool2D(poolSize: 3, stride: 2, padding: .same), inputs: [image])
        checkGradients(UpSampling2D(size: 2), inputs: [image])
        checkGradients(GlobalAveragePooling2D(), inputs: [image])
        checkGradients(Flatten(), inputs: [image])
        checkGradients(ReLU(), inputs: [image])
        checkGradients(LeakyReLU(), inputs: [image])
        checkGradients(Concatenate(), inputs: [image, randomTensor([2, 4, 6, 2], seed: 21)])
        let dropout = Dropout(rate: 0.4, seed: 5)
        // Same mask for every forward: reset the layer's generator each time.
        checkGradients(dropout, inputs: [image], beforeForward: { dropout.generator = SeededGenerator(seed: 5) })
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

    /// Loss gradients: MSE (masked) w.r.t. the prediction, cross-entropy w.r.t. the logits.
    @Test func losses() {
        let prediction = randomTensor([3, 4], seed: 30)
        let target = randomTensor([3, 4], seed: 31)
        let mask = Tensor(shape: [3, 4], values: [1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1])
        let h: Float = 1e-3
        for m in [nil, mask] {
            let analytic = meanSquaredError(prediction: prediction, target: target, mask: m).gradient.tensor
            for i in 0..<prediction.count {
                var plus = prediction, minus = prediction
                plus.values[i] += h
                minus.values[i] -= h
                let fd = (meanSquaredError(prediction: plus, target: target, mask: m).value
                    - meanSquaredError(prediction: minus, target: target, mask: m).value) / Double(2 * h)
                #expect(abs(fd - Double(analytic.values[i])) < 1e-3)
            }
        }
        // Cross-entropy through softmax: differentiate the loss w.r.t. the logits numerically.
        let logits = randomTensor([3, 4], seed: 32, scale: 2)
        let labels = Tensor(shape: [3, 4], values: [0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1])
        func loss(_ z: Tensor) -> LossResult {
            var p = z
            Activation.softmax.apply(&p)
            return softmaxCrossEntropy(probabilities: p, labels: labels, classWeights: [1, 2, 0.5, 3], labelSmoothing: 0.1)
        }
        let analytic = loss(logits).gradient.tensor
        var worst = 0.0
        for i in 0..<logits.count {
            var plus = logits, minus = logits
            plus.values[i] += h
            minus.values[i] -= h
            let fd = (loss(plus).value - loss(minus).value) / Double(2 * h)
            worst = max(worst, abs(fd - Double(analytic.values[i])))
        }
        print("cross-entropy logits gradient: largest difference \(worst)")
        #expect(worst < 1e-3)
    }
}
