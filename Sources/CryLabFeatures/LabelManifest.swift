import Foundation

/// Class labels (and optionally recording sources) listed in a CSV file, for corpora whose labels
/// live in neither folder names nor file names.
///
/// The layout is the Hugging Face audiofolder `metadata.csv` convention, so one file serves both
/// tools: a header row naming the columns `file_name`, `label` and optionally `group`, then one row
/// per clip. `file_name` is the clip's path relative to the folder that holds the CSV (an absolute
/// path is taken as is). Rows are matched to discovered files by standardized absolute path, so
/// `a.wav` and `./a.wav` name the same file.
public struct LabelManifest: Sendable, Equatable {
    /// What one row says about one file.
    public struct Entry: Sendable, Equatable {
        public var label: String
        /// The recording source; nil when there is no `group` column or the cell is empty, so the
        /// group rule (`--group-pattern` or the default) decides.
        public var group: String?
        /// The CSV line the row starts on (1-based, the header is line 1), for error messages.
        public var line: Int

        public init(label: String, group: String?, line: Int) {
            self.label = label
            self.group = group
            self.line = line
        }
    }

    /// The only columns a manifest may have; `group` is optional.
    public static let allowedColumns = ["file_name", "label", "group"]

    /// The CSV file, as given.
    public var path: String
    /// The folder `file_name` is relative to: the one holding the CSV, standardized and absolute.
    public var folder: URL
    /// Rows keyed by the standardized absolute path of the file each names.
    public var entries: [String: Entry]
    /// Whether the manifest has a `group` column.
    public var hasGroupColumn: Bool

    /// Reads and checks the manifest at `path`.
    ///
    /// - Throws: `FeatureError.inputNotFound` when there is no such file;
    ///   `FeatureError.invalidManifest` for text that is not UTF-8, an unknown, repeated or missing
    ///   column, a row with the wrong number of fields, an empty `file_name` or `label`, two rows
    ///   naming the same file, or a malformed quoted field. Each names the line and the fix.
    public static func read(from path: String) throws -> LabelManifest {
        let url = URL(fileURLWithPath: path).absoluteURL.standardizedFileURL
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw FeatureError.inputNotFound(path)
        }
        let data = try Data(contentsOf: url)
        guard let text = String(data: data, encoding: .utf8) else {
            throw FeatureError.invalidManifest(path: path, line: nil,
                                               detail: "not UTF-8 text; save the CSV as UTF-8")
        }
        return try parse(text, path: path, folder: url.deletingLastPathComponent())
    }

    /// Parses manifest text whose `file_name` cells are relative to `folder`; `path` is only used
    /// in error messages. `read(from:)` is the usual door; this one lets tests skip the file.
    public static func parse(_ text: String, path: String, folder: URL) throws -> LabelManifest {
        var records = try csvRecords(in: text, path: path)
        guard !records.isEmpty else {
            throw FeatureError.invalidManifest(path: path, line: nil, detail: """
                the file is empty; expected a header row such as 'file_name,label' followed by one row per audio file
                """)
        }
        let header = records.removeFirst()
        let columns = header.fields.map { $0.trimmingCharacters(in: .whitespaces) }
        let allowed = allowedColumns.joined(separator: ", ")
        for (position, column) in columns.enumerated() {
            guard allowedColumns.contains(column) else {
                let shown = column.isEmpty ? "an empty column name (a trailing comma?)" : "unknown column '\(column)'"
                throw FeatureError.invalidManifest(path: path, line: header.line, detail: """
                    \(shown) in the header; the allowed columns are \(allowed) (group is optional); \
                    rename or remove that column
                    """)
            }
            if columns[..<position].contains(column) {
                throw FeatureError.invalidManifest(path: path, line: header.line,
                                                   detail: "the column '\(column)' appears twice in the header; keep one")
            }
        }
        guard let fileColumn = columns.firstIndex(of: "file_name"), let labelColumn = columns.firstIndex(of: "label") else {
            let missing = ["file_name", "label"].filter { !columns.contains($0) }.joined(separator: " and ")
            throw FeatureError.invalidManifest(path: path, line: header.line, detail: """
                the header has no \(missing) column (found: \(columns.joined(separator: ", "))); the first row must \
                name the columns, e.g. 'file_name,label' or 'file_name,label,group'
                """)
        }
        let groupColumn = columns.firstIndex(of: "group")
        let base = folder.absoluteURL.standardizedFileURL

        var entries: [String: Entry] = [:]
        for record in records {
            guard record.fields.count == columns.count else {
                throw FeatureError.invalidManifest(path: path, line: record.line, detail: """
                    expected \(columns.count) fields (\(columns.joined(separator: ","))), found \(record.fields.count); \
                    put a field that contains a comma in double quotes ("a,b")
                    """)
            }
            let fileName = record.fields[fileColumn]
            guard !fileName.isEmpty else {
                throw FeatureError.invalidManifest(path: path, line: record.line,
                                                   detail: "the file_name is empty; name the audio file, relative to \(base.path)")
            }
            let label = record.fields[labelColumn].trimmingCharacters(in: .whitespaces)
            guard !label.isEmpty else {
                throw FeatureError.invalidManifest(path: path, line: record.line,
                                                   detail: "the label of '\(fileName)' is empty; give it a label, or remove the row")
            }
            let group = groupColumn.map { record.fields[$0].trimmingCharacters(in: .whitespaces) }
            let key = fileName.hasPrefix("/") ? key(for: URL(fileURLWithPath: fileName))
                                              : key(for: base.appendingPathComponent(fileName))
            if let earlier = entries[key] {
                throw FeatureError.invalidManifest(path: path, line: record.line, detail: """
                    '\(fileName)' names the same file as line \(earlier.line); keep one row per file
                    """)
            }
            entries[key] = Entry(label: label, group: group?.isEmpty == false ? group : nil, line: record.line)
        }
        return LabelManifest(path: path, folder: base, entries: entries, hasGroupColumn: groupColumn != nil)
    }

    public init(path: String, folder: URL, entries: [String: Entry], hasGroupColumn: Bool) {
        self.path = path
        self.folder = folder
        self.entries = entries
        self.hasGroupColumn = hasGroupColumn
    }

    /// The row naming the file at `url`, if any.
    public func entry(for url: URL) -> Entry? { entries[Self.key(for: url)] }

    /// How many rows name none of `sources` (files listed but not found under the inputs).
    public func unmatchedRowCount(for sources: [AudioSource]) -> Int {
        let found = Set(sources.map { Self.key(for: $0.url) })
        return entries.keys.filter { !found.contains($0) }.count
    }

    /// `url` as `file_name` would be written for it: relative to the manifest's folder when inside it.
    func fileName(for url: URL) -> String {
        let full = Self.key(for: url)
        let prefix = folder.path.hasSuffix("/") ? folder.path : folder.path + "/"
        return full.hasPrefix(prefix) ? String(full.dropFirst(prefix.count)) : full
    }

    /// The comparison key: the standardized absolute path (symbolic links are not followed).
    static func key(for url: URL) -> String { url.absoluteURL.standardizedFileURL.path }
}

