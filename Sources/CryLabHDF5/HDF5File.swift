import CHDF5
import Foundation

/// An open HDF5 file. Use from one thread at a time (Debian's serial HDF5 is not thread-safe).
///
/// Reading validates type, rank and size against the file before anything is allocated, so a
/// damaged or hostile file yields an `HDF5Error`, never a crash or a huge allocation.
public final class HDF5File {
    public let path: String
    let id: hid_t

    private init(path: String, id: hid_t) {
        self.path = path
        self.id = id
    }

    deinit {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        H5Fclose(id)
    }

    /// Creates (or truncates) a file. Prefer `HDF5File.writeAtomically` for anything a reader may see.
    public static func create(_ path: String) throws -> HDF5File {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        crylab_h5_silence_errors()
        // File format 1.8 or later: every piece of metadata carries a checksum, so a damaged file
        // is reported by HDF5 instead of being decoded (h5py and Keras read it as usual).
        let access = H5Pcreate(crylab_h5p_file_access())
        defer { H5Pclose(access) }
        H5Pset_libver_bounds(access, H5F_LIBVER_V18, H5F_LIBVER_V110)
        let id = H5Fcreate(path, crylab_h5f_acc_trunc(), crylab_h5p_default(), access)
        guard id >= 0 else { throw HDF5Error.cannotCreate(file: path, detail: "H5Fcreate failed") }
        return HDF5File(path: path, id: id)
    }

    /// Opens an existing file for reading (or reading and writing).
    public static func open(_ path: String, writable: Bool = false) throws -> HDF5File {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        crylab_h5_silence_errors()
        guard FileManager.default.fileExists(atPath: path) else {
            throw HDF5Error.cannotOpen(file: path, detail: "no such file")
        }
        guard H5Fis_hdf5(path) > 0 else {
            throw HDF5Error.cannotOpen(file: path, detail: "not an HDF5 file")
        }
        let id = H5Fopen(path, writable ? crylab_h5f_acc_rdwr() : crylab_h5f_acc_rdonly(), crylab_h5p_default())
        guard id >= 0 else { throw HDF5Error.cannotOpen(file: path, detail: "H5Fopen failed") }
        return HDF5File(path: path, id: id)
    }

    /// The root group, "/".
    public var root: HDF5Group {
        get throws {
            hdf5Lock.lock(); defer { hdf5Lock.unlock() }
            return try HDF5Group(file: self, path: "/", id: H5Gopen2(id, "/", crylab_h5p_default()))
        }
    }

    /// Flushes everything written so far to the operating system.
    public func flush() throws {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        guard H5Fflush(id, H5F_SCOPE_GLOBAL) >= 0 else {
            throw HDF5Error.operationFailed(file: path, path: "/", operation: "flush")
        }
    }

    /// Size of the file on disk in bytes.
    var sizeOnDisk: Int {
        var size: hsize_t = 0
        return H5Fget_filesize(id, &size) >= 0 ? Int(size) : 0
    }
}

/// A group in an HDF5 file: datasets, attributes and sub-groups by name.
public final class HDF5Group {
    public let file: HDF5File
    /// Absolute path of this group inside the file.
    public let path: String
    let id: hid_t

    init(file: HDF5File, path: String, id: hid_t) throws {
        guard id >= 0 else { throw HDF5Error.missing(file: file.path, path: path) }
        self.file = file
        self.path = path
        self.id = id
    }

    deinit {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        H5Gclose(id)
    }

    func childPath(_ name: String) -> String { path == "/" ? "/\(name)" : "\(path)/\(name)" }

    /// Whether a link named `name` exists here (names may contain '/' for nested paths).
    public func contains(_ name: String) -> Bool {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        var prefix = ""
        for component in name.split(separator: "/") {
            prefix += prefix.isEmpty ? String(component) : "/\(component)"
            if H5Lexists(id, prefix, crylab_h5p_default()) <= 0 { return false }
        }
        return !prefix.isEmpty
    }

    /// Names of the direct children, in name order.
    public func childNames() throws -> [String] {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        var info = H5G_info_t()
        guard H5Gget_info(id, &info) >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: path, operation: "list")
        }
        var names: [String] = []
        for index in 0..<info.nlinks {
            let length = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, crylab_h5p_default())
            guard length >= 0, length < 65536 else { continue }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer, buffer.count, crylab_h5p_default())
            names.append(String(cString: buffer))
        }
        return names
    }

    public enum ChildKind: Sendable { case group, dataset, other }

    public func kind(of name: String) -> ChildKind? {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        guard contains(name) else { return nil }
        let object = H5Oopen(id, name, crylab_h5p_default())
        guard object >= 0 else { return nil }
        defer { H5Oclose(object) }
        switch H5Iget_type(object) {
        case H5I_GROUP: return .group
        case H5I_DATASET: return .dataset
        default: return .other
        }
    }

    public func createGroup(_ name: String) throws -> HDF5Group {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let groupID = H5Gcreate2(id, name, crylab_h5p_default(), crylab_h5p_default(), crylab_h5p_default())
        guard groupID >= 0 else {
            throw HDF5Error.operationFailed(file: file.path, path: childPath(name), operation: "create group")
        }
        return try HDF5Group(file: file, path: childPath(name), id: groupID)
    }

    public func openGroup(_ name: String) throws -> HDF5Group {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        guard let found = kind(of: name) else { throw HDF5Error.missing(file: file.path, path: childPath(name)) }
        guard found == .group else {
            throw HDF5Error.wrongKind(file: file.path, path: childPath(name), expected: "a group", found: "\(found)")
        }
        return try HDF5Group(file: file, path: childPath(name), id: H5Gopen2(id, name, crylab_h5p_default()))
    }

    public func openOrCreateGroup(_ name: String) throws -> HDF5Group {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        return contains(name) ? try openGroup(name) : try createGroup(name)
    }
}

/// Debian's serial HDF5 is not thread-safe: every call into it from CryLab holds this lock.
/// Recursive, because public methods call each other.
let hdf5Lock = NSRecursiveLock()
