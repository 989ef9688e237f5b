import Foundation

/// A U-Net, described completely by JSON-encodable fields so a checkpoint can carry its recipe.
///
/// Encoder level i: `convolutionsPerLevel` convolutions of `widths[i]` filters (kernelSize, same
/// padding, ReLU), then 2x2 max pooling. Bottleneck: convolutions of `widths[depth]` filters.
/// Decoder level i (deepest first): Conv2DTranspose(widths[i], kernel 2, stride 2, ReLU), concatenation
/// [upsampled, skip] if `skipConnections[i]`, then the level's convolutions. Output: 1x1 convolution
/// with `outputChannels` filters and `outputActivation`.
/// With `batchNormalization`, each convolution is linear and followed by BatchNormalization and ReLU.
/// With `dropoutRate > 0`, Dropout follows every max pooling and the bottleneck.
public struct UNetConfiguration: Codable, Sendable, Equatable {
    public var inputShape: [Int]
    /// One width per encoder level, then the bottleneck's; depth = widths.count - 1.
    public var widths: [Int]
    public var kernelSize: Int
    public var convolutionsPerLevel: Int
    /// Per encoder level, shallowest first; nil means all on.
    public var skipConnections: [Bool]?
    public var batchNormalization: Bool
    public var dropoutRate: Float
    public var outputChannels: Int
    public var outputActivation: Activation
    /// Seeds the weight initialisation and dropout masks.
    public var seed: UInt64

    public init(inputShape: [Int] = [128, 128, 1], widths: [Int] = [32, 64, 128, 256, 512], kernelSize: Int = 3,
                convolutionsPerLevel: Int = 2, skipConnections: [Bool]? = nil, batchNormalization: Bool = false,
                dropoutRate: Float = 0, outputChannels: Int = 1, outputActivation: Activation = .linear, seed: UInt64 = 0) {
        self.inputShape = inputShape
        self.widths = widths
        self.kernelSize = kernelSize
        self.convolutionsPerLevel = convolutionsPerLevel
        self.skipConnections = skipConnections
        self.batchNormalization = batchNormalization
        self.dropoutRate = dropoutRate
        self.outputChannels = outputChannels
        self.outputActivation = outputActivation
        self.seed = seed
    }

    /// The story's network: 128x128x1, widths 32-64-128-256, bottleneck 512, linear 1x1 output
    /// (7,759,521 parameters).
    public static let story = UNetConfiguration()

    public var depth: Int { widths.count - 1 }

    public func hasSkip(level: Int) -> Bool { skipConnections?[level] ?? true }
}

extension GraphBuilder {
    /// convolutionsPerLevel x (Conv2D [+ BatchNormalization + ReLU]); returns the block's layers.
    mutating func convolutionBlock(_ c: UNetConfiguration, width: Int, from start: Int) throws -> (value: Int, layers: [any Layer]) {
        var value = start
        var added: [any Layer] = []
        for _ in 0..<c.convolutionsPerLevel {
            let conv = Conv2D(name: namer.next("conv2d"), inputChannels: channels(of: value), filters: width,
                              kernelSize: c.kernelSize, padding: .same,
                              activation: c.batchNormalization ? .linear : .relu, generator: &generator)
            value = try add(conv, inputs: [value])
            added.append(conv)
            if c.batchNormalization {
                let norm = BatchNormalization(name: namer.next("batch_normalization"), channels: width)
                value = try add(norm, inputs: [value])
                let relu = ReLU(name: namer.next("re_lu"))
                value = try add(relu, inputs: [value])
                added += [norm, relu] as [any Layer]
            }
        }
        return (value, added)
    }

    mutating func dropoutIfAny(_ c: UNetConfiguration, from value: Int) throws -> (value: Int, layers: [any Layer]) {
        guard c.dropoutRate > 0 else { return (value, []) }
        let dropout = Dropout(name: namer.next("dropout"), rate: c.dropoutRate, seed: generator.next())
        return (try add(dropout, inputs: [value]), [dropout])
    }

