import Foundation
import CryLabNN
import CryLabOneDNN
import Testing

/// Element-wise and per-channel kernels on tensors large enough to be split across threads
/// (the gradient checks use small ones, which run in one chunk), against plain Double loops.
@Suite struct ParallelKernelTests {
    /// Two threads, so that the kernels below split their work in two.
    let context = ComputeContext(threads: 2)

    /// 4 x 64 x 64 x 16: 262,144 values, two chunks of rows with two threads.
    @Test func batchNormalizationSplitAcrossThreads() throws {
        let (rows, channels) = (4 * 64 * 64, 16)
        let x = randomTensor([4, 64, 64, channels], seed: 1, scale: 3)
        let dy = randomTensor(x.shape, seed: 2)
        let layer = BatchNormalization(channels: channels)
        try layer.gamma.assign(Tensor(shape: [channels], values: (0..<channels).map { 0.5 + Float($0) / 16 }))
        try layer.beta.assign(Tensor(shape: [channels], values: (0..<channels).map { Float($0) / 8 - 1 }))
        let y = layer.forward([x], training: true, context: context)
        let dx = layer.backward(dy, needsInputGradients: true, context: context)[0]

        // Reference: the textbook formulas in Double.
        var mean = [Double](repeating: 0, count: channels), variance = mean
        for r in 0..<rows { for c in 0..<channels { mean[c] += Double(x.values[r * channels + c]) / Double(rows) } }
        for r in 0..<rows { for c in 0..<channels {
            let d = Double(x.values[r * channels + c]) - mean[c]
            variance[c] += d * d / Double(rows)
        } }
        var expectedY = [Float](), xhat = [Double]()
        for r in 0..<rows { for c in 0..<channels {
            let normalized = (Double(x.values[r * channels + c]) - mean[c]) / (variance[c] + 1e-3).squareRoot()
            xhat.append(normalized)
            expectedY.append(Float(normalized * Double(layer.gamma.value.values[c]) + Double(layer.beta.value.values[c])))
        } }
        var sumDy = [Double](repeating: 0, count: channels), sumDyXhat = sumDy
        for i in 0..<rows * channels {
            sumDy[i % channels] += Double(dy.values[i])
            sumDyXhat[i % channels] += Double(dy.values[i]) * xhat[i]
        }
        let expectedDx: [Float] = (0..<rows * channels).map { i in
            let c = i % channels
            let scale = Double(layer.gamma.value.values[c]) / (variance[c] + 1e-3).squareRoot()
            return Float(scale * (Double(dy.values[i]) - sumDy[c] / Double(rows) - xhat[i] * sumDyXhat[c] / Double(rows)))
        }
        #expect(relativeError(y.values, expectedY) < 1e-5, "y: \(relativeError(y.values, expectedY))")
        #expect(relativeError(dx.values, expectedDx) < 1e-5, "dx: \(relativeError(dx.values, expectedDx))")
        #expect(relativeError(layer.beta.gradient!.values, sumDy.map { Float($0) }) < 1e-6)
        #expect(relativeError(layer.gamma.gradient!.values, sumDyXhat.map { Float($0) }) < 1e-6)
        // The moving statistics moved 1 % of the way to the batch's.
        #expect(abs(Double(layer.movingMean.value.values[3]) - 0.01 * mean[3]) < 1e-6)
    }

    /// The same layer on the same values in blocked16: bit for bit the NHWC results, in blocked16.
    /// (Each channel's sums visit its values in the same order and chunks in both layouts; the
    /// Double sums of float32 values are near exact anyway, so this checks the indexing.)
    @Test func batchNormalizationInBlockedLayoutMatchesNHWC() {
        // 184,320 values: two chunks of 1,920 pixels, the split inside the second image.
        let x = randomTensor([3, 32, 40, 48], seed: 3, scale: 2), dy = randomTensor([3, 32, 40, 48], seed: 4)
        func run(_ layout: ActivationLayout) -> (y: Tensor, dx: Tensor, gradients: [Tensor?], moving: [Tensor]) {
            let layer = BatchNormalization(channels: 48)
            let y = layer.forward([x.converted(to: layout, threads: 2)], training: true, context: context)
            let dx = layer.backward(dy.converted(to: layout, threads: 2), needsInputGradients: true, context: context)[0]
            #expect(y.layout == layout && dx.layout == layout)
            return (y.converted(to: .nhwc, threads: 2), dx.converted(to: .nhwc, threads: 2), [layer.gamma.gradient, layer.beta.gradient],
                    [layer.movingMean.value, layer.movingVariance.value])
        }
        let nhwc = run(.nhwc), blocked = run(.blocked16)
        #expect(blocked.y == nhwc.y)
        #expect(blocked.dx == nhwc.dx)
        #expect(blocked.gradients == nhwc.gradients)
        #expect(blocked.moving == nhwc.moving)
    }

    /// 2 x 128 x 128 x 16 (two chunks of 16-value blocks) and 3 x 5 x 7 (a tail of 9 values).
    @Test(arguments: [[2, 128, 128, 16], [1, 3, 5, 7]])
    func reluSplitAcrossThreads(_ shape: [Int]) {
        let x = randomTensor(shape, seed: 5)
        let y = ReLU().forward([x], training: false, context: context)
        #expect(y.values == x.values.map { $0 < 0 ? 0 : $0 })
        #expect(x.values.contains { $0 < 0 }, "the input must have negatives for the test to mean anything")
        var z = x
        Activation.relu.apply(&z, threads: 2)
        #expect(z == y)
    }

