import CSoxr

/// Sample-rate conversion with libsoxr at high quality (`SOXR_HQ`), librosa's default `soxr_hq`.
/// The output length is `ceil(count * to / from)`, zero-padded or cut like `librosa.resample`.
public enum Resampler {
    /// samples: [frames] -> [ceil(frames * to / from)]
    public static func resample(_ samples: [Float], from sourceRate: Int, to targetRate: Int) throws -> [Float] {
        precondition(sourceRate > 0 && targetRate > 0, "sample rates must be positive")
        if sourceRate == targetRate || samples.isEmpty { return samples }
        let wanted = Int((Double(samples.count) * Double(targetRate) / Double(sourceRate)).rounded(.up))
        // soxr may produce a few samples more than the exact ratio while flushing; leave room.
        var output = [Float](repeating: 0, count: wanted + 64)
        var produced = 0
        let ioSpec = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I)
        var quality = soxr_quality_spec(crylab_soxr_hq(), 0)
        var io = ioSpec
        let error: soxr_error_t? = samples.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                soxr_oneshot(Double(sourceRate), Double(targetRate), 1,
                             input.baseAddress, samples.count, nil,
                             out.baseAddress, out.count, &produced,
                             &io, &quality, nil)
            }
        }
        if let error { throw ResampleError(message: String(cString: error)) }
        if produced >= wanted {
            output.removeLast(output.count - wanted)
        } else {
            output.removeLast(output.count - produced)
            output.append(contentsOf: repeatElement(0, count: wanted - produced))
        }
        return output
    }
}

public struct ResampleError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { "libsoxr: \(message)" }
}
