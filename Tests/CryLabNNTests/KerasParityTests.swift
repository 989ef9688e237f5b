import CryLabNN
import Foundation
import Testing

/// Fixtures written by Scripts/keras/make_fixtures.py (Keras 3.15 / TensorFlow 2.21).
struct KerasFixtures: @unchecked Sendable {  // immutable after loading
    let cases: [String: [String: Any]]
    private let index: [String: (shape: [Int], offset: Int)]
    private let values: [Float]

    static let shared: KerasFixtures = {
        guard let manifestURL = Bundle.module.url(forResource: "manifest", withExtension: "json", subdirectory: "Fixtures/keras"),
              let blobURL = Bundle.module.url(forResource: "tensors", withExtension: "bin", subdirectory: "Fixtures/keras") else {
            fatalError("Keras fixtures missing; run $(Scripts/python-env.sh tensorflow-cpu keras) Scripts/keras/make_fixtures.py")
        }
        let manifest = try! JSONSerialization.jsonObject(with: Data(contentsOf: manifestURL)) as! [String: Any]
        let tensors = manifest["tensors"] as! [String: [String: Any]]
        let blob = try! Data(contentsOf: blobURL)
        let values = blob.withUnsafeBytes { raw in
            (0..<(blob.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
        return KerasFixtures(cases: manifest["cases"] as! [String: [String: Any]],
                             index: tensors.mapValues { ($0["shape"] as! [Int], $0["offset"] as! Int) },
                             values: values)
    }()

    func tensor(_ name: String) -> Tensor {
        guard let (shape, offset) = index[name] else { fatalError("fixture tensor \(name) missing") }
        let count = shape.reduce(1, *)
        return Tensor(shape: shape, values: Array(values[offset..<(offset + count)]))
    }

    func has(_ name: String) -> Bool { index[name] != nil }
}

/// max |ours - keras| / max |keras|: relative to the tensor's scale.
func compare(_ ours: Tensor, _ keras: Tensor, _ what: String, tolerance: Double = 1e-4,
             sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(ours.shape == keras.shape, "\(what): shape \(ours.shape) vs Keras \(keras.shape)", sourceLocation: sourceLocation)
    guard ours.shape == keras.shape else { return }
    let error = Double(maxAbsDifference(ours.values, keras.values)) / Double(max(maxAbs(keras.values), 1e-6))
    print("Keras parity \(what): relative difference \(error)")
    #expect(error <= tolerance, "\(what): relative difference \(error) > \(tolerance)", sourceLocation: sourceLocation)
}

@Suite struct KerasParityTests {
    let f = KerasFixtures.shared

    /// Runs one layer case: same weights, forward in the recorded mode, backward of L = Σ r·y.
    func check(_ name: String, _ layer: any Layer) throws {
        let meta = f.cases[name]!
        for weight in layer.weights where f.has("\(name)/weight/\(weight.name)") {
            try weight.assign(f.tensor("\(name)/weight/\(weight.name)"), layerName: layer.name)
        }
        let inputs = (0..<(meta["inputs"] as! Int)).map { f.tensor("\(name)/input/\($0)") }
        let training = meta["training"] as! Bool
        // Keras's inference mode: our frozen BatchNorm in a training step behaves the same way.
        if !training { layer.trainable = false }
        let y = layer.forward(inputs, training: true)
        compare(y, f.tensor("\(name)/output"), "\(name) output")
        for weight in layer.weights { weight.zeroGradient() }
        let dx = layer.backward(f.tensor("\(name)/r"), needsInputGradients: true)
        for (i, gradient) in dx.enumerated() { compare(gradient, f.tensor("\(name)/input_gradient/\(i)"), "\(name) d input \(i)") }
        for weight in layer.weights {
            if layer.trainable, f.has("\(name)/weight_gradient/\(weight.name)") {
                compare(weight.gradient!, f.tensor("\(name)/weight_gradient/\(weight.name)"), "\(name) d \(weight.name)")
            }
            if f.has("\(name)/weight_after/\(weight.name)") {
                compare(weight.value, f.tensor("\(name)/weight_after/\(weight.name)"), "\(name) \(weight.name) after")
            }
        }
    }

    @Test func convolutionLayers() throws {
        var g = SeededGenerator(seed: 0)
        try check("conv_same_relu", Conv2D(inputChannels: 3, filters: 4, kernelSize: 3, activation: .relu, generator: &g))
        try check("conv_stride2_same", Conv2D(inputChannels: 3, filters: 5, kernelSize: 3, stride: 2, generator: &g))
        try check("conv_valid_5", Conv2D(inputChannels: 2, filters: 3, kernelSize: 5, padding: .valid, generator: &g))
        try check("conv_transpose", Conv2DTranspose(inputChannels: 6, filters: 4, activation: .relu, generator: &g))
    }

    /// Conv2DTranspose with kernel != stride, both paddings: pins down how Keras crops 'same'.
    @Test(arguments: ["conv_transpose_k3_s2_same", "conv_transpose_k3_s2_valid", "conv_transpose_k4_s2_same",
                      "conv_transpose_k3_s1_same", "conv_transpose_k5_s3_valid", "conv_transpose_k5_s2_same",
                      "conv_transpose_k2_s3_same", "conv_transpose_k1_s2_valid"])
    func generalTransposedConvolution(name: String) throws {
        let meta = try #require(f.cases[name], "fixture case \(name) missing; regenerate with Scripts/keras/make_fixtures.py")
        let input = f.tensor("\(name)/input/0")
        var g = SeededGenerator(seed: 0)
        let layer = Conv2DTranspose(inputChannels: input.shape[3], filters: meta["filters"] as! Int, kernelSize: meta["kernel"] as! Int,
                                    stride: meta["stride"] as! Int, padding: Padding(rawValue: meta["padding"] as! String)!,
                                    activation: Activation(rawValue: meta["activation"] as! String)!, generator: &g)
        try check(name, layer)
    }

    @Test func weightlessLayers() throws {
        try check("max_pooling", MaxPool2D())
        try check("up_sampling", UpSampling2D())
        try check("concatenate", Concatenate())
        try check("global_average_pooling", GlobalAveragePooling2D())
        try check("flatten", Flatten())
        try check("leaky_relu", LeakyReLU())
        try check("relu", ReLU())
    }

    @Test func batchNormalizationAndDense() throws {
        try check("batch_norm_2d_training", BatchNormalization(channels: 5))
        try check("batch_norm_1d_inference", BatchNormalization(channels: 5))
        var g = SeededGenerator(seed: 0)
        try check("dense_relu", Dense(inputFeatures: 7, units: 6, activation: .relu, generator: &g))
        try check("dense_softmax", Dense(inputFeatures: 7, units: 4, activation: .softmax, generator: &g))
    }

    @Test func crossEntropyWithSmoothingAndClassWeights() throws {
        var g = SeededGenerator(seed: 0)
        let dense = Dense(inputFeatures: 7, units: 4, activation: .softmax, generator: &g)
        try dense.kernel.assign(f.tensor("cross_entropy/kernel"))
        try dense.bias!.assign(f.tensor("cross_entropy/bias"))
        let p = dense.forward([f.tensor("cross_entropy/input")], training: true)
        compare(p, f.tensor("cross_entropy/probabilities"), "cross-entropy probabilities")
        let loss = softmaxCrossEntropy(probabilities: p, labels: f.tensor("cross_entropy/labels"),
                                       classWeights: f.tensor("cross_entropy/class_weights").values, labelSmoothing: 0.1)
        let kerasLoss = f.cases["cross_entropy"]!["loss"] as! Double
        print("Keras parity cross-entropy loss: \(loss.value) vs \(kerasLoss)")
        #expect(abs(loss.value - kerasLoss) / kerasLoss < 1e-5)
        guard case let .logits(dz) = loss.gradient else { Issue.record("expected a logits gradient"); return }
        let dx = dense.backward(preActivationGradient: dz, needsInputGradients: true, context: .default)
        compare(dx[0], f.tensor("cross_entropy/input_gradient"), "cross-entropy d input")
        compare(dense.kernel.gradient!, f.tensor("cross_entropy/kernel_gradient"), "cross-entropy d kernel")
    }

    /// A small U-Net from identical weights: names, loss, every gradient, and every weight after one Adam step.
    @Test func uNetAdamStep() throws {
        let meta = f.cases["unet"]!
        let model = try Model.uNet(UNetConfiguration(inputShape: meta["input_shape"] as! [Int], widths: meta["widths"] as! [Int],
                                                     kernelSize: meta["kernel"] as! Int))
        #expect(model.layers.map(\.name) == meta["layers"] as! [String])
        #expect(model.parameterCount == meta["parameters"] as! Int)
        var initial: [String: Tensor] = [:]
        for (path, _) in model.namedWeights { initial[path] = f.tensor("unet/initial/\(path)") }
        try model.setWeights(initial)

        let x = f.tensor("unet/input"), target = f.tensor("unet/target")
        model.zeroGradients()
        let prediction = model.forward(x, training: true)
        compare(prediction, f.tensor("unet/prediction"), "U-Net prediction")
        let loss = meanSquaredError(prediction: prediction, target: target)
        let kerasLoss = meta["loss"] as! Double
        print("Keras parity U-Net loss: \(loss.value) vs \(kerasLoss)")
        #expect(abs(loss.value - kerasLoss) / kerasLoss < 1e-4)
        model.backward(loss.gradient)
        for (path, p) in model.namedWeights { compare(p.gradient!, f.tensor("unet/gradient/\(path)"), "U-Net d \(path)") }
        Adam().step(model)
        for (path, p) in model.namedWeights { compare(p.value, f.tensor("unet/after/\(path)"), "U-Net \(path) after Adam") }
    }
}