    /// Encoder levels 0..<levels; pooling after each level except, if `poolAfterLast` is false, the last.
    /// Returns the last value, the skip value of each level, and each level's layers (its block).
    mutating func encoder(_ c: UNetConfiguration, levels: Int, poolAfterLast: Bool) throws
        -> (value: Int, skips: [Int], blocks: [[any Layer]]) {
        var value = 0
        var skips: [Int] = []
        var blocks: [[any Layer]] = []
        for level in 0..<levels {
            var (out, block) = try convolutionBlock(c, width: c.widths[level], from: value)
            skips.append(out)
            if level < levels - 1 || poolAfterLast {
                let pool = MaxPool2D(name: namer.next("max_pooling2d"))
                out = try add(pool, inputs: [out])
                block.append(pool)
                let dropped = try dropoutIfAny(c, from: out)
                out = dropped.value
                block += dropped.layers
            }
            value = out
            blocks.append(block)
        }
        return (value, skips, blocks)
    }
}

extension Model {
    /// Builds a U-Net from its configuration (layer names as Keras would give them, weights from `seed`).
    public static func uNet(_ c: UNetConfiguration) throws -> Model {
        precondition(c.depth >= 1, "a U-Net needs at least one encoder level and a bottleneck; widths = \(c.widths)")
        precondition(c.skipConnections == nil || c.skipConnections!.count == c.depth,
                     "skipConnections needs one entry per encoder level (\(c.depth)), got \(c.skipConnections!.count)")
        var b = GraphBuilder(inputShape: c.inputShape, seed: c.seed)
        var (value, skips, blocks) = try b.encoder(c, levels: c.depth, poolAfterLast: true)
        value = try b.convolutionBlock(c, width: c.widths[c.depth], from: value).value
        value = try b.dropoutIfAny(c, from: value).value
        for level in (0..<c.depth).reversed() {
            let up = Conv2DTranspose(name: b.namer.next("conv2d_transpose"), inputChannels: b.channels(of: value),
                                     filters: c.widths[level], kernelSize: 2, stride: 2, activation: .relu,
                                     generator: &b.generator)
            value = try b.add(up, inputs: [value])
            if c.hasSkip(level: level) {
                value = try b.add(Concatenate(name: b.namer.next("concatenate")), inputs: [value, skips[level]])
            }
            value = try b.convolutionBlock(c, width: c.widths[level], from: value).value
        }
        let output = Conv2D(name: b.namer.next("conv2d"), inputChannels: b.channels(of: value), filters: c.outputChannels,
                            kernelSize: 1, activation: c.outputActivation, generator: &b.generator)
        try b.add(output, inputs: [value])
        return Model(inputShape: c.inputShape, nodes: b.nodes, encoderBlocks: blocks,
                     configuration: ModelConfiguration(uNet: c))
    }
}

/// The recipe of any model CryLab builds, as stored beside a checkpoint.
public struct ModelConfiguration: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case uNet = "unet", classifier, encoder }
    public var kind: Kind
    public var uNet: UNetConfiguration?
    public var classifier: ClassifierConfiguration?
    /// For an encoder: how many levels of `uNet`'s encoder it keeps.
    public var encoderLevels: Int?

    public init(uNet: UNetConfiguration) {
        kind = .uNet
        self.uNet = uNet
    }

    public init(classifier: ClassifierConfiguration) {
        kind = .classifier
        self.classifier = classifier
    }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public init(json: String) throws {
        self = try JSONDecoder().decode(ModelConfiguration.self, from: Data(json.utf8))
    }

    /// Rebuilds the model (fresh weights; load the checkpoint's weights afterwards).
    public func build() throws -> Model {
        switch kind {
        case .uNet:
            guard let uNet else { throw ConfigurationError(message: "kind is 'unet' but the 'uNet' field is missing") }
            return try Model.uNet(uNet)
        case .classifier:
            guard let classifier else { throw ConfigurationError(message: "kind is 'classifier' but the 'classifier' field is missing") }
            return try Model.classifier(classifier)
        case .encoder:
            guard let uNet, let encoderLevels else {
                throw ConfigurationError(message: "kind is 'encoder' but the 'uNet' or 'encoderLevels' field is missing")
            }
            return try Model.encoder(uNet, levels: encoderLevels)
        }
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
