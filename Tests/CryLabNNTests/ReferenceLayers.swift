import CryLabNN
import Foundation

/// Double-precision reference forward passes for every CryLabNN layer and loss, written as plain loops
/// from the Keras definitions and independent of the library's kernels. The gradient checks
/// (`checkGradients`, the model checks) differentiate these numerically in Double.
///
/// Layout as in `Tensor`: channels-last, row-major, channels vary fastest.

/// A Double tensor: a shape and its row-major values.
struct DoubleTensor {
    var shape: [Int]
    var values: [Double]

    init(shape: [Int], values: [Double]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.shape = shape
        self.values = values
    }

    init(zeros shape: [Int]) {
        self.init(shape: shape, values: [Double](repeating: 0, count: shape.reduce(1, *)))
    }

    /// The exact Double values of a Float tensor.
    init(_ tensor: Tensor) {
        self.init(shape: tensor.shape, values: tensor.values.map(Double.init))
    }

    var count: Int { values.count }
}

/// A layer's forward pass in Double: its inputs, then its weights in `layer.weights` order.
typealias ReferenceForward = (_ inputs: [DoubleTensor], _ weights: [DoubleTensor]) -> DoubleTensor

/// The Double reference of `layer` as `layer.forward(_, training:)` runs it, configured from the layer's
/// public properties; nil for a layer type without a reference. Make it right before the layer's own
/// forward: a Dropout reference takes the layer's generator state at this moment.
func referenceForward(for layer: any Layer, training: Bool) -> ReferenceForward? {
    switch layer {
    case let conv as Conv2D:
        let (stride, padding, activation, hasBias) = (conv.stride, conv.padding, conv.activation, conv.bias != nil)
        return { x, w in
            referenceConv2D(x[0], kernel: w[0], bias: hasBias ? w[1] : nil, stride: stride, padding: padding,
                            activation: activation)
        }
    case let transposed as Conv2DTranspose:
        let (stride, padding, activation, hasBias) = (transposed.stride, transposed.padding, transposed.activation,
                                                      transposed.bias != nil)
        return { x, w in
            referenceConv2DTranspose(x[0], kernel: w[0], bias: hasBias ? w[1] : nil, stride: stride, padding: padding,
                                     activation: activation)
        }
    case let dense as Dense:
        let (activation, hasBias) = (dense.activation, dense.bias != nil)
        return { x, w in referenceDense(x[0], kernel: w[0], bias: hasBias ? w[1] : nil, activation: activation) }
    case let norm as BatchNormalization:
        // Keras: batch statistics in training mode, unless the layer is frozen (then inference mode).
        let batchStatistics = training && (norm.trainable || norm.frozenUsesBatchStatistics)
        let epsilon = Double(norm.epsilon)
        return { x, w in
            referenceBatchNormalization(x[0], gamma: w[0], beta: w[1], movingMean: w[2], movingVariance: w[3],
                                        epsilon: epsilon, batchStatistics: batchStatistics)
        }
    case let pool as MaxPool2D:
        let (size, stride, padding) = (pool.poolSize, pool.stride, pool.padding)
        return { x, _ in referenceMaxPool2D(x[0], poolSize: size, stride: stride, padding: padding) }
    case let upsampling as UpSampling2D:
        let size = upsampling.size
        return { x, _ in referenceUpSampling2D(x[0], size: size) }
    case is GlobalAveragePooling2D:
        return { x, _ in referenceGlobalAveragePooling2D(x[0]) }
    case is Flatten:
        return { x, _ in DoubleTensor(shape: [x[0].shape[0], x[0].count / x[0].shape[0]], values: x[0].values) }
    case let concatenate as Concatenate:
        // With `zeroesSkipInputs`, every input after the first counts as zeros (a cut skip connection).
        let zeroesSkipInputs = concatenate.zeroesSkipInputs
        return { x, _ in referenceConcatenate(zeroesSkipInputs ? [x[0]] + x.dropFirst().map { DoubleTensor(zeros: $0.shape) } : x) }
    case is ReLU:
        return { x, _ in referenceActivation(x[0], .relu) }
    case let leaky as LeakyReLU:
        let slope = Double(leaky.negativeSlope)
        return { x, _ in DoubleTensor(shape: x[0].shape, values: x[0].values.map { $0 < 0 ? slope * $0 : $0 }) }
    case let dropout as Dropout:
        guard training && dropout.rate > 0 else { return { x, _ in x[0] } }
        // Which values drop is random: a twin layer with the same generator state, run on ones, shows the
        // mask the layer is about to draw (0 where dropped). The survivors' scaling is the reference's own.
        let (rate, generator) = (dropout.rate, dropout.generator)
        let keptScale = 1 / (1 - Double(rate))
        return { x, _ in
            let twin = Dropout(rate: rate)
            twin.generator = generator
            let mask = twin.forward([Tensor(shape: x[0].shape, repeating: 1)], training: true)
            return DoubleTensor(shape: x[0].shape, values: zip(x[0].values, mask.values).map { $1 == 0 ? 0 : $0 * keptScale })
        }
    default:
        return nil
    }
}

