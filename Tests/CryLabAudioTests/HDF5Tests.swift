import CryLabHDF5
import Foundation
import Testing

@Suite("HDF5 files")
struct HDF5Tests {
    @Test("numbers, strings and attributes round-trip")
    func roundTrip() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("store.h5").path
        try HDF5File.writeAtomically(to: path) { file in
            let root = try file.root
            try root.write([Float](stride(from: 0, to: 24, by: 1)), shape: [2, 3, 4], as: "features")
            try root.write([Int32(-1), 2], shape: [2], as: "label")
            try root.writeStrings(["a/b.wav", "é.wav"], as: "path")
            let group = try root.createGroup("model_weights")
            try group.setAttribute("layer_names", .strings(["conv2d", "conv2d_1"]))
            try group.setAttribute("backend", .string("tensorflow"))
            try root.setAttribute("sample_rate", .int(16000))
            try root.setAttribute("fmax", .double(8000.5))
            try root.setAttribute("means", .doubles([1, 2.5]))
        }
        let file = try HDF5File.open(path)
        let root = try file.root
        let features = try root.read("features", as: Float.self, rank: 3)
        #expect(features.shape == [2, 3, 4])
        #expect(features.values == [Float](stride(from: 0, to: 24, by: 1)))
        #expect(try root.read("label", as: Int32.self).values == [-1, 2])
        #expect(try root.readStrings("path") == ["a/b.wav", "é.wav"])
        let group = try root.openGroup("model_weights")
        #expect(try group.stringsAttribute("layer_names") == ["conv2d", "conv2d_1"])
        #expect(try group.stringAttribute("backend") == "tensorflow")
        #expect(try root.attribute("sample_rate") == .int(16000))
        #expect(try root.doubleAttribute("fmax") == 8000.5)
        #expect(try root.attribute("means") == .doubles([1, 2.5]))
        #expect(try root.childNames() == ["features", "label", "model_weights", "path"])
        #expect(try root.attributeNames() == ["fmax", "means", "sample_rate"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path) == ["store.h5"],
                "no temporary file is left behind")
    }

    @Test("wrong kinds, shapes and missing names are errors naming the path")
    func strictReads() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("x.h5").path
        try HDF5File.writeAtomically(to: path) { file in
            try file.root.write([Int32(1), 2, 3], shape: [3], as: "label")
        }
        let root = try HDF5File.open(path).root
        #expect(throws: HDF5Error.missing(file: path, path: "/features")) { try root.read("features", as: Float.self) }
        #expect(throws: HDF5Error.self) { try root.read("label", as: Float.self) }
        #expect(throws: HDF5Error.self) { try root.read("label", as: Int32.self, rank: 2) }
        #expect(throws: HDF5Error.self) { try root.readStrings("label") }
        #expect(throws: HDF5Error.self) { try root.read("label", as: Int32.self, elementLimit: 2) }
    }

    @Test("a failed write leaves the previous file untouched and no temporary file")
    func failedWriteKeepsOldFile() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("ckpt.h5").path
        try HDF5File.writeAtomically(to: path) { try $0.root.write([Float(1)], shape: [1], as: "w") }
        struct Interrupted: Error {}
        #expect(throws: Interrupted.self) {
            try HDF5File.writeAtomically(to: path) { file in
                try file.root.write([Float(2)], shape: [1], as: "w")
                throw Interrupted()
            }
        }
        #expect(try HDF5File.open(path).root.read("w", as: Float.self).values == [1])
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path) == ["ckpt.h5"])
    }

    @Test("stale temporaries of dead writers are removed, live ones kept")
    func staleTemporaries() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let dead = folder.file("\(HDF5File.temporaryPrefix)last.h5.999999999.7").path
        let live = folder.file("\(HDF5File.temporaryPrefix)last.h5.1.7").path  // pid 1 is always alive
        FileManager.default.createFile(atPath: dead, contents: Data([1]))
        FileManager.default.createFile(atPath: live, contents: Data([1]))
        let removed = HDF5File.removeStaleTemporaries(in: folder.url.path)
        #expect(removed == [dead])
        #expect(FileManager.default.fileExists(atPath: live))
    }

    @Test("truncated and bit-flipped files give errors, never crashes")
    func corruptedFiles() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("good.h5").path
        try HDF5File.writeAtomically(to: path) { file in
            let root = try file.root
            try root.write([Float](repeating: 0.5, count: 4096), shape: [4, 32, 32], as: "features")
            try root.writeStrings(["a", "b", "c", "d"], as: "path")
            try root.setAttribute("class_names", .strings(["hungry", "tired"]))
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var generator = SystemRandomNumberGenerator()
        var variants: [Data] = [bytes.prefix(bytes.count / 2), bytes.prefix(100), Data()]
        for _ in 0..<60 {
            var copy = bytes
            for _ in 0..<8 {
                let index = Int.random(in: 0..<copy.count, using: &generator)
                copy[index] ^= UInt8.random(in: 1...255, using: &generator)
            }
            variants.append(copy)
        }
        var readable = 0
        for (index, variant) in variants.enumerated() {
            let damaged = folder.file("damaged-\(index).h5").path
            try variant.write(to: URL(fileURLWithPath: damaged))
            do {
                let root = try HDF5File.open(damaged).root
                _ = try root.read("features", as: Float.self, rank: 3)
                _ = try root.readStrings("path")
                _ = try root.stringsAttribute("class_names")
                readable += 1
            } catch is HDF5Error {
                // expected for most variants: a clear error instead of a crash
            }
        }
        #expect(readable < variants.count, "at least the truncated variants must be rejected")
    }
}
