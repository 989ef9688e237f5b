import ArgumentParser
import CryLabDSP
import CryLabNN
import CryLabOneDNN
import Foundation

/// Front-end choices shared by every subcommand that turns audio into spectrograms.
struct FrontEndOptions: ParsableArguments {
    @Option(help: "Named front end: seed (the story's: 16 kHz, 5 s, n_fft 2048, hop 512, 128 mels, power, 128 frames), recommended, or librosa (librosa's defaults).")
    var preset: Preset = .recommended

    @Option(name: .customLong("sample-rate"), help: "Resample every file to this rate, in Hz.")
    var sampleRate: Int?
    @Option(help: "Seconds of audio used from the start of each file.")
    var duration: Double?
    @Option(name: .customLong("n-fft"), help: "FFT size in samples.")
    var nFFT: Int?
    @Option(name: .customLong("hop-length"), help: "Samples between frames.")
    var hopLength: Int?
    @Option(name: .customLong("win-length"), help: "Hann window length in samples (at most n-fft).")
    var winLength: Int?
    @Option(name: .customLong("n-mels"), help: "Number of mel bands.")
    var nMels: Int?
    @Option(help: "Lowest mel filter edge, in Hz.")
    var fmin: Double?
    @Option(help: "Highest mel filter edge, in Hz (at most sample-rate / 2).")
    var fmax: Double?
    @Option(help: "Exponent on the STFT magnitude: 2 for power, 1 for magnitude.")
    var power: Float?
    @Flag(help: "Use the HTK mel scale instead of Slaney's.")
    var htk = false
    @Option(name: .customLong("mel-norm"), help: "Mel filter normalisation: slaney (equal area) or none.")
    var melNorm: MelNorm?
    @Option(name: .customLong("db"), help: "Convert to decibels: true or false.")
    var toDB: Bool?
    @Option(name: .customLong("top-db"), help: "Dynamic range kept below the maximum, in dB.")
    var topDB: Float?
    @Option(help: "Fixed width of every spectrogram, in frames.")
    var frames: Int?
    @Option(help: "How clips are brought to `frames`: padTruncate, randomCrop or centerCrop.")
    var fit: FrameFit?

    enum Preset: String, ExpressibleByArgument, CaseIterable {
        case seed, recommended, librosa
    }

    /// The preset with every given override applied, validated.
    func resolved() throws -> FrontEnd {
        var frontEnd: FrontEnd
        switch preset {
        case .seed: frontEnd = .seed
        case .recommended: frontEnd = .recommended
        case .librosa: frontEnd = .librosa
        }
        if let sampleRate { frontEnd.sampleRate = sampleRate }
        if let duration { frontEnd.duration = duration }
        if let nFFT { frontEnd.nFFT = nFFT }
        if let hopLength { frontEnd.hopLength = hopLength }
        if let winLength { frontEnd.winLength = winLength }
        if let nMels { frontEnd.nMels = nMels }
        if let fmin { frontEnd.fMin = fmin }
        if let fmax { frontEnd.fMax = fmax }
        if let power { frontEnd.power = power }
        if htk { frontEnd.melScale = .htk }
        if let melNorm { frontEnd.melNorm = melNorm }
        if let toDB { frontEnd.toDB = toDB }
        if let topDB { frontEnd.topDB = topDB }
        if let frames { frontEnd.frames = frames }
        if let fit { frontEnd.fit = fit }
        do { try frontEnd.validate() } catch {
            throw ValidationError("\(error)")
        }
        return frontEnd
    }
}

extension MelNorm: ExpressibleByArgument {}
extension FrameFit: ExpressibleByArgument {}

extension ConvolutionPrecision: ExpressibleByArgument {}

/// The convolution arithmetic of the commands that train (pretrain, finetune).
struct ConvolutionOptions: ParsableArguments {
    @Option(help: """
        Convolution arithmetic: fp32 (default); bf16 (bfloat16 inputs and weights, fp32 accumulation, \
        results, master weights and optimiser); winograd (fp32 with oneDNN's Winograd kernels for 3x3 \
        stride-1 convolutions, on AVX-512 CPUs); or fast (each convolution pass in whichever of direct fp32, \
        bf16 and Winograd timed fastest on this machine; the choices are kept for later runs, see --retime-fast-mode).
        """)
    var precision: ConvolutionPrecision = .fp32

    @Flag(name: .customLong("retime-fast-mode"), help: """
        With --precision fast: time every kernel choice again instead of reusing those kept from earlier \
        runs on this machine (in $XDG_CACHE_HOME or ~/.cache, crylab/fast-mode-choices.json), and keep the new ones.
        """)
    var retimeFastMode = false

    func validate() throws {
        if retimeFastMode && precision != .fast {
            throw ValidationError("--retime-fast-mode times the fast mode's kernel choices: add --precision fast, or leave it out")
        }
    }

    /// The compute context of a run with `threads`; in `fast`, with the choices kept on this machine,
    /// and whole-step choices unless `choosesWholeSteps` is false (data-parallel ranks).
    func context(threads: Int, quiet: Bool, choosesWholeSteps: Bool = true) -> ComputeContext {
        guard precision == .fast else { return ComputeContext(precision: precision, threads: threads) }
        let choices = FastModeChoices(file: FastModeChoices.defaultFile)
        if retimeFastMode { choices.forget() }
        let context = ComputeContext(precision: precision, threads: threads, fastModeChoices: choices,
                                     choosesWholeSteps: choosesWholeSteps)
        guard !quiet else { return context }
        let message = choices.count > 0
            ? "fast mode: reusing \(choices.count) kernel choices timed earlier on this machine (\(choices.file.path)); --retime-fast-mode times them again\n"
            : "fast mode: the first step times the candidate kernels of each convolution\(choosesWholeSteps ? ", then the whole step in each precision" : ""); the choices are kept in \(choices.file.path)\n"
        FileHandle.standardError.write(Data(message.utf8))
        return context
    }
}