/// A Keras window operation (convolution, pooling) over x: [batch, height, width, channels]: its output size
/// and, for each output pixel, the taps of its window that fall inside the input. 'same': ceil(length / stride)
/// outputs per axis, padded as TensorFlow pads (the odd padding row or column after the end); 'valid': windows
/// entirely inside, no padding.
struct SlidingWindows {
    let outHeight: Int, outWidth: Int
    private let height: Int, width: Int, window: Int, stride: Int, padTop: Int, padLeft: Int

    init(inputShape: [Int], window: Int, stride: Int, padding: Padding) {
        // Output length and padding before the first element along one axis.
        func place(_ length: Int) -> (outputs: Int, padBefore: Int) {
            switch padding {
            case .valid:
                return ((length - window) / stride + 1, 0)
            case .same:
                let outputs = (length + stride - 1) / stride
                return (outputs, max((outputs - 1) * stride + window - length, 0) / 2)
            }
        }
        (height, width, self.window, self.stride) = (inputShape[1], inputShape[2], window, stride)
        (outHeight, padTop) = place(height)
        (outWidth, padLeft) = place(width)
    }

    /// Calls `body` for every output pixel (b, oy, ox) with its index (b * outHeight + oy) * outWidth + ox and
    /// its window without the padding: each tap's `position` ky * window + kx in the window and its `pixel`
    /// (b * height + iy) * width + ix in x.
    func forEachOutputPixel(batch: Int, _ body: (_ output: Int, _ taps: [(position: Int, pixel: Int)]) -> Void) {
        for b in 0..<batch {
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    var taps: [(position: Int, pixel: Int)] = []
                    for ky in 0..<window {
                        for kx in 0..<window {
                            let (iy, ix) = (oy * stride + ky - padTop, ox * stride + kx - padLeft)
                            if (0..<height).contains(iy) && (0..<width).contains(ix) {
                                taps.append((ky * window + kx, (b * height + iy) * width + ix))
                            }
                        }
                    }
                    body((b * outHeight + oy) * outWidth + ox, taps)
                }
            }
        }
    }
}

/// Keras activations in Double; softmax over the last axis.
func referenceActivation(_ z: DoubleTensor, _ activation: Activation) -> DoubleTensor {
    switch activation {
    case .linear:
        return z
    case .relu:
        return DoubleTensor(shape: z.shape, values: z.values.map { max($0, 0) })
    case .sigmoid:
        return DoubleTensor(shape: z.shape, values: z.values.map { 1 / (1 + exp(-$0)) })
    case .tanh:
        return DoubleTensor(shape: z.shape, values: z.values.map { tanh($0) })
    case .softmax:
        let classes = z.shape.last!
        var y = z
        for row in 0..<(z.count / classes) {  // z: [rows, classes]
            let logits = z.values[(row * classes)..<((row + 1) * classes)]
            let largest = logits.max()!
            let total = logits.reduce(0) { $0 + exp($1 - largest) }
            for c in 0..<classes { y.values[row * classes + c] = exp(z.values[row * classes + c] - largest) / total }
        }
        return y
    }
}

