import CryLabTraining
import Foundation
import Testing

// docs/recipes.md against the recipe types, so that the reference cannot drift from the code.
// The keys a recipe accepts come from its own decoder: every mapping of a recipe rejects an
// unknown key with the list of the keys allowed there, so a probe key placed at each level reads
// that list. The defaults come from a default recipe encoded as JSON.

private let referencePath = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("docs/recipes.md").path

/// One recipe type, seen from outside: its decoder and its encoded defaults by key path.
private struct RecipeType: Sendable {
    let name: String
    let decode: @Sendable (String) throws -> Void
    let defaults: [String: JSONValue]

    static let pretrain = RecipeType(
        name: "PretrainRecipe", decode: { _ = try loadRecipeText(PretrainRecipe.self, text: $0, file: "probe.yaml") },
        defaults: encodedDefaults(PretrainRecipe()))
    static let finetune = RecipeType(
        name: "FinetuneRecipe", decode: { _ = try loadRecipeText(FinetuneRecipe.self, text: $0, file: "probe.yaml") },
        defaults: encodedDefaults(FinetuneRecipe()))

    /// The error text of decoding `yaml`, nil when it decodes.
    func message(decoding yaml: String) -> String? {
        do {
            try decode(yaml)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// The keys the mapping at `path` allows, or nil when no mapping is there.
    func allowedKeys(at path: [String]) -> [String]? {
        items(after: "allowed here: ", in: message(decoding: probeYAML(at: path, value: "{zzProbeKey: 0}")))
    }

    /// The values the key at `path` allows, when it is a choice among names (`kind: adam`).
    func allowedValues(at path: [String]) -> [String]? {
        items(after: "use one of: ", in: message(decoding: probeYAML(at: path, value: "zzProbeValue")))
    }

    /// Every key path the recipe accepts, dotted; the keys of a list of mappings follow `[]`
    /// (`head.hidden[].units`).
    var acceptedPaths: Set<String> {
        var paths = Set<String>()
        func explore(_ path: [String]) {
            for key in allowedKeys(at: path) ?? [] {
                paths.insert((path + [key]).joined(separator: "."))
                let before = paths.count
                explore(path + [key])
                if paths.count == before { explore(path + [key + "[]"]) }
            }
        }
        explore([])
        return paths
    }
}

/// `value` placed at `path` in flow-style YAML; a segment ending in `[]` is a list of one element.
private func probeYAML(at path: [String], value: String) -> String {
    path.reversed().reduce(value) { inner, segment in
        segment.hasSuffix("[]") ? "{\(segment.dropLast(2)): [\(inner)]}" : "{\(segment): \(inner)}"
    }
}

/// The comma-separated names that follow `marker` to the end of `message`.
private func items(after marker: String, in message: String?) -> [String]? {
    guard let message, let range = message.range(of: marker) else { return nil }
    return message[range.upperBound...].components(separatedBy: ", ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// Paths with no key below them.
private func leaves(_ paths: Set<String>) -> Set<String> {
    paths.filter { path in !paths.contains { $0.hasPrefix(path + ".") || $0.hasPrefix(path + "[].") } }
}

/// A JSON value as decoded, for comparing documented defaults with encoded ones.
private indirect enum JSONValue: Decodable, Equatable, Sendable, CustomStringConvertible {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .number(let n): n == n.rounded() && abs(n) < 1e15 ? "\(Int(n))" : "\(n)"
        case .string(let s): s
        case .array(let a): "[\(a.map(\.description).joined(separator: ", "))]"
        case .object(let o): "{\(o.keys.sorted().map { "\($0): \(o[$0]!)" }.joined(separator: ", "))}"
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else if let v = try? c.decode(Double.self) { self = .number(v) }
        else if let v = try? c.decode(String.self) { self = .string(v) }
        else if let v = try? c.decode([JSONValue].self) { self = .array(v) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Whether a type cell of docs/recipes.md (`integer`, `number`, `boolean`, `text`, `list of ...`,
    /// `one of `a`, `b``) admits this value; a name must be listed in the cell.
    func fits(documentedType type: String) -> Bool {
        switch self {
        case .bool: type == "boolean"
        case .number(let n): type.hasPrefix("number") || (type.hasPrefix("integer") && n == n.rounded())
        case .string(let s): type == "text" || type.contains("`\(s)`")
        case .array: type.hasPrefix("list")
        case .null, .object: true
        }
    }

    /// Equal, numbers to float precision (defaults are often Float).
    func matches(_ other: JSONValue) -> Bool {
        switch (self, other) {
        case let (.number(a), .number(b)): return a == b || abs(a - b) <= 1e-6 * max(abs(a), abs(b))
        case let (.array(a), .array(b)): return a.count == b.count && zip(a, b).allSatisfy { $0.matches($1) }
        default: return self == other
        }
    }
}

/// The encoded default recipe, flattened to dotted key paths (absent optionals are absent).
private func encodedDefaults<R: Encodable>(_ recipe: R) -> [String: JSONValue] {
    var flat: [String: JSONValue] = [:]
    func flatten(_ value: JSONValue, _ path: String) {
        if case .object(let members) = value {
            for (key, member) in members { flatten(member, path.isEmpty ? key : "\(path).\(key)") }
        } else {
            flat[path] = value
        }
    }
    // A recipe type that cannot encode leaves nothing here, and every default check below fails.
    if let data = try? JSONEncoder().encode(recipe), let value = try? JSONDecoder().decode(JSONValue.self, from: data) {
        flatten(value, "")
    }
    return flat
}

/// A default written as one code span (`25`, `adam`, `[32, 64]`) as a JSON value; nil for prose.
private func literal(_ cell: String) -> JSONValue? {
    guard cell.count > 2, cell.hasPrefix("`"), cell.hasSuffix("`"), cell.filter({ $0 == "`" }).count == 2 else { return nil }
    let text = String(cell.dropFirst().dropLast())
    return (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .string(text)
}

/// One row of a key table in docs/recipes.md.
private struct DocumentedKey {
    let path: String, type: String, defaultValue: String, meaning: String
    let line: Int
}

/// The sections of docs/recipes.md whose tables the test reads, by the start of their heading.
private enum Section: String, CaseIterable {
    case pretrain = "## Pretraining keys"
    case finetune = "## Fine-tuning keys"
    case shared = "## Keys of both recipes"

    var recipes: [RecipeType] {
        switch self {
        case .pretrain: [.pretrain]
        case .finetune: [.finetune]
        case .shared: [.pretrain, .finetune]
        }
    }
}

/// The key tables (`| key | type | default | meaning |`) of each section.
private func readReference() throws -> [Section: [DocumentedKey]] {
    let text = try String(contentsOfFile: referencePath, encoding: .utf8)
    var sections: [Section: [DocumentedKey]] = [:]
    var current: Section?
    for (index, line) in text.components(separatedBy: "\n").enumerated() {
        if line.hasPrefix("## ") {
            current = Section.allCases.first { line.hasPrefix($0.rawValue) }
            if let current { sections[current] = sections[current] ?? [] }
            continue
        }
        guard let current, line.hasPrefix("| `") else { continue }
        let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
            .map { $0.trimmingCharacters(in: .whitespaces) }
        guard cells.count == 4, cells.allSatisfy({ !$0.isEmpty }) else {
            Issue.record("docs/recipes.md line \(index + 1): a key row needs four filled cells (key, type, default, meaning), got \(cells)")
            continue
        }
        let path = cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
        sections[current]!.append(DocumentedKey(path: path, type: cells[1], defaultValue: cells[2], meaning: cells[3], line: index + 1))
    }
    return sections
}

/// Every documented key that is not inside a list of mappings, with its section.
private func keysOutsideLists(_ reference: [Section: [DocumentedKey]]) -> [(section: Section, key: DocumentedKey)] {
    Section.allCases.flatMap { section in
        (reference[section] ?? []).filter { !$0.path.contains("[]") }.map { (section: section, key: $0) }
    }
}

@Suite("Recipe reference (docs/recipes.md)")
struct RecipeReferenceTests {
    @Test("every key a recipe accepts is documented, and every documented key is accepted")
    func keys() throws {
        let reference = try readReference()
        for section in Section.allCases {
            try #require(reference[section] != nil, "docs/recipes.md needs a section starting '\(section.rawValue)'")
        }
        let accepted = [RecipeType.pretrain.name: RecipeType.pretrain.acceptedPaths,
                        RecipeType.finetune.name: RecipeType.finetune.acceptedPaths]
        // The probe must reach nested mappings and lists of mappings, or the checks below prove nothing.
        #expect(accepted["PretrainRecipe"]!.isSuperset(of: ["name", "frontEnd.nMels", "objective.patches.ratio", "training.optimizer.clipNorm"]))
        #expect(accepted["FinetuneRecipe"]!.isSuperset(of: ["merge", "encoder.widths", "head.hidden[].units", "evaluation.folds"]))
        #expect(!accepted["PretrainRecipe"]!.contains("head.pooling"))

        for section in Section.allCases {
            var seen = Set<String>()
            for key in reference[section]! {
                if !seen.insert(key.path).inserted {
                    Issue.record("docs/recipes.md line \(key.line): '\(key.path)' is documented twice in '\(section.rawValue)'")
                }
                for recipe in section.recipes where !accepted[recipe.name]!.contains(key.path) {
                    Issue.record("docs/recipes.md line \(key.line) documents '\(key.path)', which \(recipe.name) does not accept")
                }
            }
        }
        let shared = Set(reference[.shared]!.map(\.path))
        for (section, recipe) in [(Section.pretrain, RecipeType.pretrain), (Section.finetune, RecipeType.finetune)] {
            let documented = Set(reference[section]!.map(\.path)).union(shared)
            for path in leaves(accepted[recipe.name]!).sorted() where !documented.contains(path) {
                Issue.record("\(recipe.name) accepts '\(path)', but docs/recipes.md does not document it under '\(section.rawValue)' or '\(Section.shared.rawValue)'")
            }
        }
    }

    @Test("documented defaults and types agree with the default recipes")
    func defaultsAndTypes() throws {
        var checkedDefaults = 0
        for (section, key) in keysOutsideLists(try readReference()) {
            let values = section.recipes.compactMap { recipe in recipe.defaults[key.path].map { (recipe: recipe.name, value: $0) } }
            for (recipe, value) in values where !value.fits(documentedType: key.type) {
                Issue.record("docs/recipes.md line \(key.line): '\(key.path)' is documented as '\(key.type)', but \(recipe)'s default \(value) is not one")
            }
            guard let documented = literal(key.defaultValue) else { continue }
            if values.isEmpty {
                Issue.record("docs/recipes.md line \(key.line): '\(key.path)' documents the default \(key.defaultValue), but the default recipe has no value there; say what leaving it out means instead")
            }
            for (recipe, value) in values where !documented.matches(value) {
                Issue.record("docs/recipes.md line \(key.line): '\(key.path)' documents the default \(key.defaultValue), \(recipe)'s is \(value)")
            }
            checkedDefaults += 1
        }
        #expect(checkedDefaults >= 40, "only \(checkedDefaults) defaults were written as one code span and checked")
    }

    @Test("documented choices are the values the decoder allows")
    func choices() throws {
        var checkedChoices = 0
        for (section, key) in keysOutsideLists(try readReference()) {
            for recipe in section.recipes {
                guard let allowed = recipe.allowedValues(at: key.path.components(separatedBy: ".")) else { continue }
                let documented = key.type.hasPrefix("one of")
                    ? key.type.components(separatedBy: "`").enumerated().filter { $0.offset % 2 == 1 }.map(\.element) : []
                #expect(Set(documented) == Set(allowed),
                        "docs/recipes.md line \(key.line): '\(key.path)' is documented as '\(key.type)'; \(recipe.name) allows one of \(allowed)")
                checkedChoices += 1
            }
        }
        // optimizer kind and schedule (twice each: both recipes), preset (twice), loss, pooling,
        // class weights, sampling and split.
        #expect(checkedChoices >= 11)
    }
}
