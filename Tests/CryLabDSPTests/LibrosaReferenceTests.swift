// Every bin of our output against librosa 0.11's, with the tolerances of the front-end brief:
// mel power within 1e-5 of the spectrogram's maximum, dB within 0.01 dB, and — after
// resampling, where two soxr builds meet — dB within 0.1 dB on bins within 60 dB of the peak.
import CryLabAudio
import CryLabDSP
import Foundation
import Testing

private let fixtures = LibrosaFixtures.shared

@Suite("librosa reference: synthetic signals")
struct SyntheticReferenceTests {
    @Test("mel power and dB match librosa", arguments: LibrosaFixtures.shared.cases.map(\.name))
    func melSpectrogramMatches(caseName: String) throws {
        let reference = fixtures.testCase(caseName)
        let config = reference.frontEnd
        let samples = fixtures.samples(of: reference.signal)

        let power = try melSpectrogram(samples: samples, config: config)
        let expectedPower = fixtures.spectrogram(reference.melPower)
        #expect(power.rows == expectedPower.rows && power.frames == expectedPower.frames,
                "\(caseName): shape [\(power.rows), \(power.frames)], librosa [\(expectedPower.rows), \(expectedPower.frames)]")
        let powerDifference = Difference(power.values, expectedPower.values)
        let relative = powerDifference.largest / expectedPower.maximum
        print("\(caseName) mel power: relative to max \(relative); \(powerDifference)")
        #expect(relative <= 1e-5, "\(caseName) mel power: \(powerDifference), max \(expectedPower.maximum)")

        let decibels = try powerToDB(power, reference: config.dbReference, amin: config.amin, topDB: config.topDB)
        let dbDifference = Difference(decibels.values, fixtures.array(reference.melDB))
        print("\(caseName) mel dB: \(dbDifference)")
        #expect(dbDifference.largest <= 0.01, "\(caseName) mel dB: \(dbDifference)")

        // features() with toDB must be the same computation.
        var dbConfig = config
        dbConfig.toDB = true
        #expect(try features(samples: samples, config: dbConfig) == decibels)
    }

    @Test("STFT magnitude matches librosa", arguments: LibrosaFixtures.shared.cases.filter { $0.stftMagnitude != nil }.map(\.name))
    func stftMagnitudeMatches(caseName: String) throws {
        let reference = fixtures.testCase(caseName)
        let magnitude = try spectrogram(samples: fixtures.samples(of: reference.signal), nFFT: reference.nFFT,
                                        hopLength: reference.hopLength, winLength: reference.winLength, power: 1)
        let expected = fixtures.spectrogram(reference.stftMagnitude!)
        #expect(magnitude.rows == expected.rows && magnitude.frames == expected.frames)
        let difference = Difference(magnitude.values, expected.values)
        let relative = difference.largest / expected.maximum
        print("\(caseName) STFT magnitude: relative to max \(relative); \(difference)")
        #expect(relative <= 1e-5, "\(caseName) STFT magnitude: \(difference), max \(expected.maximum)")
    }

    @Test("mel filterbank weights match librosa.filters.mel")
    func filterbankMatches() throws {
        for reference in fixtures.filterbanks {
            let filterbank = try MelFilterbank(sampleRate: reference.sampleRate, nFFT: reference.nFFT, nMels: reference.nMels,
                                               fMin: reference.fMin, fMax: reference.fMax, scale: reference.htk ? .htk : .slaney,
                                               norm: reference.slaneyNorm ? .slaney : .none)
            let expected = fixtures.array(reference.weights)
            let difference = Difference(filterbank.weights, expected)
            let relative = difference.largest / (expected.max() ?? 1)
            print("filterbank htk=\(reference.htk) slaneyNorm=\(reference.slaneyNorm): relative \(relative); \(difference)")
            #expect(relative <= 1e-6, "filterbank htk=\(reference.htk): \(difference)")
        }
    }
}

@Suite("librosa reference: Donate-a-Cry recordings",
       .enabled(if: DonateACry.isAvailable,
                "Donate-a-Cry corpus not found at ../shared/data/donateacry (next to the package root); real-audio comparisons skipped"))
struct RecordingReferenceTests {
    @Test("native rate: mel power within 1e-5 of max, dB within 0.01 dB",
          arguments: LibrosaFixtures.shared.recordings.filter { $0.loadRate == nil }.map(\.label))
    func nativeRateMatches(label: String) throws {
        let reference = fixtures.recordings.first { $0.label == label }!
        let (power, decibels) = try analyse(reference)

        let expectedPower = fixtures.spectrogram(reference.melPower)
        let powerDifference = Difference(power.values, expectedPower.values)
        let relative = powerDifference.largest / expectedPower.maximum
        print("\(label) mel power: relative to max \(relative); \(powerDifference)")
        #expect(relative <= 1e-5, "\(label) mel power: \(powerDifference), max \(expectedPower.maximum)")

        let dbDifference = Difference(decibels.values, fixtures.array(reference.melDB))
        print("\(label) mel dB: \(dbDifference)")
        #expect(dbDifference.largest <= 0.01, "\(label) mel dB: \(dbDifference)")
    }

    @Test("resampled to 16 kHz (soxr HQ): dB within 0.1 dB where within 60 dB of the peak",
          arguments: LibrosaFixtures.shared.recordings.filter { $0.loadRate != nil }.map(\.label))
    func resampledMatches(label: String) throws {
        let reference = fixtures.recordings.first { $0.label == label }!
        let (_, decibels) = try analyse(reference)
        let expected = fixtures.array(reference.melDB)
        let peak = expected.max()!
        let loud = Difference(decibels.values, expected, include: { expected[$0] >= peak - 60 })
        let all = Difference(decibels.values, expected)
        print("\(label) mel dB within 60 dB of peak: \(loud); over all bins: \(all)")
        #expect(loud.largest <= 0.1, "\(label) mel dB (bins within 60 dB of the peak): \(loud)")
    }

    /// Loads the recording with CryLabAudio as librosa.load did, checks the samples agree in
    /// count, and returns our mel power and dB spectrograms.
    private func analyse(_ reference: LibrosaFixtures.Recording) throws -> (Spectrogram, Spectrogram) {
        let url = DonateACry.folder.appendingPathComponent(reference.path)
        let clip = try loadAudio(url, sampleRate: reference.loadRate)
        #expect(clip.sampleRate == reference.sampleRate)
        #expect(clip.samples.count == reference.sampleCount,
                "\(reference.path): loaded \(clip.samples.count) samples, librosa.load gave \(reference.sampleCount)")
        let sum = clip.samples.reduce(0.0) { $0 + Double($1) }
        print("\(reference.path): \(clip.samples.count) samples, sum \(sum) (librosa \(reference.sampleSum))")

        let config = FrontEnd(sampleRate: clip.sampleRate, nFFT: reference.nFFT, hopLength: reference.hopLength,
                              nMels: reference.nMels, dbReference: .max, topDB: reference.topDB)
        let power = try melSpectrogram(samples: clip.samples, config: config)
        let expected = fixtures.spectrogram(reference.melPower)
        try #require(power.rows == expected.rows && power.frames == expected.frames,
                     "shape [\(power.rows), \(power.frames)], librosa [\(expected.rows), \(expected.frames)]")
        let decibels = try powerToDB(power, reference: .max, topDB: reference.topDB)
        return (power, decibels)
    }
}