/// Keras `Conv2D`: y[b, oy, ox, f] = Σ_{ky, kx, c} x[b, oy*stride + ky - padTop, ox*stride + kx - padLeft, c]
/// * kernel[ky, kx, c, f] + bias[f], with zeros outside the input, then the activation.
func referenceConv2D(_ x: DoubleTensor, kernel: DoubleTensor, bias: DoubleTensor?, stride: Int, padding: Padding,
                     activation: Activation) -> DoubleTensor {
    let (batch, channels) = (x.shape[0], x.shape[3])
    let (k, filters) = (kernel.shape[0], kernel.shape[3])
    let windows = SlidingWindows(inputShape: x.shape, window: k, stride: stride, padding: padding)
    var y = DoubleTensor(zeros: [batch, windows.outHeight, windows.outWidth, filters])
    windows.forEachOutputPixel(batch: batch) { output, taps in
        for f in 0..<filters {  // y: [batch * outHeight * outWidth, filters]
            var sum = bias?.values[f] ?? 0
            for (position, pixel) in taps {
                for c in 0..<channels {  // x: [batch * height * width, channels], kernel: [k * k, channels, filters]
                    sum += x.values[pixel * channels + c] * kernel.values[(position * channels + c) * filters + f]
                }
            }
            y.values[output * filters + f] = sum
        }
    }
    return referenceActivation(y, activation)
}

/// Keras `Conv2DTranspose`: every input pixel adds its kernel-sized patch into the full output,
/// full[b, iy*stride + ky, ix*stride + kx, f] += Σ_c x[b, iy, ix, c] * kernel[ky, kx, f, c], of size (length - 1) * stride + k.
/// 'valid' keeps length * stride + max(k - stride, 0) rows and columns of it (Keras's deconv_output_length:
/// the full output, plus stride - k zero rows when k < stride); 'same' keeps length * stride of them starting
/// at max(k - stride, 0) / 2 (zeros past its end). Then bias and activation.
func referenceConv2DTranspose(_ x: DoubleTensor, kernel: DoubleTensor, bias: DoubleTensor?, stride: Int, padding: Padding,
                              activation: Activation) -> DoubleTensor {
    let (batch, height, width, channels) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (k, filters) = (kernel.shape[0], kernel.shape[2])
    let (outHeight, outWidth) = padding == .same ? (height * stride, width * stride)
                                                 : (height * stride + max(k - stride, 0), width * stride + max(k - stride, 0))
    let crop = padding == .same ? max(k - stride, 0) / 2 : 0
    var y = DoubleTensor(zeros: [batch, outHeight, outWidth, filters])
    for b in 0..<batch {
        for iy in 0..<height {
            for ix in 0..<width {
                for ky in 0..<k {
                    for kx in 0..<k {
                        let (oy, ox) = (iy * stride + ky - crop, ix * stride + kx - crop)
                        guard 0..<outHeight ~= oy && 0..<outWidth ~= ox else { continue }  // cropped by 'same'
                        for f in 0..<filters {  // y: [batch, outHeight, outWidth, filters]
                            var sum = 0.0
                            for c in 0..<channels {  // x: [batch, height, width, channels], kernel: [k, k, filters, channels]
                                sum += x.values[((b * height + iy) * width + ix) * channels + c]
                                    * kernel.values[((ky * k + kx) * filters + f) * channels + c]
                            }
                            y.values[((b * outHeight + oy) * outWidth + ox) * filters + f] += sum
                        }
                    }
                }
            }
        }
    }
    if let bias {
        for i in 0..<y.count { y.values[i] += bias.values[i % filters] }
    }
    return referenceActivation(y, activation)
}

