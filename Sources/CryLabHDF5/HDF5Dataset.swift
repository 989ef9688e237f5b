import CHDF5
import Foundation

/// Largest element count CryLab reads from one dataset unless a caller allows more (1 Gi elements).
public let defaultElementLimit = 1 << 30

extension HDF5Group {
    /// Writes a dataset of numbers. `values.count` must equal the product of `shape`.
    /// values: row-major (C order), as numpy and h5py expect.
    public func write<T: HDF5Scalar>(_ values: [T], shape: [Int], as name: String) throws {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        precondition(values.count == shape.reduce(1, *), "\(name): \(values.count) values for shape \(shape)")
        let dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), dims, nil)
        defer { H5Sclose(space) }
        let dataset = H5Dcreate2(id, name, T.fileType, space, crylab_h5p_default(), crylab_h5p_default(), crylab_h5p_default())
        guard dataset >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "create dataset")
        }
        defer { H5Dclose(dataset) }
        let status = values.withUnsafeBytes { raw in
            H5Dwrite(dataset, T.memoryType, crylab_h5s_all(), crylab_h5s_all(), crylab_h5p_default(), raw.baseAddress)
        }
        guard status >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "write")
        }
    }

    /// Writes a one-dimensional dataset of fixed-length UTF-8 strings, NUL-padded to the longest
    /// (h5py: `file["path"].asstr()[:]`). Fixed-length, because variable-length strings live in
    /// HDF5's unchecksummed global heap, where damage crashes the library.
    public func writeStrings(_ strings: [String], as name: String) throws {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let (type, bytes) = fixedStringTable(strings)
        defer { H5Tclose(type) }
        var dims = [hsize_t(strings.count)]
        let space = H5Screate_simple(1, &dims, nil)
        defer { H5Sclose(space) }
        let dataset = H5Dcreate2(id, name, type, space, crylab_h5p_default(), crylab_h5p_default(), crylab_h5p_default())
        guard dataset >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "create dataset")
        }
        defer { H5Dclose(dataset) }
        if strings.isEmpty { return }
        let status = bytes.withUnsafeBytes {
            H5Dwrite(dataset, type, crylab_h5s_all(), crylab_h5s_all(), crylab_h5p_default(), $0.baseAddress)
        }
        guard status >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "write")
        }
    }

    /// A fixed-length UTF-8 string type `width` bytes wide (at least 1).
    func fixedStringType(width: Int) -> hid_t {
        let type = H5Tcopy(crylab_h5t_c_s1())
        H5Tset_size(type, max(1, width))
        H5Tset_strpad(type, H5T_STR_NULLPAD)
        H5Tset_cset(type, H5T_CSET_UTF8)
        return type
    }

    /// The type and NUL-padded bytes of `strings` as a fixed-length table.
    func fixedStringTable(_ strings: [String]) -> (type: hid_t, bytes: [UInt8]) {
        let width = max(1, strings.map { $0.utf8.count }.max() ?? 1)
        var bytes = [UInt8](repeating: 0, count: width * max(1, strings.count))
        for (index, string) in strings.enumerated() {
            for (offset, byte) in string.utf8.enumerated() { bytes[index * width + offset] = byte }
        }
        return (fixedStringType(width: width), bytes)
    }

    /// Shape of a dataset, without reading it.
    public func shape(of name: String) throws -> [Int] {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let dataset = try openDataset(name)
        defer { H5Dclose(dataset) }
        return try datasetShape(dataset, name: name)
    }

    /// Reads a numeric dataset, checking its type class, rank (`rank`, if given) and size first.
    public func read<T: HDF5Scalar>(_ name: String, as: T.Type = T.self, rank: Int? = nil,
                                    elementLimit: Int = defaultElementLimit) throws -> (values: [T], shape: [Int]) {
        let (dataset, shape) = try openNumeric(name, as: T.self, rank: rank, elementLimit: elementLimit)
        defer { H5Dclose(dataset) }
        var values = [T](repeating: T.zero, count: shape.reduce(1, *))
        if !values.isEmpty {
            let status = values.withUnsafeMutableBytes { raw in
                H5Dread(dataset, T.memoryType, crylab_h5s_all(), crylab_h5s_all(), crylab_h5p_default(), raw.baseAddress)
            }
            guard status >= 0 else {
                throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "read")
            }
        }
        return (values, shape)
    }

    /// Reads the entries `rows` (in that order, repeats allowed) along the first axis of a numeric
    /// dataset, without reading the others: one hyperslab selection of the distinct rows, their
    /// consecutive runs joined, read in one call. The shape returned is `[rows.count] + the rest`.
    /// The whole dataset is checked as `read` checks it.
    public func readRows<T: HDF5Scalar>(_ name: String, rows: [Int], as: T.Type = T.self, rank: Int? = nil,
                                        elementLimit: Int = defaultElementLimit) throws -> (values: [T], shape: [Int]) {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let (dataset, shape) = try openNumeric(name, as: T.self, rank: rank, elementLimit: elementLimit)
        defer { H5Dclose(dataset) }
        guard let first = shape.first else {
            throw HDF5Error.wrongShape(file: file.path, path: childPath(name), expected: "at least one axis", found: shape)
        }
        if let bad = rows.first(where: { $0 < 0 || $0 >= first }) {
            throw HDF5Error.wrongShape(file: file.path, path: childPath(name), expected: "at least \(bad + 1) entries on its first axis (entry \(bad) was asked for)", found: shape)
        }
        let rowSize = shape.dropFirst().reduce(1, *)
        let distinct = Array(Set(rows)).sorted()
        var buffer = [T](repeating: T.zero, count: distinct.count * rowSize)
        if !buffer.isEmpty {
            let fileSpace = H5Dget_space(dataset)
            defer { H5Sclose(fileSpace) }
            var runStart = 0, operation = H5S_SELECT_SET
            for index in 1...distinct.count where index == distinct.count || distinct[index] != distinct[index - 1] + 1 {
                var start = [hsize_t(distinct[runStart])] + shape.dropFirst().map { _ in hsize_t(0) }
                var count = [hsize_t(index - runStart)] + shape.dropFirst().map { hsize_t($0) }
                guard H5Sselect_hyperslab(fileSpace, operation, &start, nil, &count, nil) >= 0 else {
                    throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "select rows")
                }
                operation = H5S_SELECT_OR
                runStart = index
            }
            var memoryDims = [hsize_t(buffer.count)]
            let memorySpace = H5Screate_simple(1, &memoryDims, nil)
            defer { H5Sclose(memorySpace) }
            let status = buffer.withUnsafeMutableBytes { raw in
                H5Dread(dataset, T.memoryType, memorySpace, fileSpace, crylab_h5p_default(), raw.baseAddress)
            }
            guard status >= 0 else {
                throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "read rows")
            }
        }
        if distinct == rows { return (buffer, [rows.count] + shape.dropFirst()) }
        let position = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($0.element, $0.offset) })
        var values = [T]()
        values.reserveCapacity(rows.count * rowSize)
        for row in rows {
            let at = position[row]! * rowSize
            values.append(contentsOf: buffer[at..<(at + rowSize)])
        }
        return (values, [rows.count] + shape.dropFirst())
    }

    /// Opens a numeric dataset after checking its type class, element size, rank (`rank`, if
    /// given), element count and stored bytes; the caller closes it.
    private func openNumeric<T: HDF5Scalar>(_ name: String, as: T.Type, rank: Int?, elementLimit: Int) throws -> (hid_t, [Int]) {
        let dataset = try openDataset(name)
        do {
            let type = H5Dget_type(dataset)
            defer { H5Tclose(type) }
            let typeClass = H5Tget_class(type)
            guard typeClass == T.typeClass else {
                throw HDF5Error.wrongKind(file: file.path, path: childPath(name),
                                          expected: "\(T.self) numbers", found: describe(typeClass: typeClass, type: type))
            }
            let storedSize = H5Tget_size(type)
            guard storedSize >= 1, storedSize <= 16 else {
                throw HDF5Error.inconsistent(file: file.path, path: childPath(name), detail: "element size \(storedSize) bytes")
            }
            let shape = try datasetShape(dataset, name: name)
            if let rank, shape.count != rank {
                throw HDF5Error.wrongShape(file: file.path, path: childPath(name), expected: "rank \(rank)", found: shape)
            }
            let count = try checkedCount(shape, displayPath: childPath(name), limit: elementLimit)
            try checkStorage(dataset, name: name, bytes: count * storedSize)
            return (dataset, shape)
        } catch {
            H5Dclose(dataset)
            throw error
        }
    }

    /// Reads a one-dimensional dataset of strings (variable-length or fixed-length).
    public func readStrings(_ name: String, elementLimit: Int = 10_000_000) throws -> [String] {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let dataset = try openDataset(name)
        defer { H5Dclose(dataset) }
        let shape = try datasetShape(dataset, name: name)
        guard shape.count <= 1 else {
            throw HDF5Error.wrongShape(file: file.path, path: childPath(name), expected: "rank 1", found: shape)
        }
        let count = try checkedCount(shape, displayPath: childPath(name), limit: elementLimit)
        let type = H5Dget_type(dataset)
        defer { H5Tclose(type) }
        guard H5Tget_class(type) == H5T_STRING else {
            throw HDF5Error.wrongKind(file: file.path, path: childPath(name), expected: "strings",
                                      found: describe(typeClass: H5Tget_class(type), type: type))
        }
        return try readStringValues(count: count, storedType: type, displayPath: childPath(name)) { memoryType, buffer in
            H5Dread(dataset, memoryType, crylab_h5s_all(), crylab_h5s_all(), crylab_h5p_default(), buffer)
        }
    }

    // MARK: - helpers

    func openDataset(_ name: String) throws -> hid_t {
        guard let found = kind(of: name) else { throw HDF5Error.missing(file: file.path, path: childPath(name)) }
        guard found == .dataset else {
            throw HDF5Error.wrongKind(file: file.path, path: childPath(name), expected: "a dataset", found: "\(found)")
        }
        let dataset = H5Dopen2(id, name, crylab_h5p_default())
        guard dataset >= 0 else { throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "open") }
        return dataset
    }

    func datasetShape(_ dataset: hid_t, name: String) throws -> [Int] {
        let space = H5Dget_space(dataset)
        defer { H5Sclose(space) }
        return try spaceShape(space, displayPath: childPath(name))
    }

    /// The dimensions of a dataset's or attribute's dataspace; `displayPath` names it in errors.
    func spaceShape(_ space: hid_t, displayPath: String) throws -> [Int] {
        // An empty value (h5py.Empty) has rank 0 like a scalar, but nothing to read: reading it
        // would leave the buffer as it was and pass a zero off as the stored value.
        guard H5Sget_simple_extent_type(space) != H5S_NULL else {
            throw HDF5Error.wrongKind(file: file.path, path: displayPath, expected: "a value",
                                      found: "empty (an HDF5 null dataspace, h5py.Empty)")
        }
        let rank = H5Sget_simple_extent_ndims(space)
        guard rank >= 0, rank <= 8 else {
            throw HDF5Error.inconsistent(file: file.path, path: displayPath, detail: "rank \(rank)")
        }
        var dims = [hsize_t](repeating: 0, count: Int(rank))
        if rank > 0 { H5Sget_simple_extent_dims(space, &dims, nil) }
        for dim in dims where dim > hsize_t(Int32.max) {
            throw HDF5Error.tooLarge(file: file.path, path: displayPath, elements: Int(clamping: dim), limit: Int(Int32.max))
        }
        return dims.map { Int($0) }
    }

    func checkedCount(_ shape: [Int], displayPath: String, limit: Int) throws -> Int {
        var count = 1
        for dim in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dim)
            if overflow || product > limit {
                throw HDF5Error.tooLarge(file: file.path, path: displayPath, elements: overflow ? Int.max : product, limit: limit)
            }
            count = product
        }
        return count
    }

    /// An uncompressed dataset must have exactly the bytes its shape needs, and no dataset can
    /// hold more than the file itself (times a generous compression factor).
    private func checkStorage(_ dataset: hid_t, name: String, bytes: Int) throws {
        guard bytes > 0 else { return }
        let stored = Int(H5Dget_storage_size(dataset))
        let plist = H5Dget_create_plist(dataset)
        defer { H5Pclose(plist) }
        let filters = H5Pget_nfilters(plist)
        if filters <= 0 {
            guard stored >= bytes else {
                throw HDF5Error.inconsistent(file: file.path, path: childPath(name),
                                             detail: "needs \(bytes) bytes but \(stored) are stored")
            }
        }
        let fileSize = file.sizeOnDisk
        if fileSize > 0, bytes > fileSize * 1000 {
            throw HDF5Error.tooLarge(file: file.path, path: childPath(name), elements: bytes, limit: fileSize * 1000)
        }
    }

    func describe(typeClass: H5T_class_t, type: hid_t) -> String {
        switch typeClass {
        case H5T_FLOAT: return "\(H5Tget_size(type) * 8)-bit floats"
        case H5T_INTEGER: return "\(H5Tget_size(type) * 8)-bit integers"
        case H5T_STRING: return "strings"
        case H5T_COMPOUND: return "a compound type"
        case H5T_VLEN: return "variable-length sequences (not strings)"
        case H5T_ARRAY: return "an array type"
        case H5T_ENUM: return "an enumeration"
        case H5T_OPAQUE: return "opaque bytes"
        case H5T_REFERENCE: return "object references"
        case H5T_BITFIELD: return "a bit field"
        default: return "type class \(typeClass.rawValue)"
        }
    }

    /// Reads `count` strings through `read(memoryType, buffer)`, for datasets and attributes alike.
    /// `displayPath` names the object in errors.
    func readStringValues(count: Int, storedType: hid_t, displayPath: String,
                          read: (hid_t, UnsafeMutableRawPointer?) -> herr_t) throws -> [String] {
        if count == 0 { return [] }
        if H5Tis_variable_str(storedType) > 0 {
            let memoryType = variableStringType()
            defer { H5Tclose(memoryType) }
            H5Tset_cset(memoryType, H5Tget_cset(storedType))
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
            let status = pointers.withUnsafeMutableBytes { read(memoryType, $0.baseAddress) }
            guard status >= 0 else { throw HDF5Error.operationFailed(file: file.path, path: displayPath, operation: "read") }
            let strings = pointers.map { $0.map { String(cString: $0) } ?? "" }
            var dims = [hsize_t(count)]
            let space = H5Screate_simple(1, &dims, nil)
            pointers.withUnsafeMutableBytes { _ = H5Dvlen_reclaim(memoryType, space, crylab_h5p_default(), $0.baseAddress) }
            H5Sclose(space)
            return strings
        }
        let size = H5Tget_size(storedType)
        guard size > 0, size <= 1 << 20, count.multipliedReportingOverflow(by: size).overflow == false,
              count * size <= 1 << 30 else {
            throw HDF5Error.inconsistent(file: file.path, path: displayPath, detail: "fixed string size \(size)")
        }
        let memoryType = H5Tcopy(crylab_h5t_c_s1())
        defer { H5Tclose(memoryType) }
        H5Tset_size(memoryType, size)
        H5Tset_strpad(memoryType, H5T_STR_NULLPAD)
        H5Tset_cset(memoryType, H5Tget_cset(storedType))
        var bytes = [UInt8](repeating: 0, count: count * size)
        let status = bytes.withUnsafeMutableBytes { read(memoryType, $0.baseAddress) }
        guard status >= 0 else { throw HDF5Error.operationFailed(file: file.path, path: displayPath, operation: "read") }
        return (0..<count).map { index in
            let slice = bytes[(index * size)..<((index + 1) * size)]
            let end = slice.firstIndex(of: 0) ?? slice.endIndex
            return String(decoding: slice[slice.startIndex..<end], as: UTF8.self)
        }
    }

    func variableStringType() -> hid_t {
        let type = H5Tcopy(crylab_h5t_c_s1())
        H5Tset_size(type, crylab_h5t_variable())
        H5Tset_cset(type, H5T_CSET_UTF8)
        return type
    }
}