    /// Adam (and AdamW) on 16-lane vectors split across threads, over 2 x 8,192 blocks plus a tail
    /// of 5: the bits of the element-by-element formula, over three steps.
    @Test(arguments: [Float(0), 0.004])
    func adamSplitAcrossThreads(_ weightDecay: Float) {
        let count = 2 * 8_192 * 16 + 5
        let start = randomTensor([count], seed: 21), gradients = (0..<3).map { randomTensor([count], seed: 22 + UInt64($0), scale: 0.1) }
        let parameter = Parameter(name: "kernel", value: start)
        let adam = Adam(schedule: .constant(1e-2), weightDecay: weightDecay)
        var (theta, m, v) = (start.values, [Float](repeating: 0, count: count), [Float](repeating: 0, count: count))
        for (step, gradient) in gradients.enumerated() {
            parameter.zeroGradient()
            parameter.addToGradient(gradient)
            adam.step([parameter], threads: 2)
            let t = Float(step + 1), lr: Float = 1e-2
            let alpha = lr * (1 - pow(Float(0.999), t)).squareRoot() / (1 - pow(Float(0.9), t))
            let decay = weightDecay * lr
            for i in 0..<count {
                let g = gradient.values[i]
                if decay != 0 { theta[i] -= theta[i] * decay }
                m[i] += (g - m[i]) * (1 - 0.9)
                v[i] += (g * g - v[i]) * (1 - 0.999)
                theta[i] -= alpha * m[i] / (v[i].squareRoot() + 1e-7)
            }
        }
        #expect(parameter.value.values == theta)
        #expect(theta != start.values)
    }

    /// A 2x2 stride-2 transposed convolution with ReLU on 2 x 16 x 16 inputs (32 input rows, two
    /// chunks): the bias gradient summed while gathering is the Double sum of the masked output
    /// gradient.
    @Test func transposedConvolutionBiasGradientSplitAcrossThreads() {
        var generator = SeededGenerator(seed: 41)
        let layer = Conv2DTranspose(inputChannels: 8, filters: 5, kernelSize: 2, stride: 2, activation: .relu, generator: &generator)
        let x = randomTensor([2, 16, 16, 8], seed: 42), dy = randomTensor([2, 32, 32, 5], seed: 43)
        let y = layer.forward([x], training: true, context: context)
        layer.bias!.zeroGradient()
        _ = layer.backward(dy, needsInputGradients: true, context: context)
        var expected = [Double](repeating: 0, count: 5)
        for (i, g) in dy.values.enumerated() where y.values[i] > 0 { expected[i % 5] += Double(g) }
        let bias = layer.bias!.gradient!.values
        #expect(zip(bias, expected).allSatisfy { abs(Double($0) - $1) <= 1e-5 * max(1, abs($1)) }, "\(bias) against \(expected)")
        #expect(y.values.contains { $0 == 0 } && y.values.contains { $0 > 0 })
    }

    /// 2x2 max pooling with positions, 16 channels at a time, against a plain loop over windows on
    /// values with many ties (the first maximum in window order wins); then the threaded scatter
    /// of the backward pass into a gradient holding another share.
    @Test func pooling2x2SixteenLanesAndThreadedScatter() {
        let shape = [4, 64, 34, 32]
        let x = Tensor(shape: shape, values: randomTensor(shape, seed: 61).values.map { ($0 * 3).rounded() })
        let (y, argmax) = maxPool2DForward(x, pool: 2, stride: 2, padding: .valid, threads: 2)
        var expected = [Float](), positions = [Int32]()
        for b in 0..<4 { for oy in 0..<32 { for ox in 0..<17 { for c in 0..<32 {
            var best = -Float.infinity, at = 0
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let i = ((b * 64 + 2 * oy + dy) * 34 + 2 * ox + dx) * 32 + c
                if x.values[i] > best { (best, at) = (x.values[i], i) }
            }
            expected.append(best)
            positions.append(Int32(at))
        } } } }
        #expect(y.values == expected && argmax == positions)
        let dy = randomTensor(y.shape, seed: 62), share = randomTensor(shape, seed: 63)
        var threaded = share, serial = share.values
        maxPool2DScatterAdd(dy, argmax: argmax, into: &threaded, windowsOverlap: false, threads: 2)
        for (i, g) in dy.values.enumerated() { serial[Int(argmax[i])] += g }
        #expect(threaded.values == serial)
    }

    /// Max pooling 2x2 on 3x3 with 'same' padding, as Keras computes it: the windows of the last
    /// column and row hold two pixels, and the corner's one.
    @Test func samePaddedPoolingOfOddSizes() {
        let x = Tensor(shape: [1, 3, 3, 1], values: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        let pool = MaxPool2D(padding: .same)
        #expect(pool.forward([x], training: true).values == [5, 6, 8, 9])
        #expect(pool.forward([x], training: false).values == [5, 6, 8, 9])
    }

    /// ReLU's backward from a bit mask of the output gives the gradient it gives from the output,
    /// bit for bit: 65,541 values (two chunks, and a tail short of 16), a quarter of them exact zeros.
    @Test func reluMaskBackwardMatchesOutputBackward() {
        let count = 65_541
        var generator = SeededGenerator(seed: 7)
        let output = (0..<count).map { _ in max(0, generator.nextFloat(in: -1, 3)) }
        let gradient = (0..<count).map { _ in generator.nextFloat(in: -1, 1) }
        var mask = [UInt16](repeating: 0xFFFF, count: (count + 15) / 16)
        reluMask(of: output, count: count, into: &mask, threads: 2)
        var fromOutput = gradient, fromMask = gradient
        reluBackwardInPlace(gradient: &fromOutput, output: output, count: count, threads: 2)
        reluBackwardInPlace(gradient: &fromMask, mask: mask, count: count, threads: 2)
        #expect(fromOutput.map(\.bitPattern) == fromMask.map(\.bitPattern))
        #expect(fromMask.filter { $0 == 0 }.count == output.filter { $0 <= 0 }.count)
    }
}
