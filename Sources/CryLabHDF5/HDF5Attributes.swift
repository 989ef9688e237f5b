import CHDF5
import Foundation

/// A value stored as an HDF5 attribute. Strings are written fixed-length, UTF-8, NUL-padded (as
/// Keras writes `layer_names`; h5py reads them as bytes). Never variable-length: those live in
/// HDF5's global heap, which has no checksum, and a damaged heap crashes the HDF5 library itself.
public enum HDF5AttributeValue: Equatable, Sendable {
    case string(String)
    case strings([String])
    case double(Double)
    case doubles([Double])
    case int(Int64)
    case ints([Int64])

    /// What the value is, for errors that say what was found.
    var kindDescription: String {
        switch self {
        case .string(let value): return "a string (\"\(value.prefix(40))\"\(value.count > 40 ? "..." : ""))"
        case .strings(let values): return "a list of \(values.count) strings"
        case .double(let value): return "the number \(value)"
        case .doubles(let values): return "a list of \(values.count) numbers"
        case .int(let value): return "the integer \(value)"
        case .ints(let values): return "a list of \(values.count) integers"
        }
    }
}

extension HDF5Group {
    /// Sets (replacing) an attribute on this group, or on the object at `object` below it.
    public func setAttribute(_ name: String, _ value: HDF5AttributeValue, on object: String = ".") throws {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        if H5Aexists_by_name(id, object, name, crylab_h5p_default()) > 0 {
            H5Adelete_by_name(id, object, name, crylab_h5p_default())
        }
        let attributePath = displayPath(ofAttribute: name, on: object)
        func create(type: hid_t, dims: [hsize_t]?) throws -> (attribute: hid_t, space: hid_t) {
            let space = dims.map { H5Screate_simple(Int32($0.count), $0, nil) } ?? H5Screate(H5S_SCALAR)
            let attribute = H5Acreate_by_name(id, object, name, type, space, crylab_h5p_default(), crylab_h5p_default(), crylab_h5p_default())
            guard attribute >= 0 else {
                H5Sclose(space)
                throw HDF5Error.operationFailed(file: file.path, path: attributePath, operation: "create attribute")
            }
            return (attribute, space)
        }
        var status: herr_t = 0
        switch value {
        case .string(let string):
            let type = fixedStringType(width: string.utf8.count)
            defer { H5Tclose(type) }
            let (attribute, space) = try create(type: type, dims: nil)
            defer { H5Aclose(attribute); H5Sclose(space) }
            var bytes = Array(string.utf8)
            if bytes.isEmpty { bytes = [0] }
            status = bytes.withUnsafeBytes { H5Awrite(attribute, type, $0.baseAddress) }
        case .strings(let strings):
            let (type, bytes) = fixedStringTable(strings)
            defer { H5Tclose(type) }
            let (attribute, space) = try create(type: type, dims: [hsize_t(strings.count)])
            defer { H5Aclose(attribute); H5Sclose(space) }
            status = bytes.withUnsafeBytes { H5Awrite(attribute, type, $0.baseAddress) }
        case .double(let number):
            let (attribute, space) = try create(type: Double.fileType, dims: nil)
            defer { H5Aclose(attribute); H5Sclose(space) }
            var copy = number
            status = H5Awrite(attribute, Double.memoryType, &copy)
        case .doubles(let numbers):
            let (attribute, space) = try create(type: Double.fileType, dims: [hsize_t(numbers.count)])
            defer { H5Aclose(attribute); H5Sclose(space) }
            status = numbers.withUnsafeBytes { H5Awrite(attribute, Double.memoryType, $0.baseAddress) }
        case .int(let number):
            let (attribute, space) = try create(type: Int64.fileType, dims: nil)
            defer { H5Aclose(attribute); H5Sclose(space) }
            var copy = number
            status = H5Awrite(attribute, Int64.memoryType, &copy)
        case .ints(let numbers):
            let (attribute, space) = try create(type: Int64.fileType, dims: [hsize_t(numbers.count)])
            defer { H5Aclose(attribute); H5Sclose(space) }
            status = numbers.withUnsafeBytes { H5Awrite(attribute, Int64.memoryType, $0.baseAddress) }
        }
        guard status >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: attributePath, operation: "write attribute")
        }
    }

    /// Names of the attributes on this group.
    public func attributeNames() throws -> [String] {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        var info = H5O_info_t()
        guard H5Oget_info(id, &info) >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: path, operation: "list attributes of")
        }
        var names: [String] = []
        for index in 0..<info.num_attrs {
            let length = H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, crylab_h5p_default())
            guard length >= 0, length < 65536 else { continue }
            var buffer = [CChar](repeating: 0, count: length + 1)
            H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer, buffer.count, crylab_h5p_default())
            names.append(String(cString: buffer))
        }
        return names
    }

    public func hasAttribute(_ name: String, on object: String = ".") -> Bool {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        return H5Aexists_by_name(id, object, name, crylab_h5p_default()) > 0
    }

    /// Reads an attribute, whatever its stored type, validating size before allocating.
    public func attribute(_ name: String, on object: String = ".") throws -> HDF5AttributeValue {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let attributePath = displayPath(ofAttribute: name, on: object)
        guard hasAttribute(name, on: object) else { throw HDF5Error.missing(file: file.path, path: attributePath) }
        let attribute = H5Aopen_by_name(id, object, name, crylab_h5p_default(), crylab_h5p_default())
        guard attribute >= 0 else { throw HDF5Error.operationFailed(file: file.path, path: attributePath, operation: "open attribute") }
        defer { H5Aclose(attribute) }
        let type = H5Aget_type(attribute)
        defer { H5Tclose(type) }
        let space = H5Aget_space(attribute)
        defer { H5Sclose(space) }
        let shape = try spaceShape(space, displayPath: attributePath)
        let isScalar = shape.isEmpty
        let count = try checkedCount(shape, displayPath: attributePath, limit: 10_000_000)
        switch H5Tget_class(type) {
        case H5T_STRING:
            let strings = try readStringValues(count: count, storedType: type, displayPath: attributePath) { memoryType, buffer in
                H5Aread(attribute, memoryType, buffer)
            }
            return isScalar ? .string(strings.first ?? "") : .strings(strings)
        case H5T_FLOAT:
            var values = [Double](repeating: 0, count: count)
            guard values.withUnsafeMutableBytes({ H5Aread(attribute, Double.memoryType, $0.baseAddress) }) >= 0 else {
                throw HDF5Error.operationFailed(file: file.path, path: attributePath, operation: "read attribute")
            }
            return isScalar ? .double(values[0]) : .doubles(values)
        case H5T_INTEGER:
            var values = [Int64](repeating: 0, count: count)
            guard values.withUnsafeMutableBytes({ H5Aread(attribute, Int64.memoryType, $0.baseAddress) }) >= 0 else {
                throw HDF5Error.operationFailed(file: file.path, path: attributePath, operation: "read attribute")
            }
            return isScalar ? .int(values[0]) : .ints(values)
        default:
            throw HDF5Error.wrongKind(file: file.path, path: attributePath, expected: "a string or number attribute",
                                      found: describe(typeClass: H5Tget_class(type), type: type))
        }
    }

    /// "/group@name", or "/group/object@name": how errors name an attribute.
    func displayPath(ofAttribute name: String, on object: String) -> String {
        "\(object == "." ? path : childPath(object))@\(name)"
    }

    /// Typed conveniences that name the attribute, the expected kind and what was found on error.
    /// A string is never read as a number: h5py writes `attrs["x"] = "1.0"` as a string, and a
    /// file that does so where a number belongs was not written by a compatible tool.
    public func stringAttribute(_ name: String, on object: String = ".") throws -> String {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let value = try attribute(name, on: object)
        switch value {
        case .string(let string): return string
        case .strings(let strings) where strings.count == 1: return strings[0]
        default: throw HDF5Error.wrongKind(file: file.path, path: displayPath(ofAttribute: name, on: object),
                                           expected: "a string", found: value.kindDescription)
        }
    }

    public func stringsAttribute(_ name: String, on object: String = ".") throws -> [String] {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let value = try attribute(name, on: object)
        switch value {
        case .strings(let strings): return strings
        case .string(let string): return [string]
        case .doubles(let numbers) where numbers.isEmpty: return []  // h5py writes an empty list as float64
        case .ints(let numbers) where numbers.isEmpty: return []
        default: throw HDF5Error.wrongKind(file: file.path, path: displayPath(ofAttribute: name, on: object),
                                           expected: "a list of strings", found: value.kindDescription)
        }
    }

    public func doubleAttribute(_ name: String, on object: String = ".") throws -> Double {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let value = try attribute(name, on: object)
        switch value {
        case .double(let number): return number
        case .int(let number): return Double(number)
        default: throw HDF5Error.wrongKind(file: file.path, path: displayPath(ofAttribute: name, on: object),
                                           expected: "a number", found: value.kindDescription)
        }
    }
}
