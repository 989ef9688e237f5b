import CryLabCheckpoint
import CryLabFeatures
import CryLabHDF5
import Foundation
import Testing

/// Files h5py wrote (Scripts/keras/checkpoint_fixtures.py hostile): variable-length strings
/// where h5py puts them by default, and values of the wrong kind where CryLab expects others.
let hostileFixtures = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/hostile")

/// What the generator says of one file: "read", or "rejected" naming `key`.
struct HostileExpectation: Decodable {
    var expect: String
    var key: String?
    var paths: [String]?
    var modelName: String?

    enum CodingKeys: String, CodingKey { case expect, key, paths, modelName = "model_name" }

    static func of(_ file: String) throws -> HostileExpectation {
        struct Manifest: Decodable { var files: [String: HostileExpectation] }
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: hostileFixtures.appendingPathComponent("manifest.json")))
        return try #require(manifest.files[file], "\(file) is not in the hostile manifest")
    }
}

@Suite("Hostile files")
struct HostileFileTests {
    @Test("a Keras file whose every string is variable-length UTF-8 is read, and gives Keras's outputs")
    func variableLengthKerasFile() throws {
        let path = hostileFixtures.appendingPathComponent("keras-vlen-strings.h5").path
        let expectation = try HostileExpectation.of("keras-vlen-strings.h5")
        #expect(expectation.expect == "read")
        let root = try HDF5File.open(path).root
        #expect(try root.stringAttribute("keras_version") == "3.15.1")
        let modelName = try #require(expectation.modelName)
        #expect(modelName.unicodeScalars.contains { !$0.isASCII }, "the fixture's model name is not ASCII")
        #expect(try root.stringAttribute("model_config").contains("\"name\": \"\(modelName)\""))
        let encoder = try #require(try KerasEncoder.load(path))
        let output = encoder.model.predict(try KerasEncoderFixture.plain.inputTensor())
        let difference = largestRelativeDifference(output.values, try KerasEncoderFixture.plain.kerasOutput())
        print("keras-vlen-strings.h5: largest relative difference to Keras \(difference)")
        #expect(difference <= 1e-4)
        #expect(try Checkpoint.describe(path).format == "keras full model")
    }

    @Test("a feature store with variable-length string datasets and attributes is read")
    func variableLengthStore() throws {
        let path = hostileFixtures.appendingPathComponent("store-vlen.h5").path
        let expectation = try HostileExpectation.of("store-vlen.h5")
        #expect(expectation.expect == "read")
        let store = try FeatureStore.read(from: path)
        #expect(store.paths == expectation.paths)
        #expect(store.groups == ["family-a", "family-b"])
        #expect(store.classNames == ["hungry", "tired"])
        #expect(store.frontEnd.nMels == 16 && store.frontEnd.frames == 24 && store.frontEnd.sampleRate == 8000)
        let clips = try KerasEncoderFixture.batchNormalized.inputTensor().values
        #expect(store.features == clips)
    }

    /// Each rejected file, the reading that must fail, and a command that reads it (`embed` gets
    /// its `-o` from the test).
    static let rejected: [(file: String, read: @Sendable (String) throws -> Void, command: @Sendable (String) -> [String])] = [
        ("keras-vlen-weight.h5", { _ = try KerasEncoder.load($0) },
         { ["embed", "--encoder", $0, hostileFixtures.appendingPathComponent("store-vlen.h5").path] }),
        ("keras-vlen-integers.h5", { _ = try KerasEncoder.load($0) }, { ["inspect", $0] }),
        ("checkpoint-vlen-version.h5", { _ = try Checkpoint.load($0) }, { ["inspect", $0] }),
        ("store-vlen-number.h5", { _ = try FeatureStore.read(from: $0) },
         { ["embed", "--encoder", KerasEncoderFixture.batchNormalized.path, $0] }),
        ("store-empty-number.h5", { _ = try FeatureStore.read(from: $0) },
         { ["embed", "--encoder", KerasEncoderFixture.batchNormalized.path, $0] }),
    ]

    @Test("variable-length strings or empty values where numbers or other strings belong are rejected, naming the file and the key",
          arguments: rejected.indices)
    func rejectedInProcess(index: Int) throws {
        let (file, read, _) = Self.rejected[index]
        let path = hostileFixtures.appendingPathComponent(file).path
        let key = try #require(try HostileExpectation.of(file).key)
        do {
            try read(path)
            Issue.record("\(file) was read; it should be rejected at \(key)")
        } catch {
            let text = "\(error)"
            #expect(text.hasPrefix(path + ":"), "\(file): \(text)")
            #expect(text.contains(key), "\(file): the error names \(key): \(text)")
        }
    }

    @Test("the same files through the command line: an exit with CryLab's error, no crash and no HDF5 error stack on stderr",
          arguments: rejected.indices)
    func rejectedByCommand(index: Int) throws {
        let (file, _, command) = Self.rejected[index]
        let workspace = try Workspace()
        defer { workspace.remove() }
        let path = hostileFixtures.appendingPathComponent(file).path
        let key = try #require(try HostileExpectation.of(file).key)
        let run = try workspace.run(command(path) + (command(path)[0] == "embed" ? ["-o", workspace.path("embedding.h5")] : []))
        #expect(run.exited, "\(file): crylab \(command(path)[0]) died of a signal")
        #expect(run.status != 0)
        #expect(run.errors.contains(path) && run.errors.contains(key), "\(file): \(run.errors)")
        #expect(!run.printedLibraryErrors, "\(file): HDF5 printed its own error stack: \(run.errors)")
    }

    @Test("the readable files through the command line: inspect and embed succeed with nothing from HDF5 on stderr")
    func readByCommand() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let keras = hostileFixtures.appendingPathComponent("keras-vlen-strings.h5").path
        let inspect = try workspace.run(["inspect", keras])
        #expect(inspect.status == 0 && inspect.output.contains("keras full model"), "\(inspect.output)\(inspect.errors)")
        #expect(!inspect.printedLibraryErrors, "\(inspect.errors)")
        let output = workspace.path("embedding.h5")
        let embed = try workspace.run(["embed", "--encoder", KerasEncoderFixture.batchNormalized.path,
                                       hostileFixtures.appendingPathComponent("store-vlen.h5").path, "-o", output, "--pool", "none"])
        #expect(embed.status == 0, "\(embed.errors)")
        #expect(!embed.printedLibraryErrors, "\(embed.errors)")
        let (values, _) = try HDF5File.open(output).root.read("embedding", as: Float.self)
        let difference = largestRelativeDifference(values, try KerasEncoderFixture.batchNormalized.kerasOutput())
        print("embed of store-vlen.h5: largest relative difference to Keras \(difference)")
        #expect(difference <= 1e-4)
        #expect(try HDF5File.open(output).root.readStrings("path") == HostileExpectation.of("store-vlen.h5").paths)
    }
}
