// Where the time of `crylab features` goes, stage by stage, on one thread:
//   swift run -c release frontend-bench [FOLDER]   (default: ../shared/data/donateacry/labeled)
// Prints milliseconds per file for decoding, resampling and the spectral front end (seed preset).
import CryLabAudio
import CryLabDSP
import CryLabFeatures
import Foundation

let folder = CommandLine.arguments.dropFirst().first ?? "../shared/data/donateacry/labeled"
let sources = try discoverAudio([URL(fileURLWithPath: folder)])
guard !sources.isEmpty else { fatalError("no audio under \(folder)") }
let frontEnd = FrontEnd.seed

func time(_ label: String, rounds: Int = 3, _ body: () throws -> Void) rethrows {
    var best = Double.infinity
    for _ in 0..<rounds {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
    }
    print(String(format: "%-28@ %7.3f ms/file", label as NSString, best / Double(sources.count)))
}

var native: [AudioClip] = []
try time("decode (native rate)") {
    native = try sources.map { try loadAudio($0.url, sampleRate: nil, duration: frontEnd.duration) }
}
var resampled: [[Float]] = []
try time("resample to 16 kHz (soxr HQ)") {
    resampled = try native.map { try Resampler.resample($0.samples, from: $0.sampleRate, to: frontEnd.sampleRate) }
}
var sink: Float = 0
try time("seed front end (STFT + mel)") {
    for samples in resampled { sink += try features(samples: samples, config: frontEnd).values[0] }
}
print("(\(sources.count) files, checksum \(sink))")
try time("discover files", rounds: 1) { _ = try discoverAudio([URL(fileURLWithPath: folder)]) }
var store: FeatureStore?
try time("extractFeatures (1 thread)") { store = try extractFeatures(from: sources, frontEnd: frontEnd, threads: 1, quiet: true) }
try time("extractFeatures (2 threads)") { store = try extractFeatures(from: sources, frontEnd: frontEnd, threads: 2, quiet: true) }
let output = FileManager.default.temporaryDirectory.appendingPathComponent("frontend-bench.h5").path
try time("write the store") { try store!.write(to: output) }
try? FileManager.default.removeItem(atPath: output)
