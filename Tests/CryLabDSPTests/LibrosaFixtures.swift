// Reads the librosa reference fixtures written by Scripts/fixtures/make_librosa_fixtures.py.
import CryLabDSP
import Foundation

/// `librosa_manifest.json` plus the float32 arrays it points into.
struct LibrosaFixtures: Sendable {
    struct ArrayReference: Decodable, Sendable {
        var offset: Int
        var shape: [Int]
    }

    struct Signal: Decodable, Sendable {
        var name: String
        var sampleRate: Int
        var samples: ArrayReference
    }

    /// One librosa.feature.melspectrogram call on a synthetic signal.
    struct Case: Decodable, Sendable {
        var name: String
        var signal: String
        var sampleRate: Int
        var nFFT: Int
        var hopLength: Int?
        var winLength: Int?
        var nMels: Int
        var fMin: Double
        var fMax: Double?
        var power: Float
        var htk: Bool
        var slaneyNorm: Bool
        var dbRef: String
        var topDB: Float?
        var melPower: ArrayReference
        var melDB: ArrayReference
        var stftMagnitude: ArrayReference?

        var frontEnd: FrontEnd {
            FrontEnd(sampleRate: sampleRate, nFFT: nFFT, hopLength: hopLength, winLength: winLength, nMels: nMels,
                     fMin: fMin, fMax: fMax, power: power, melScale: htk ? .htk : .slaney,
                     melNorm: slaneyNorm ? .slaney : .none, dbReference: dbRef == "max" ? .max : .value(1), topDB: topDB)
        }
    }

    struct Filterbank: Decodable, Sendable {
        var sampleRate: Int
        var nFFT: Int
        var nMels: Int
        var fMin: Double
        var fMax: Double?
        var htk: Bool
        var slaneyNorm: Bool
        var weights: ArrayReference
    }

    /// librosa.load of a Donate-a-Cry file, then melspectrogram and power_to_db(ref=np.max).
    struct Recording: Decodable, Sendable {
        var path: String
        var loadRate: Int?
        var sampleRate: Int
        var sampleCount: Int
        var sampleSum: Double
        var nFFT: Int
        var hopLength: Int
        var nMels: Int
        var topDB: Float
        var melPower: ArrayReference
        var melDB: ArrayReference

        var label: String { "\(path.split(separator: "/").last ?? "") at \(loadRate.map { "\($0) Hz" } ?? "native rate"), nFFT \(nFFT)" }
    }

    private struct Manifest: Decodable {
        var arrayFile: String
        var floatCount: Int
        var signals: [Signal]
        var cases: [Case]
        var filterbanks: [Filterbank]
        var recordings: [Recording]
    }

    let signals: [String: Signal]
    let cases: [Case]
    let filterbanks: [Filterbank]
    let recordings: [Recording]
    private let floats: [Float]

    static let shared: LibrosaFixtures = {
        do { return try LibrosaFixtures() } catch { fatalError("cannot read the librosa fixtures: \(error)") }
    }()

    private init() throws {
        guard let folder = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "Fixtures folder missing from the test bundle"])
        }
        let manifest = try JSONDecoder().decode(
            Manifest.self, from: Data(contentsOf: folder.appendingPathComponent("librosa_manifest.json")))
        let data = try Data(contentsOf: folder.appendingPathComponent(manifest.arrayFile))
        precondition(data.count == manifest.floatCount * 4,
                     "\(manifest.arrayFile): expected \(manifest.floatCount * 4) bytes, found \(data.count); rerun the generator")
        floats = data.withUnsafeBytes { raw in
            (0..<manifest.floatCount).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
        signals = Dictionary(uniqueKeysWithValues: manifest.signals.map { ($0.name, $0) })
        cases = manifest.cases
        filterbanks = manifest.filterbanks
        recordings = manifest.recordings
    }

    func array(_ reference: ArrayReference) -> [Float] {
        let count = reference.shape.reduce(1, *)
        return Array(floats[reference.offset..<(reference.offset + count)])
    }

    /// A `[rows, frames]` array as a spectrogram.
    func spectrogram(_ reference: ArrayReference) -> Spectrogram {
        Spectrogram(rows: reference.shape[0], frames: reference.shape[1], values: array(reference))
    }

    func samples(of signal: String) -> [Float] { array(signals[signal]!.samples) }

    func testCase(_ name: String) -> Case { cases.first { $0.name == name }! }
}

/// Where the Donate-a-Cry corpus lives: `../shared/data/donateacry` next to the package root,
/// found from this file's path so the working directory does not matter.
enum DonateACry {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // <root>/Tests/CryLabDSPTests
        .deletingLastPathComponent()  // <root>/Tests
        .deletingLastPathComponent()  // <root>
    static let folder: URL = packageRoot.appendingPathComponent("../shared/data/donateacry").standardizedFileURL

    static var isAvailable: Bool { FileManager.default.fileExists(atPath: folder.appendingPathComponent("labeled").path) }
}

/// The largest absolute difference between two equally shaped arrays, and where it is.
struct Difference: CustomStringConvertible {
    var largest: Float = 0
    var index = 0
    var ours: Float = 0
    var reference: Float = 0
    var compared = 0

    /// Compares every element; `include(i)` can restrict which ones count.
    init(_ ours: [Float], _ reference: [Float], include: (Int) -> Bool = { _ in true }) {
        precondition(ours.count == reference.count, "sizes differ: \(ours.count) vs \(reference.count)")
        for i in ours.indices where include(i) {
            compared += 1
            let difference = abs(ours[i] - reference[i])
            if difference > largest || difference.isNaN {
                (largest, index, self.ours, self.reference) = (difference, i, ours[i], reference[i])
            }
        }
    }

    var description: String {
        "largest |diff| \(largest) at element \(index) (ours \(self.ours), librosa \(reference)) over \(compared) values"
    }
}
