import CDNNL
import CryLabTensor
import Foundation

extension DNNLConvolution {
    /// How fast each of the ready passes runs here, in nanoseconds: one untimed run each, then one
    /// timed run each, and a second when the two fastest are within 30 % (the better of the two counts).
    /// A blocked pass is timed without the reorders of operands it takes in nChw16c, since a
    /// `Model` hands those over blocked between such passes (`ActivationLayout.blocked16`); with
    /// the reorders of any others. For the same reason an NHWC pass, when blocked ones compete, is
    /// charged one timed reorder per operand whose channels fill blocks of 16. A bf16 pass must win by
    /// `ConvolutionPrecision.fastModeBFloat16Margin` (its time is divided by it), since the timing
    /// leaves out the rounding of its operands.
    ///
    /// The runs use the call's own activations when given (a bf16 candidate reads them as bf16
    /// bits: the values do not matter, only the time), so timing needs no activation-sized memory
    /// beyond what training holds anyway; weights and bias are zeroed buffers of their own.
    func fastest(_ candidates: [Prepared], _ g: ConvolutionGeometry, _ pass: Pass,
                         _ activations: (source: UnsafeMutableRawPointer, destination: UnsafeMutableRawPointer)?) -> [Double] {
        let activationBytes = activations == nil ? (g.inputShape.reduce(1, *) + g.outputShape.reduce(1, *)) * 4 : 0
        let weightsBytes = candidates.map(\.weightsBytes).max()!, biasBytes = g.outputChannels * 4
        let total = activationBytes + weightsBytes + biasBytes
        let memory = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 64)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        let (weights, bias) = (memory, memory + weightsBytes)
        let (input, output) = activations ?? (bias + biasBytes, bias + biasBytes + g.inputShape.reduce(1, *) * 4)
        let hasBias = switch pass {
        case let .forward(bias, _), let .backwardWeights(bias): bias
        case .backwardData: false
        }
        func time(_ p: Prepared) -> Double {
            var blockedOutputGradient: BlockedCopy?
            let start = DispatchTime.now().uptimeNanoseconds
            perform(p, pass, g, source: input, destination: output, weights: weights, bias: hasBias ? bias : nil,
                    blockedOutputGradient: &blockedOutputGradient,
                    sourceInPlace: p.blocked?.sourceIsBlocked16 == true, destinationInPlace: p.blocked?.destinationIsBlocked16 == true)
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start)
            return p.precision == .bf16 ? elapsed / ConvolutionPrecision.fastModeBFloat16Margin : elapsed
        }
        for p in candidates { _ = time(p) }
        // A pass that reads or writes NHWC where a blocked one would not is charged the reorders it
        // then costs between blocked neighbours: one of each operand with channels a multiple of 16.
        var reorderCost = (source: 0.0, destination: 0.0)
        if candidates.contains(where: { $0.blocked != nil }) && candidates.contains(where: { $0.blocked == nil }) {
            func reorderTime(_ values: UnsafeMutableRawPointer, _ shape: [Int], _ buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> Double {
                guard shape[3] % 16 == 0 else { return 0 }
                let target = self[keyPath: buffer].reserve(bytes: shape.reduce(1, *) * 4).assumingMemoryBound(to: Float.self)
                let from = values.assumingMemoryBound(to: Float.self)
                convertLayout(from, shape, toBlocked: true, into: target)  // creates the reorder: untimed
                let start = DispatchTime.now().uptimeNanoseconds
                convertLayout(from, shape, toBlocked: true, into: target)
                return Double(DispatchTime.now().uptimeNanoseconds - start)
            }
            reorderCost = (reorderTime(input, g.inputShape, \.blockedSourceBuffer),
                           reorderTime(output, g.outputShape, \.blockedDestinationBuffer))
        }
        func charge(_ p: Prepared) -> Double {
            guard let b = p.blocked else { return reorderCost.source + reorderCost.destination }
            return (b.sourceIsBlocked16 || b.sourceIsNHWC ? 0 : reorderCost.source)
                + (b.destinationIsBlocked16 || b.destinationIsNHWC ? 0 : reorderCost.destination)
        }
        var best = [Double](repeating: .infinity, count: candidates.count)
        for round in 0..<2 {
            let sorted = best.sorted()
            if round == 1 && sorted[1] > 1.3 * sorted[0] { break }
            for (i, p) in candidates.enumerated() { best[i] = min(best[i], time(p) + charge(p)) }
        }
        return best
    }
}

extension DNNLConvolution {
    /// `MatrixKernels.fastModePrefersBFloat16Product`: the forward product of a transposed
    /// convolution, [m, k] x [k, n], timed in fp32 and bf16 once per shape and thread count (or
    /// taken from `fastModeChoices`); bf16 must win by
    /// `ConvolutionPrecision.fastModeBFloat16Margin`.
    public func fastModePrefersBFloat16Product(m: Int, n: Int, k: Int) -> Bool {
        // fp32 first, so that it wins a tie; bf16 must win by the margin.
        decision("transposed-convolution product [\(m), \(k)] x [\(k), \(n)], \(threads) threads", among: ["fp32", "bf16"]) {
            let times = bfloat16ProductTimes(m: m, n: n, k: k)
            return [times.fp32, times.bf16 / ConvolutionPrecision.fastModeBFloat16Margin]
        } == 1
    }

    /// Times the forward product c [m, n] = a [m, k] * b [n, k]^T on zeroed operands in bf16 and in
    /// fp32: one untimed run each, then the better of two alternating runs each, in nanoseconds
    /// (bf16 infinite where oneDNN has no fast kernel).
    private func bfloat16ProductTimes(m: Int, n: Int, k: Int) -> (bf16: Double, fp32: Double) {
        let a = [Float](repeating: 0, count: m * k), b = [Float](repeating: 0, count: n * k)
        var c = [Float](repeating: 0, count: m * n)
        var best = (bf16: Double.infinity, fp32: Double.infinity)
        for round in 0..<3 {
            let (bf16, fp32) = a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer { c in
                        let start = DispatchTime.now().uptimeNanoseconds
                        let available = bfloat16MatrixMultiply(
                            m: m, n: n, k: k, a: .float(a.baseAddress!), b: .float(b.baseAddress!), transposeB: true, c: c.baseAddress!)
                        let middle = DispatchTime.now().uptimeNanoseconds
                        matrixMultiply(m: m, n: n, k: k, a: a.baseAddress!, b: b.baseAddress!, transposeB: true, c: c.baseAddress!)
                        let end = DispatchTime.now().uptimeNanoseconds
                        return (available ? Double(middle - start) : .infinity, Double(end - middle))
                    }
                }
            }
            if round > 0 { best = (min(best.bf16, bf16), min(best.fp32, fp32)) }
        }
        return best
    }
}

extension DNNLConvolution {
    /// A decision of `.fast` above single passes (a transposed convolution's product,
    /// `ComputeBackend.fastModeDecision`'s whole steps): the one made earlier under `key` by this
    /// runtime, else the one kept in `fastModeChoices`, else the least of `timing()`, recorded in
    /// both. Timing runs outside the runtime's lock (it runs products and whole steps).
    func decision(_ key: String, among names: [String], timing: () -> [Double]) -> Int {
        if let known = decisions.withLock({ $0[key] }), let index = names.firstIndex(of: known) { return index }
        let index = FastModeChoices.choose(key, among: names, in: fastModeChoices, timing: timing)
        decisions.withLock { $0[key] = names[index] }
        return index
    }
}
