// Behaviour that librosa fixtures do not pin down: shapes, edge cases, frame fitting,
// configuration errors, statistics, and running from many threads at once.
import CryLabDSP
import Foundation
import Testing

/// A deterministic test tone with a little noise.
private func tone(count: Int, sampleRate: Int = 16000, seed: UInt64 = 1) -> [Float] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { n in
        Float(0.5 * sin(2 * Double.pi * 440 * Double(n) / Double(sampleRate))) + Float.random(in: -0.01...0.01, using: &generator)
    }
}

@Suite("STFT shapes and edges")
struct STFTShapeTests {
    @Test("frame count is 1 + length / hop with center=True", arguments: [1, 511, 512, 513, 2047, 2048, 80000])
    func frameCount(length: Int) throws {
        let result = try spectrogram(samples: tone(count: length), nFFT: 2048, hopLength: 512)
        #expect(result.frames == 1 + length / 512)
        #expect(result.rows == 1025)
        #expect(stftFrameCount(sampleCount: length, nFFT: 2048, hopLength: 512) == 1 + length / 512)
    }

    @Test("a clip shorter than nFFT gives zero-padded frames, not an error")
    func clipShorterThanWindow() throws {
        let samples = tone(count: 300)
        let mel = try melSpectrogram(samples: samples, config: .seed)
        #expect(mel.rows == 128 && mel.frames == 1)
        #expect(mel.maximum > 0)
        let seed = try features(samples: samples, config: .seed)
        #expect(seed.rows == 128 && seed.frames == 128)
        #expect((0..<128).allSatisfy { seed[row: $0, frame: 0] == mel[row: $0, frame: 0] })
        #expect(seed.values.enumerated().allSatisfy { $0.offset % 128 == 0 || $0.element == 0 },
                "frames after the first must be zero padding")
    }

    @Test("power 1 is the square root of power 2")
    func magnitudeAndPower() throws {
        let samples = tone(count: 4000)
        let magnitude = try spectrogram(samples: samples, nFFT: 512, hopLength: 128, power: 1)
        let power = try spectrogram(samples: samples, nFFT: 512, hopLength: 128, power: 2)
        let difference = Difference(magnitude.values.map { $0 * $0 }, power.values)
        #expect(difference.largest <= 1e-5 * power.maximum, "\(difference)")
    }

    @Test("an empty signal is an error that says so")
    func emptySignal() {
        #expect(throws: DSPError.emptySignal) { try features(samples: [], config: .seed) }
    }

    @Test("periodic Hann window, centred when shorter than nFFT")
    func window() {
        let hann = hannWindow(length: 4)
        #expect(hann == [0, 0.5, 1, 0.5])
        let padded = analysisWindow(nFFT: 8, winLength: 4)
        #expect(padded == [0, 0, 0, 0.5, 1, 0.5, 0, 0])
    }
}

@Suite("mel filterbank")
struct FilterbankTests {
    @Test("shape, triangles peaking at 1, and Slaney rows of unit area in Hz")
    func shapeAndRowSums() throws {
        let filterbank = try MelFilterbank.shared(sampleRate: 16000, nFFT: 2048, nMels: 128)
        #expect(filterbank.weights.count == 128 * 1025)
        #expect(filterbank.bins == 1025)
        // Unnormalised triangles peak at 1 and are never negative.
        let plain = try MelFilterbank(sampleRate: 16000, nFFT: 2048, nMels: 40, norm: .none)
        for band in 0..<40 {
            let row = plain.weights[(band * 1025)..<((band + 1) * 1025)]
            #expect(row.allSatisfy { $0 >= 0 })
            #expect(row.max()! > 0.5 && row.max()! <= 1, "band \(band) peaks at \(row.max()!)")
        }
        // Slaney norm: each row's area in Hz, Σ w * binWidth, is 1 (2 / width times a triangle of area width / 2).
        let binWidth: Float = 16000 / 2048
        for band in 10..<128 {  // the narrowest low bands are too coarsely sampled to integrate
            let area = filterbank.weights[(band * 1025)..<((band + 1) * 1025)].reduce(0, +) * binWidth
            #expect(abs(area - 1) < 0.05, "band \(band) area \(area)")
        }
    }

    @Test("filterbanks are cached by parameters")
    func cached() throws {
        let a = try MelFilterbank.shared(sampleRate: 8000, nFFT: 512, nMels: 64)
        let b = try MelFilterbank.shared(sampleRate: 8000, nFFT: 512, nMels: 64)
        let c = try MelFilterbank.shared(sampleRate: 8000, nFFT: 512, nMels: 64, scale: .htk)
        #expect(a === b)
        #expect(a !== c)
    }