/// Keras `Dense` on the last axis: y[r, u] = Σ_i x[r, i] * kernel[i, u] + bias[u], then the activation.
func referenceDense(_ x: DoubleTensor, kernel: DoubleTensor, bias: DoubleTensor?, activation: Activation) -> DoubleTensor {
    let (features, units) = (kernel.shape[0], kernel.shape[1])
    let rows = x.count / features
    var y = DoubleTensor(zeros: Array(x.shape.dropLast()) + [units])
    for r in 0..<rows {
        for u in 0..<units {  // y: [rows, units]
            var sum = bias?.values[u] ?? 0
            for i in 0..<features { sum += x.values[r * features + i] * kernel.values[i * units + u] }  // x: [rows, features]
            y.values[r * units + u] = sum
        }
    }
    return referenceActivation(y, activation)
}

/// Keras `BatchNormalization` over the last axis: y = gamma * (x - mean) / sqrt(variance + epsilon) + beta,
/// with the batch mean and biased batch variance, or the moving statistics when `batchStatistics` is false.
func referenceBatchNormalization(_ x: DoubleTensor, gamma: DoubleTensor, beta: DoubleTensor, movingMean: DoubleTensor,
                                 movingVariance: DoubleTensor, epsilon: Double, batchStatistics: Bool) -> DoubleTensor {
    let channels = gamma.count
    let rows = x.count / channels  // x viewed as [rows, channels]
    var mean = movingMean.values, variance = movingVariance.values
    if batchStatistics {
        for c in 0..<channels {
            mean[c] = (0..<rows).reduce(0.0) { $0 + x.values[$1 * channels + c] } / Double(rows)
            variance[c] = (0..<rows).reduce(0.0) { $0 + pow(x.values[$1 * channels + c] - mean[c], 2) } / Double(rows)
        }
    }
    var y = x
    for r in 0..<rows {
        for c in 0..<channels {
            let normalized = (x.values[r * channels + c] - mean[c]) / (variance[c] + epsilon).squareRoot()
            y.values[r * channels + c] = gamma.values[c] * normalized + beta.values[c]
        }
    }
    return y
}

/// Keras `MaxPooling2D`: the largest input in each window; padding never wins.
func referenceMaxPool2D(_ x: DoubleTensor, poolSize: Int, stride: Int, padding: Padding) -> DoubleTensor {
    let (batch, channels) = (x.shape[0], x.shape[3])
    let windows = SlidingWindows(inputShape: x.shape, window: poolSize, stride: stride, padding: padding)
    var y = DoubleTensor(zeros: [batch, windows.outHeight, windows.outWidth, channels])
    windows.forEachOutputPixel(batch: batch) { output, taps in
        for c in 0..<channels {  // y: [batch * outHeight * outWidth, channels], x: [batch * height * width, channels]
            y.values[output * channels + c] = taps.map { x.values[$0.pixel * channels + c] }.max()!
        }
    }
    return y
}

/// Keras `UpSampling2D`, nearest neighbour: y[b, oy, ox, c] = x[b, oy / size, ox / size, c].
func referenceUpSampling2D(_ x: DoubleTensor, size: Int) -> DoubleTensor {
    let (batch, height, width, channels) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    var y = DoubleTensor(zeros: [batch, height * size, width * size, channels])
    for b in 0..<batch {
        for oy in 0..<(height * size) {
            for ox in 0..<(width * size) {
                for c in 0..<channels {  // y: [batch, height*size, width*size, channels]
                    y.values[((b * height * size + oy) * width * size + ox) * channels + c] =
                        x.values[((b * height + oy / size) * width + ox / size) * channels + c]
                }
            }
        }
    }
    return y
}

