import CryLabNN
import Foundation

/// The contrastive invariance loss between two views of every clip (NT-Xent, as in SimCLR and
/// COLA), on the encoder's output averaged over time and frequency.
///
///     features: [2 * batch, height, width, channels]; rows b and batch + b are clip b's two views
///
/// Each row's embedding e_i (the channel means) is centred on the batch (u_i = e_i - mean_k e_k)
/// and scaled to unit length (z_i = u_i / |u_i|); s_ij = z_i . z_j / temperature. The loss is the
/// mean over the 2 * batch anchors of -s_i,twin + log sum_{j != i} exp(s_ij): each view must pick
/// its twin among every other view of the batch. Returns the loss and d(loss)/d(features).
public func viewContrastiveLoss(features: Tensor, temperature: Double) -> (value: Double, gradient: Tensor) {
    precondition(features.shape.count == 4 && features.shape[0] % 2 == 0 && features.shape[0] >= 4,
                 "view contrast needs [2 * batch, height, width, channels] with a batch of at least 2, got \(features.shape)")
    let contrast = viewContrastiveLoss(embeddings: viewEmbeddings(features), temperature: temperature)
    return (contrast.value, viewFeatureGradient(contrast.gradient, shape: features.shape))
}

/// Each row's embedding: the channel means of `features` [rows, height, width, channels].
public func viewEmbeddings(_ features: Tensor) -> [[Double]] {
    precondition(features.shape.count == 4, "view embeddings need [rows, height, width, channels], got \(features.shape)")
    precondition(features.layout == .nhwc, "view contrast reads NHWC features")
    let size = features.shape[1] * features.shape[2] * features.shape[3]
    return (0..<features.shape[0]).map { i in
        channelMeansAndStds(Array(features.values[(i * size)..<((i + 1) * size)]), channels: features.shape[3]).means
    }
}

/// The view contrast of `viewContrastiveLoss` on the embeddings e of its 2 * batch rows (rows b
/// and batch + b are clip b's two views): the loss and d(loss)/d(e_i) for every row. It needs
/// every row of the batch at once, which is why a data-parallel run gathers the embeddings.
public func viewContrastiveLoss(embeddings e: [[Double]], temperature: Double) -> (value: Double, gradient: [[Double]]) {
    let rows = e.count, half = rows / 2
    precondition(rows % 2 == 0 && rows >= 4, "view contrast needs two views of at least 2 clips, got \(rows) rows")
    let channels = e[0].count
    let twin = { (i: Int) in i < half ? i + half : i - half }

    // u: centred; z: unit length.
    var centre = [Double](repeating: 0, count: channels)
    for row in e { for c in 0..<channels { centre[c] += row[c] / Double(rows) } }
    let u = e.map { row in (0..<channels).map { row[$0] - centre[$0] } }
    let lengths = u.map { max($0.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-8) }
    let z = (0..<rows).map { i in u[i].map { $0 / lengths[i] } }

    // s_ij, row-wise softmax over j != i, and the loss.
    var probabilities = [[Double]](repeating: [Double](repeating: 0, count: rows), count: rows)
    var loss = 0.0
    for i in 0..<rows {
        var s = [Double](repeating: -.infinity, count: rows)
        for j in 0..<rows where j != i {
            var dot = 0.0
            for c in 0..<channels { dot += z[i][c] * z[j][c] }
            s[j] = dot / temperature
        }
        let largest = s.max()!
        var sum = 0.0
        for j in 0..<rows where j != i { sum += exp(s[j] - largest) }
        for j in 0..<rows where j != i { probabilities[i][j] = exp(s[j] - largest) / sum }
        loss += -s[twin(i)] + largest + log(sum)
    }
    loss /= Double(rows)

    // d(loss)/d(s_ij) = (P_ij - [j is i's twin]) / rows; s_ij reaches both z_i and z_j.
    var dz = [[Double]](repeating: [Double](repeating: 0, count: channels), count: rows)
    for i in 0..<rows {
        for j in 0..<rows where j != i {
            let g = (probabilities[i][j] - (j == twin(i) ? 1 : 0)) / (Double(rows) * temperature)
            for c in 0..<channels {
                dz[i][c] += g * z[j][c]
                dz[j][c] += g * z[i][c]
            }
        }
    }
    // Through the unit-length scaling, then the centring.
    var du = dz
    for i in 0..<rows {
        var along = 0.0
        for c in 0..<channels { along += z[i][c] * dz[i][c] }
        for c in 0..<channels { du[i][c] = (dz[i][c] - z[i][c] * along) / lengths[i] }
    }
    var meanGradient = [Double](repeating: 0, count: channels)
    for row in du { for c in 0..<channels { meanGradient[c] += row[c] / Double(rows) } }
    return (loss, du.map { row in (0..<channels).map { row[$0] - meanGradient[$0] } })
}

/// d(loss)/d(features) from d(loss)/d(e_i): through the mean over positions, every position of
/// row i gets de_i / positions.
public func viewFeatureGradient(_ embeddingGradient: [[Double]], shape: [Int]) -> Tensor {
    let positions = shape[1] * shape[2], channels = shape[3]
    var gradient = Tensor(zeros: shape)
    for (i, row) in embeddingGradient.enumerated() {
        let base = i * positions * channels
        for c in 0..<channels {
            let value = Float(row[c] / Double(positions))
            for p in 0..<positions { gradient.values[base + p * channels + c] = value }
        }
    }
    return gradient
}

/// The part of a U-Net an exported encoder keeps (every encoder level, without the last pooling
/// and the bottleneck), as a model that shares the U-Net's layers and so its weights and
/// gradients: what the invariance term trains.
public func sharedEncoder(of uNet: Model, configuration: UNetConfiguration) -> Model {
    var pools = 0
    var cut = uNet.nodes.count
    for (index, node) in uNet.nodes.enumerated() where node.layer is MaxPool2D {
        pools += 1
        if pools == configuration.depth { cut = index; break }
    }
    precondition(cut < uNet.nodes.count, "the U-Net has fewer than \(configuration.depth) pooling layers")
    let encoder = Model(inputShape: uNet.inputShape, nodes: Array(uNet.nodes[..<cut]))
    encoder.context = uNet.context
    encoder.stepOwner = uNet
    return encoder
}
