import Foundation
import Glibc

extension HDF5File {
    /// Writes an HDF5 file so that `path` only ever holds a complete file: the contents go to a
    /// temporary file in the same folder, which is flushed, fsync'ed and renamed over `path`, and
    /// the folder is fsync'ed. A process killed at any moment leaves the old file or the new one.
    /// Temporary files that killed writers left in the folder are removed first.
    public static func writeAtomically(to path: String, _ body: (HDF5File) throws -> Void) throws {
        hdf5Lock.lock(); defer { hdf5Lock.unlock() }
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        removeStaleTemporaries(in: folder)
        let temporary = "\(folder)/\(temporaryPrefix)\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        do {
            do {
                let file = try HDF5File.create(temporary)
                try body(file)
                try file.flush()
            }  // the file is closed here, when its last reference goes
            try fsyncPath(temporary, file: path)
            guard rename(temporary, path) == 0 else {
                throw HDF5Error.cannotCreate(file: path, detail: "rename failed: \(String(cString: strerror(errno)))")
            }
            try fsyncPath(folder, file: path)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Prefix of the temporary files `writeAtomically` uses.
    public static let temporaryPrefix = ".crylab-partial-"

    /// Removes temporary files left in `folder` by writers that died (their process is gone).
    /// Returns the removed paths.
    @discardableResult
    public static func removeStaleTemporaries(in folder: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix(temporaryPrefix) {
            let parts = name.split(separator: ".")
            // .crylab-partial-NAME.EXT.PID.RANDOM: the writer's pid is the second-to-last part.
            if parts.count >= 3, let pid = Int32(parts[parts.count - 2]), pid != getpid(), kill(pid, 0) == 0 {
                continue
            }
            let fullPath = "\(folder)/\(name)"
            if unlink(fullPath) == 0 { removed.append(fullPath) }
        }
        return removed
    }

    private static func fsyncPath(_ target: String, file: String) throws {
        let descriptor = Glibc.open(target, O_RDONLY)
        guard descriptor >= 0 else {
            throw HDF5Error.cannotCreate(file: file, detail: "cannot open \(target) to sync it")
        }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else {
            throw HDF5Error.cannotCreate(file: file, detail: "fsync failed: \(String(cString: strerror(errno)))")
        }
    }
}