    @Test("mel scale round trips and matches the known Slaney and HTK points")
    func scales() {
        #expect(abs(hzToMel(1000) - 15) < 1e-12)
        #expect(abs(hzToMel(1000, scale: .htk) - 999.9855) < 1e-3)
        for hz in [0.0, 300, 999, 1000, 4000, 11025] {
            for scale in MelScale.allCases {
                #expect(abs(melToHz(hzToMel(hz, scale: scale), scale: scale) - hz) < 1e-9 * max(1, hz))
            }
        }
    }
}

@Suite("fixed-size inputs")
struct FrameFitTests {
    /// A 2 x frames spectrogram whose values are the frame index (row 0) and its negative (row 1).
    private func ramp(frames: Int) -> Spectrogram {
        Spectrogram(rows: 2, frames: frames, values: (0..<frames).map(Float.init) + (0..<frames).map { -Float($0) })
    }

    @Test("pad/truncate keeps the start and pads the end")
    func padTruncate() throws {
        let long = try fitFrames(ramp(frames: 10), frames: 4, mode: .padTruncate)
        #expect(long.values == [0, 1, 2, 3, 0, -1, -2, -3])
        let short = try fitFrames(ramp(frames: 3), frames: 5, mode: .padTruncate, padding: -100)
        #expect(short.values == [0, 1, 2, -100, -100, 0, -1, -2, -100, -100])
    }

    @Test("centre crop takes the middle, rounding the start down")
    func centreCrop() throws {
        let cropped = try fitFrames(ramp(frames: 10), frames: 3, mode: .centerCrop)
        #expect(cropped.values == [3, 4, 5, -3, -4, -5])
        // Without a generator a random crop is the centre crop (evaluation).
        #expect(try fitFrames(ramp(frames: 10), frames: 3, mode: .randomCrop) == cropped)
    }

    @Test("random crop: seeded, reproducible, covers every start, rows stay aligned")
    func randomCrop() throws {
        var first = SeededGenerator(seed: 42), second = SeededGenerator(seed: 42)
        var starts = Set<Float>()
        for _ in 0..<200 {
            let a = try fitFrames(ramp(frames: 10), frames: 4, mode: .randomCrop, using: &first)
            let b = try fitFrames(ramp(frames: 10), frames: 4, mode: .randomCrop, using: &second)
            #expect(a == b)
            #expect(a.values[0..<4].map { -$0 } == Array(a.values[4..<8]))
            #expect(zip(a.values[0..<3], a.values[1..<4]).allSatisfy { $1 == $0 + 1 })
            starts.insert(a.values[0])
        }
        #expect(starts == Set((0...6).map(Float.init)))
    }

    @Test("features() analyses only the kept frames and equals fitting the full spectrogram")
    func featuresEqualsFitOfFull() throws {
        let samples = tone(count: 7 * 16000)
        var config = FrontEnd.seed
        config.duration = nil
        let full = try melSpectrogram(samples: samples, config: config)
        for mode in FrameFit.allCases {
            config.fit = mode
            var generatorA = SeededGenerator(seed: 7), generatorB = SeededGenerator(seed: 7)
            let direct = try features(samples: samples, config: config, using: &generatorA)
            let fitted = try fitFrames(full, frames: 128, mode: mode, using: &generatorB)
            #expect(direct == fitted, "\(mode)")
        }
    }

    @Test("seed preset: 5 s at 16 kHz, first 128 frames, duration cut applied")
    func seedPreset() throws {
        let samples = tone(count: 7 * 16000)
        let seed = try features(samples: samples, config: .seed)
        #expect(seed.rows == 128 && seed.frames == 128)
        let firstFive = try features(samples: Array(samples[..<80000]), config: .seed)
        #expect(seed == firstFive)
        let full = try melSpectrogram(samples: Array(samples[..<80000]), config: .seed)
        #expect(full.frames == 157)
        #expect(try fitFrames(full, frames: 128, mode: .padTruncate) == seed)
    }
}

@Suite("configuration")
struct ConfigurationTests {
    @Test("invalid parameters are rejected with the parameter's name", arguments: [
        ("fMax", FrontEnd(sampleRate: 8000, fMax: 5000)),
        ("hopLength", FrontEnd(hopLength: 0)),
        ("nFFT", FrontEnd(nFFT: 0)),
        ("winLength", FrontEnd(nFFT: 512, winLength: 1024)),
        ("nMels", FrontEnd(nMels: 0)),
        ("fMin", FrontEnd(fMin: -1)),
        ("fMax", FrontEnd(fMin: 3000, fMax: 2000)),
        ("power", FrontEnd(power: 0)),
        ("sampleRate", FrontEnd(sampleRate: 0)),
        ("frames", FrontEnd(frames: 0)),
        ("duration", FrontEnd(duration: -1)),
        ("amin", FrontEnd(amin: 0)),
        ("topDB", FrontEnd(topDB: -5)),
    ])
    func invalid(parameter: String, config: FrontEnd) {
        do {
            try config.validate()
            Issue.record("\(parameter): expected an error")
        } catch let error as DSPError {
            guard case let .invalidParameter(name, _, expected) = error else {
                Issue.record("\(parameter): unexpected \(error)")
                return
            }
            #expect(name == parameter)
            #expect(!expected.isEmpty)
            #expect(error.description.contains(parameter))
        } catch {
            Issue.record("\(parameter): unexpected \(error)")
        }
    }

