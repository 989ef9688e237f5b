import Foundation
import Yams

/// A recipe could not be used; the message names the YAML key path and what is allowed.
public struct RecipeError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var message: String
    public var description: String { "\(file): \(message)" }
}

/// Any key, to list the keys a YAML mapping really has.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Rejects keys of the mapping being decoded that `Keys` does not know: a misspelt recipe key
/// is an error, not a silently ignored line.
func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ decoder: Decoder, _ keys: Keys.Type) throws {
    let container = try decoder.container(keyedBy: AnyKey.self)
    let known = Set(Keys.allCases.map(\.stringValue))
    for key in container.allKeys where !known.contains(key.stringValue) {
        let path = (decoder.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
        throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [key],
            debugDescription: "unknown key '\(path)'; allowed here: \(known.sorted().joined(separator: ", "))"))
    }
}

/// Decodes a recipe from YAML text, turning decoding errors into messages with key paths.
public func decodeRecipe<R: Decodable>(_ type: R.Type, yaml: String, file: String) throws -> R {
    do {
        return try YAMLDecoder().decode(R.self, from: yaml.isEmpty ? "{}" : yaml)
    } catch let error as DecodingError {
        throw RecipeError(file: file, message: describe(error))
    } catch let error as RecipeError {
        throw error
    } catch {
        throw RecipeError(file: file, message: "not valid YAML: \(error)")
    }
}

func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
        let parts = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return parts.isEmpty ? "(top level)" : parts.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }
    switch error {
    case .typeMismatch(_, let context) where context.codingPath.isEmpty:
        return "the recipe must be a YAML mapping of keys to values, like the files in Recipes/"
    case .typeMismatch(let type, let context):
        return "key '\(path(context))': expected \(typeName(type)); \(context.debugDescription)"
    case .valueNotFound(let type, let context):
        return "key '\(path(context))': a value of type \(typeName(type)) is required"
    case .keyNotFound(let key, let context):
        return "key '\(path(context)).\(key.stringValue)' is required"
    case .dataCorrupted(let context):
        return "key '\(path(context))': \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}

private func typeName(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type: return "an integer"
    case is Double.Type, is Float.Type: return "a number"
    case is Bool.Type: return "true or false"
    case is String.Type: return "text"
    default: return "\(type)"
    }
}

/// A value that must be one of a fixed set of names, with an error listing them.
func decodeChoice<T: RawRepresentable & CaseIterable>(_ type: T.Type, from decoder: Decoder) throws -> T where T.RawValue == String {
    let container = try decoder.singleValueContainer()
    let raw = try container.decode(String.self)
    guard let value = T(rawValue: raw) else {
        throw DecodingError.dataCorruptedError(in: container,
            debugDescription: "'\(raw)' is not allowed; use one of: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return value
}
