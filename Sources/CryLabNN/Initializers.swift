/// Keras's default initialisers, drawn from CryLab's own seeded generator (so the numbers differ
/// from Keras's, but the distributions are the same and a seed fixes them).
public enum Initializer {
    /// Glorot (Xavier) uniform: U(-limit, limit), limit = sqrt(6 / (fanIn + fanOut)). Keras computes
    /// the fans from the kernel shape: receptive field = product of all but the last two dimensions,
    /// fanIn = shape[-2] * receptive, fanOut = shape[-1] * receptive.
    public static func glorotUniform(shape: [Int], generator: inout SeededGenerator) -> Tensor {
        let receptive = shape.dropLast(2).reduce(1, *)
        let fanIn = shape[shape.count - 2] * receptive
        let fanOut = shape[shape.count - 1] * receptive
        let limit = Float((6.0 / Double(fanIn + fanOut)).squareRoot())
        let count = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count { values[i] = generator.nextFloat(in: -limit, limit) }
        return Tensor(shape: shape, values: values)
    }
}