/// Keras `GlobalAveragePooling2D`: y[b, c] = mean over pixels of x[b, :, :, c].
func referenceGlobalAveragePooling2D(_ x: DoubleTensor) -> DoubleTensor {
    let (batch, pixels, channels) = (x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    var y = DoubleTensor(zeros: [batch, channels])
    for b in 0..<batch {
        for p in 0..<pixels {
            for c in 0..<channels {  // x: [batch, pixels, channels]
                y.values[b * channels + c] += x.values[(b * pixels + p) * channels + c] / Double(pixels)
            }
        }
    }
    return y
}

/// Keras `Concatenate` on the last axis: inputs[i]: [..., channels_i] -> y: [..., Σ channels_i].
func referenceConcatenate(_ inputs: [DoubleTensor]) -> DoubleTensor {
    let rows = inputs[0].count / inputs[0].shape.last!
    var values: [Double] = []
    for r in 0..<rows {
        for input in inputs {
            let channels = input.shape.last!
            values += input.values[(r * channels)..<((r + 1) * channels)]  // input: [rows, channels]
        }
    }
    return DoubleTensor(shape: Array(inputs[0].shape.dropLast()) + [inputs.reduce(0) { $0 + $1.shape.last! }], values: values)
}

/// Mean squared error, Σ mask * (prediction - target)² / Σ mask (mask of ones when nil).
func referenceMeanSquaredError(prediction: DoubleTensor, target: DoubleTensor, mask: DoubleTensor? = nil) -> Double {
    var total = 0.0, weights = 0.0
    for i in 0..<prediction.count {
        let m = mask?.values[i] ?? 1
        total += m * pow(prediction.values[i] - target.values[i], 2)
        weights += m
    }
    return total / weights
}

/// Keras categorical cross-entropy on probabilities [batch, classes]: labels smoothed to
/// y * (1 - smoothing) + smoothing / classes, each sample's loss weighted by its true (argmax) class's
/// weight, the sum divided by the batch size.
func referenceCrossEntropy(probabilities: DoubleTensor, labels: DoubleTensor, classWeights: [Double]? = nil,
                           labelSmoothing: Double = 0) -> Double {
    let (batch, classes) = (labels.shape[0], labels.shape[1])
    var total = 0.0
    for b in 0..<batch {
        let row = Array(labels.values[(b * classes)..<((b + 1) * classes)])  // labels: [batch, classes]
        let trueClass = row.firstIndex(of: row.max()!)!
        for c in 0..<classes {
            let smoothed = row[c] * (1 - labelSmoothing) + labelSmoothing / Double(classes)
            total -= (classWeights?[trueClass] ?? 1) * smoothed * log(probabilities.values[b * classes + c])
        }
    }
    return total / Double(batch)
}

/// A model's forward pass in Double, composed of its layers' references along its graph: value 0 is the
/// model input, value i + 1 the output of node i, and a value read by two nodes (a U-Net skip connection)
/// feeds both.
struct ReferenceModel {
    let nodes: [(forward: ReferenceForward, inputs: [Int])]

    /// Nil if some layer has no reference. Make it right before the model's own forward (see `referenceForward`).
    init?(_ model: Model, training: Bool) {
        var nodes: [(forward: ReferenceForward, inputs: [Int])] = []
        for node in model.nodes {
            guard let forward = referenceForward(for: node.layer, training: training) else { return nil }
            nodes.append((forward, node.inputs))
        }
        self.nodes = nodes
    }

    /// `weights[i]`: node i's weights in `layer.weights` order.
    func forward(_ input: DoubleTensor, weights: [[DoubleTensor]]) -> DoubleTensor {
        var values = [input]
        for (node, nodeWeights) in zip(nodes, weights) {
            values.append(node.forward(node.inputs.map { values[$0] }, nodeWeights))
        }
        return values.last!
    }
}