/// One CSV record: its fields and the line it starts on.
struct CSVRecord: Equatable {
    var fields: [String]
    var line: Int
}

/// Splits RFC 4180 text into records: fields separated by commas, records by line ends (`\r\n`
/// or `\n`); a field in double quotes may hold commas, line ends and doubled quotes (`""`).
/// A leading UTF-8 byte-order mark and every `\r` outside quotes are dropped; blank lines are skipped.
///
/// - Throws: `FeatureError.invalidManifest` naming the line of a stray or unclosed quote.
func csvRecords(in text: String, path: String) throws -> [CSVRecord] {
    var scalars = Substring(text).unicodeScalars
    if scalars.first == "\u{FEFF}" { scalars.removeFirst() }

    var records: [CSVRecord] = []
    var fields: [String] = []
    var field = String.UnicodeScalarView()
    var line = 1, recordLine = 1
    var inQuotes = false, fieldWasQuoted = false, recordHasContent = false

    func endField() {
        fields.append(String(field))
        field = String.UnicodeScalarView()
        fieldWasQuoted = false
    }
    func endRecord() {
        endField()
        if recordHasContent { records.append(CSVRecord(fields: fields, line: recordLine)) }
        fields = []
        recordHasContent = false
    }

    var index = scalars.startIndex
    while index < scalars.endIndex {
        let scalar = scalars[index]
        index = scalars.index(after: index)
        if inQuotes {
            if scalar == "\"" {
                if index < scalars.endIndex, scalars[index] == "\"" {
                    field.append("\"")
                    index = scalars.index(after: index)
                } else {
                    inQuotes = false
                }
            } else {
                if scalar == "\n" { line += 1 }
                field.append(scalar)
            }
            continue
        }
        switch scalar {
        case ",":
            recordHasContent = true
            endField()
        case "\r":
            continue
        case "\n":
            endRecord()
            line += 1
            recordLine = line
        case "\"" where field.isEmpty && !fieldWasQuoted:
            inQuotes = true
            fieldWasQuoted = true
            recordHasContent = true
        case "\"":
            throw FeatureError.invalidManifest(path: path, line: line, detail: #"a double quote inside an unquoted field; "#
                + #"put the whole field in quotes and double each quote inside it ("say ""hi"""), or remove the quote"#)
        case " " where fieldWasQuoted, "\t" where fieldWasQuoted:
            continue  // spaces after a closing quote
        default:
            if fieldWasQuoted {
                throw FeatureError.invalidManifest(path: path, line: line, detail: #"text after a closing quote; "#
                    + #"a quoted field ends at its closing quote (write a quote inside it as "")"#)
            }
            field.append(scalar)
            recordHasContent = true
        }
    }
    if inQuotes {
        throw FeatureError.invalidManifest(path: path, line: recordLine,
                                           detail: "a quoted field is never closed; add the closing double quote")
    }
    endRecord()
    return records
}
