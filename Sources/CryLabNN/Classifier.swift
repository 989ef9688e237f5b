/// A classifier: the U-Net's encoder (its first `encoderLevels` levels, no pooling after the last),
/// then a head. Encoder layers get the same names as in the U-Net built from the same encoder
/// configuration, so pretrained weights copy over by name (`Model.copyWeights(from:)`).
public struct ClassifierConfiguration: Codable, Sendable, Equatable {
    public var encoder: UNetConfiguration
    public var encoderLevels: Int
    public var head: HeadConfiguration
    public var classes: Int
    public var seed: UInt64

    public init(encoder: UNetConfiguration = .story, encoderLevels: Int = 4, head: HeadConfiguration = .story,
                classes: Int = 4, seed: UInt64 = 0) {
        self.encoder = encoder
        self.encoderLevels = encoderLevels
        self.head = head
        self.classes = classes
        self.seed = seed
    }

    /// The story's classifier: seed encoder to the second 256-convolution + the story head, 4 classes.
    public static let story = ClassifierConfiguration()
}

/// Head: Flatten or GlobalAveragePooling2D, hidden Dense layers (each optionally followed by
/// BatchNormalization and Dropout), then Dense(classes, softmax).
public struct HeadConfiguration: Codable, Sendable, Equatable {
    public enum Pooling: String, Codable, Sendable { case flatten, globalAverage }

    public struct Hidden: Codable, Sendable, Equatable {
        public var units: Int
        public var activation: Activation
        public var batchNormalization: Bool
        public var dropoutRate: Float

        public init(units: Int, activation: Activation = .relu, batchNormalization: Bool = false, dropoutRate: Float = 0) {
            self.units = units
            self.activation = activation
            self.batchNormalization = batchNormalization
            self.dropoutRate = dropoutRate
        }
    }

    public var pooling: Pooling
    public var hidden: [Hidden]

    public init(pooling: Pooling, hidden: [Hidden]) {
        self.pooling = pooling
        self.hidden = hidden
    }

    /// Flatten, Dense 1024 ReLU, BatchNorm, Dropout 0.25, Dense 512 ReLU, Dense 128 ReLU.
    public static let story = HeadConfiguration(pooling: .flatten, hidden: [
        Hidden(units: 1024, batchNormalization: true, dropoutRate: 0.25),
        Hidden(units: 512),
        Hidden(units: 128),
    ])

    /// GlobalAveragePooling2D straight into the softmax Dense.
    public static let pooled = HeadConfiguration(pooling: .globalAverage, hidden: [])
}

extension Model {
    public static func classifier(_ c: ClassifierConfiguration) throws -> Model {
        precondition(c.encoderLevels >= 1 && c.encoderLevels <= c.encoder.widths.count,
                     "encoderLevels must be in 1...\(c.encoder.widths.count), got \(c.encoderLevels)")
        var b = GraphBuilder(inputShape: c.encoder.inputShape, seed: c.encoder.seed)
        let encoder = try b.encoder(c.encoder, levels: c.encoderLevels, poolAfterLast: false)
        // The head draws from its own seed so the encoder's initial weights equal the U-Net's.
        b.generator = SeededGenerator(seed: c.seed ^ 0x5EED_4EAD)
        var value = encoder.value
        switch c.head.pooling {
        case .flatten: value = try b.add(Flatten(name: b.namer.next("flatten")), inputs: [value])
        case .globalAverage: value = try b.add(GlobalAveragePooling2D(name: b.namer.next("global_average_pooling2d")), inputs: [value])
        }
        for hidden in c.head.hidden {
            let dense = Dense(name: b.namer.next("dense"), inputFeatures: b.channels(of: value), units: hidden.units,
                              activation: hidden.activation, generator: &b.generator)
            value = try b.add(dense, inputs: [value])
            if hidden.batchNormalization {
                value = try b.add(BatchNormalization(name: b.namer.next("batch_normalization"), channels: hidden.units), inputs: [value])
            }
            if hidden.dropoutRate > 0 {
                value = try b.add(Dropout(name: b.namer.next("dropout"), rate: hidden.dropoutRate, seed: b.generator.next()),
                                  inputs: [value])
            }
        }
        let output = Dense(name: b.namer.next("dense"), inputFeatures: b.channels(of: value), units: c.classes,
                           activation: .softmax, generator: &b.generator)
        try b.add(output, inputs: [value])
        return Model(inputShape: c.encoder.inputShape, nodes: b.nodes, encoderBlocks: encoder.blocks,
                     configuration: ModelConfiguration(classifier: c))
    }
}
