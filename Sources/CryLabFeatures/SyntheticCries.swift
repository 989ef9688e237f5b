import CryLabAudio
import CryLabCore
import Foundation

/// Generates cry-like audio so the whole pipeline can run without real recordings.
///
/// Each clip is a sequence of voiced bursts (a fundamental with decaying harmonics, vibrato and
/// jitter) separated by pauses, over background noise. The four classes differ in what parents
/// and the literature describe: pitch, contour, burst rhythm and harshness. Files vary in sample
/// rate and channel count like uploads from different phones, and clips of one synthetic family
/// share a name prefix, as Donate-a-Cry's app-instance ids do.
public struct SyntheticCries: Sendable {
    public struct Voice: Sendable {
        /// Mean fundamental in Hz, and the contour's change over a burst (relative, -0.3...0.3).
        var pitch: Double
        var contour: Double
        /// Burst and pause lengths in seconds.
        var burst: Double
        var pause: Double
        /// Share of noise mixed into the voiced part (0 clean ... 1 harsh).
        var harshness: Double
    }

    public static let classes: [(name: String, voice: Voice)] = [
        ("belly_pain", Voice(pitch: 620, contour: 0.25, burst: 1.1, pause: 0.25, harshness: 0.45)),
        ("discomfort", Voice(pitch: 470, contour: -0.2, burst: 0.7, pause: 0.45, harshness: 0.25)),
        ("hungry", Voice(pitch: 420, contour: 0.1, burst: 0.45, pause: 0.3, harshness: 0.1)),
        ("tired", Voice(pitch: 340, contour: -0.3, burst: 0.35, pause: 0.8, harshness: 0.05)),
    ]

    static let sampleRates = [8000, 16000, 22050, 44100]

    public var seed: UInt64
    public init(seed: UInt64 = 7) { self.seed = seed }

    /// clipSeconds-long samples of `voice` at `sampleRate`, one channel.
    public func clip(voice: Voice, sampleRate: Int, seconds: Double, using generator: inout some RandomNumberGenerator) -> [Float] {
        let count = Int(seconds * Double(sampleRate))
        var samples = [Float](repeating: 0, count: count)
        let rate = Double(sampleRate)
        let familyPitch = voice.pitch * Double.random(in: 0.85...1.15, using: &generator)
        var time = Double.random(in: 0...0.3, using: &generator)
        while time < seconds {
            let burst = voice.burst * Double.random(in: 0.7...1.3, using: &generator)
            let start = Int(time * rate)
            let length = min(count - start, Int(burst * rate))
            if length <= 0 { break }
            var phase = 0.0
            let vibrato = Double.random(in: 4...8, using: &generator)
            for i in 0..<length {
                let progress = Double(i) / Double(length)
                let f0 = familyPitch * (1 + voice.contour * (progress - 0.5)) * (1 + 0.02 * sin(2 * .pi * vibrato * Double(i) / rate))
                    * (1 + 0.01 * Double.random(in: -1...1, using: &generator))
                phase += 2 * .pi * f0 / rate
                var value = 0.0
                var harmonic = 1
                while Double(harmonic) * f0 < min(rate / 2, 4000) - 50 {
                    value += sin(Double(harmonic) * phase) / Double(harmonic * harmonic).squareRoot()
                    harmonic += 1
                }
                let envelope = sin(.pi * progress).squareRoot()
                let noise = Double.random(in: -1...1, using: &generator) * voice.harshness
                samples[start + i] += Float(0.25 * envelope * (value * (1 - voice.harshness) + noise))
            }
            time += burst + voice.pause * Double.random(in: 0.6...1.4, using: &generator)
        }
        for i in 0..<count { samples[i] += Float(0.004 * Double.random(in: -1...1, using: &generator)) }
        return samples
    }

    /// Writes `families` families per class into `folder/<class>/` (labeled) or `folder/` (unlabeled),
    /// `clipsPerFamily` clips each. Returns the written files.
    @discardableResult
    public func write(to folder: URL, labeled: Bool, families: Int, clipsPerFamily: Int, seconds: Double = 6) throws -> [URL] {
        var generator = SeededGenerator(seed: seed ^ (labeled ? 0xC1A55 : 0x0F00D))
        var written: [URL] = []
        for (classIndex, entry) in Self.classes.enumerated() {
            let classFolder = labeled ? folder.appendingPathComponent(entry.name) : folder
            try FileManager.default.createDirectory(at: classFolder, withIntermediateDirectories: true)
            for family in 0..<families {
                let familyID = String(format: "%08x-0000-4000-8000-%012x", classIndex * 1000 + family, Int(seed) & 0xFFFF_FFFF)
                let rate = Self.sampleRates[(family + classIndex) % Self.sampleRates.count]
                let channels = family % 3 == 2 ? 2 : 1
                for take in 0..<clipsPerFamily {
                    let mono = clip(voice: entry.voice, sampleRate: rate, seconds: seconds * Double.random(in: 0.8...1.2, using: &generator),
                                    using: &generator)
                    var interleaved = mono
                    if channels == 2 {
                        interleaved = mono.flatMap { [$0, $0 * 0.8] }
                    }
                    let url = classFolder.appendingPathComponent("\(familyID)-\(1_430_000_000 + take)-1.0-f-04-\(entry.name.prefix(2)).wav")
                    try AudioWriter.write(interleaved, channels: channels, sampleRate: rate, to: url, format: .pcm16)
                    written.append(url)
                }
            }
        }
        return written
    }
}
