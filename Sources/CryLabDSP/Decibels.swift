// Power → decibels, librosa 0.11's power_to_db.
import Foundation

/// The 0 dB reference of `powerToDB`.
///
/// Coded as a number (`1.0`) or the string `"max"` in JSON/YAML.
public enum DecibelReference: Sendable, Equatable, Codable {
    /// A fixed power (librosa's `ref=1.0`, the default); its absolute value is used.
    case value(Float)
    /// The spectrogram's own maximum (librosa's `ref=np.max`): the loudest bin reads 0 dB.
    case max

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Float.self) {
            self = .value(number)
        } else if let text = try? container.decode(String.self), text == "max" {
            self = .max
        } else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "dB reference must be a number (e.g. 1.0) or the string \"max\"")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .value(number): try container.encode(number)
        case .max: try container.encode("max")
        }
    }
}

/// `10 log10(max(amin, S)) - 10 log10(max(amin, |ref|))`, then, if `topDB` is set, every
/// value raised to at least `max - topDB` — exactly librosa's `power_to_db`.
///
/// - Parameters:
///   - power: a power spectrogram (any layout; values ≥ 0).
///   - reference: 0 dB level (default `.value(1)`); `.max` uses the spectrogram's maximum.
///   - amin: floor on power before the logarithm, > 0 (default 1e-10, i.e. -100 dB).
///   - topDB: dynamic range kept below the loudest value, in dB, ≥ 0 (default 80); nil keeps all.
public func powerToDB(_ power: Spectrogram, reference: DecibelReference = .value(1),
                      amin: Float = 1e-10, topDB: Float? = 80) throws -> Spectrogram {
    var result = power
    try powerToDBInPlace(&result, reference: reference, amin: amin, topDB: topDB)
    return result
}

/// `powerToDB` overwriting its input.
public func powerToDBInPlace(_ spectrogram: inout Spectrogram, reference: DecibelReference = .value(1),
                             amin: Float = 1e-10, topDB: Float? = 80) throws {
    guard amin > 0 else {
        throw DSPError.invalidParameter(name: "amin", value: "\(amin)", expected: "a strictly positive power floor, e.g. 1e-10")
    }
    if let topDB, !(topDB >= 0) {
        throw DSPError.invalidParameter(name: "topDB", value: "\(topDB)", expected: "a non-negative range in dB (e.g. 80) or nil for no floor")
    }
    let referencePower: Float
    switch reference {
    case let .value(value): referencePower = abs(value)
    case .max: referencePower = spectrogram.maximum
    }
    let offset = 10 * log10(Swift.max(amin, referencePower))
    var loudest = -Float.infinity
    spectrogram.values.withUnsafeMutableBufferPointer { values in
        for i in values.indices {
            let db = 10 * log10(Swift.max(amin, values[i])) - offset
            values[i] = db
            loudest = Swift.max(loudest, db)
        }
        if let topDB {
            let floor = loudest - topDB
            for i in values.indices { values[i] = Swift.max(values[i], floor) }
        }
    }
}
