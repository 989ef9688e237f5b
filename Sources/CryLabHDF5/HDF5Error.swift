/// Errors from reading or writing HDF5 files. Each names the file and the object path.
public enum HDF5Error: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, detail: String)
    case cannotCreate(file: String, detail: String)
    case missing(file: String, path: String)
    case wrongKind(file: String, path: String, expected: String, found: String)
    case wrongShape(file: String, path: String, expected: String, found: [Int])
    case tooLarge(file: String, path: String, elements: Int, limit: Int)
    case inconsistent(file: String, path: String, detail: String)
    case operationFailed(file: String, path: String, operation: String)

    public var description: String {
        switch self {
        case .cannotOpen(let file, let detail):
            return "\(file): cannot open as HDF5 (\(detail)); check the path, or re-create the file if it is damaged."
        case .cannotCreate(let file, let detail):
            return "\(file): cannot create (\(detail)); check that the folder exists and is writable."
        case .missing(let file, let path):
            return "\(file): no object '\(path)'; the file was not written by this tool or by a compatible version."
        case .wrongKind(let file, let path, let expected, let found):
            return "\(file): '\(path)' should be \(expected) but is \(found); the file is damaged or of another kind."
        case .wrongShape(let file, let path, let expected, let found):
            return "\(file): '\(path)' should have shape \(expected) but has \(found)."
        case .tooLarge(let file, let path, let elements, let limit):
            return "\(file): '\(path)' claims \(elements) elements (limit \(limit)); the file is damaged or hostile and was not read."
        case .inconsistent(let file, let path, let detail):
            return "\(file): '\(path)' is inconsistent: \(detail); the file is damaged and was not read."
        case .operationFailed(let file, let path, let operation):
            return "\(file): HDF5 could not \(operation) '\(path)'; the file may be damaged, or the disk full."
        }
    }
}