    @Test("presets are valid and say what they are")
    func presets() throws {
        for preset in [FrontEnd.librosa, .seed, .recommended] { try preset.validate() }
        #expect(FrontEnd.librosa.resolvedHopLength == 512 && FrontEnd.librosa.resolvedFMax == 11025)
        #expect(FrontEnd.seed.sampleRate == 16000 && FrontEnd.seed.frames == 128 && !FrontEnd.seed.toDB)
        #expect(FrontEnd.seed.frameCount(sampleCount: 123_456) == 128)
        #expect(FrontEnd.recommended.frameCount(sampleCount: 40000) == 313)
    }

    @Test("JSON round trip; absent keys take librosa's defaults; dB reference as number or \"max\"")
    func codable() throws {
        for preset in [FrontEnd.librosa, .seed, .recommended, FrontEnd(topDB: nil)] {
            let data = try JSONEncoder().encode(preset)
            #expect(try JSONDecoder().decode(FrontEnd.self, from: data) == preset)
        }
        let partial = try JSONDecoder().decode(FrontEnd.self, from: Data(#"{"sampleRate": 8000, "dbReference": "max"}"#.utf8))
        #expect(partial == FrontEnd(sampleRate: 8000, dbReference: .max))
        let noFloor = try JSONDecoder().decode(FrontEnd.self, from: Data(#"{"topDB": null, "dbReference": 2.5}"#.utf8))
        #expect(noFloor.topDB == nil && noFloor.dbReference == .value(2.5))
    }
}

@Suite("dataset normalisation")
struct NormalizationTests {
    @Test("global and per-band mean/std, and their application")
    func stats() throws {
        let a = Spectrogram(rows: 2, frames: 2, values: [1, 3, 10, 10])
        let b = Spectrogram(rows: 2, frames: 2, values: [5, 7, 10, 10])
        let global = try NormalizationStats(computedOver: [a, b])
        #expect(global.mean == 7)
        #expect(abs(global.std - Float(11.5).squareRoot()) < 1e-6)  // squared deviations 36,16,9,9,4,0,9,9: var 92/8
        let perBand = try NormalizationStats(computedOver: [a, b], perBand: true)
        #expect(perBand.bandMeans == [4, 10])
        #expect(abs(perBand.bandStds![0] - Float(5).squareRoot()) < 1e-6 && perBand.bandStds![1] == 0)
        let normalized = try perBand.normalize(a)
        #expect(abs(normalized[row: 0, frame: 0] - (1 - 4) / Float(5).squareRoot()) < 1e-6)
        #expect(normalized[row: 1, frame: 0] == 0, "a constant band is only centred")
        let restored = try global.normalize(b).values.map { $0 * global.std + 7 }
        #expect(Difference(restored, b.values).largest < 1e-5)

        var left = NormalizationAccumulator(rows: 2), right = NormalizationAccumulator(rows: 2)
        try left.add(a)
        try right.add(b)
        try left.merge(right)
        #expect(left.stats(perBand: true) == perBand)
        #expect(throws: DSPError.self) { try perBand.normalize(Spectrogram(rows: 3, frames: 1)) }
    }
}

@Suite("concurrency")
struct ConcurrencyTests {
    @Test("many threads at once give exactly the single-threaded result")
    func parallelEqualsSerial() throws {
        let clips = (0..<16).map { tone(count: 80000, seed: UInt64($0)) }
        let configs = [FrontEnd.seed, .recommended, FrontEnd(sampleRate: 16000, nFFT: 1024, hopLength: 160, winLength: 400, nMels: 80)]
        let serial = try configs.flatMap { config in try clips.map { try features(samples: $0, config: config) } }
        let results = ParallelResults(count: serial.count)
        DispatchQueue.concurrentPerform(iterations: serial.count) { i in
            results.set(i, try? features(samples: clips[i % clips.count], config: configs[i / clips.count]))
        }
        #expect(results.values == serial.map { Optional($0) })
    }
}

private final class ParallelResults: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [Spectrogram?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: Spectrogram?) {
        lock.lock()
        defer { lock.unlock() }
        values[index] = value
    }
}
