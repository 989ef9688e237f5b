// The whole spectral front end in one value: decoded samples in, model input out.

/// Every parameter that turns decoded audio into the spectrogram a model sees.
///
/// `features(samples:config:)` applies, in order: the `duration` cut, the STFT
/// (`nFFT`, `hopLength`, `winLength`, periodic Hann, centred, zero padding), `|X|^power`,
/// the mel projection (`nMels`, `fMin`, `fMax`, `melScale`, `melNorm`), the frame fit
/// (`frames`, `fit`) and, last, the optional dB conversion (`dbReference`, `amin`, `topDB`).
/// Fitting before the dB step means padded frames are silence (power 0) and a `.max`
/// reference is the loudest value of what the model actually sees.
///
/// The defaults are librosa 0.11's (`librosa.feature.melspectrogram`, and
/// `librosa.power_to_db` when `toDB` is on). Decoding keys that are absent from JSON/YAML
/// take these defaults too, so a recipe only lists what it changes.
public struct FrontEnd: Codable, Sendable, Equatable {
    /// Rate of the samples, in Hz; the loader resamples to it (default 22050, librosa's).
    public var sampleRate: Int
    /// Seconds of audio used from the start of each clip; nil uses all of it (default nil).
    /// The loader normally stops reading there already; `features` cuts again so a longer
    /// clip gives the same result.
    public var duration: Double?
    /// FFT size in samples (default 2048).
    public var nFFT: Int
    /// Samples between frames; nil means `winLength / 4` (librosa's default).
    public var hopLength: Int?
    /// Hann window length in samples, `1...nFFT`, centred in the FFT frame; nil means `nFFT`.
    public var winLength: Int?
    /// Mel bands (default 128).
    public var nMels: Int
    /// Lowest filter edge in Hz (default 0).
    public var fMin: Double
    /// Highest filter edge in Hz, at most `sampleRate / 2`; nil means `sampleRate / 2`.
    public var fMax: Double?
    /// Exponent on the STFT magnitude: 2 for power (default), 1 for magnitude.
    public var power: Float
    /// Mel scale of the filter centres (default `.slaney`).
    public var melScale: MelScale
    /// Filter normalisation (default `.slaney`: equal area).
    public var melNorm: MelNorm
    /// Convert the mel spectrogram to decibels (default false: librosa's melspectrogram).
    public var toDB: Bool
    /// 0 dB reference when `toDB` (default `.value(1)`).
    public var dbReference: DecibelReference
    /// Power floor before the logarithm when `toDB` (default 1e-10).
    public var amin: Float
    /// Dynamic range kept below the maximum when `toDB`, in dB; nil keeps all (default 80).
    public var topDB: Float?
    /// Fixed output width in frames; nil keeps every frame of the clip (default nil).
    public var frames: Int?
    /// How a clip is brought to `frames` frames (default `.padTruncate`).
    public var fit: FrameFit

    public init(sampleRate: Int = 22050, duration: Double? = nil, nFFT: Int = 2048, hopLength: Int? = nil,
                winLength: Int? = nil, nMels: Int = 128, fMin: Double = 0, fMax: Double? = nil, power: Float = 2,
                melScale: MelScale = .slaney, melNorm: MelNorm = .slaney, toDB: Bool = false,
                dbReference: DecibelReference = .value(1), amin: Float = 1e-10, topDB: Float? = 80,
                frames: Int? = nil, fit: FrameFit = .padTruncate) {
        self.sampleRate = sampleRate
        self.duration = duration
        self.nFFT = nFFT
        self.hopLength = hopLength
        self.winLength = winLength
        self.nMels = nMels
        self.fMin = fMin
        self.fMax = fMax
        self.power = power
        self.melScale = melScale
        self.melNorm = melNorm
        self.toDB = toDB
        self.dbReference = dbReference
        self.amin = amin
        self.topDB = topDB
        self.frames = frames
        self.fit = fit
    }

    /// librosa 0.11's defaults: 22050 Hz, n_fft 2048, hop 512, 128 Slaney mels up to 11025 Hz,
    /// power mel spectrogram, every frame kept.
    public static let librosa = FrontEnd()

    /// The seed recipe's front end: 16 kHz, the first 5.0 s, n_fft 2048, hop 512, 128 mels,
    /// power mel spectrogram (no dB), padded or truncated at the end to 128 frames.
    public static let seed = FrontEnd(sampleRate: 16000, duration: 5.0, nFFT: 2048, hopLength: 512, nMels: 128,
                                      power: 2, toDB: false, frames: 128, fit: .padTruncate)

    /// Provisional — a sensible starting point pending measurement, not a measured choice.
    ///
    /// The Donate-a-Cry recordings are 8 kHz, so this analyses them at their native rate
    /// (no resampling, nothing invented above 4 kHz): n_fft 512 (64 ms), hop 128 (16 ms),
    /// 64 Slaney mels over 0–4000 Hz, log-mel in dB relative to the clip's maximum with an
    /// 80 dB range, 313 frames (5.0 s) taken by a random crop in training and a centre crop in
    /// evaluation. The final recommendation will replace it once accuracy and speed have been
    /// measured against the alternatives.
    public static let recommended = FrontEnd(sampleRate: 8000, nFFT: 512, hopLength: 128, nMels: 64, fMin: 0,
                                             fMax: 4000, power: 2, toDB: true, dbReference: .max, topDB: 80,
                                             frames: 313, fit: .randomCrop)

    /// `winLength ?? nFFT`.
    public var resolvedWinLength: Int { winLength ?? nFFT }
    /// `hopLength ?? resolvedWinLength / 4`.
    public var resolvedHopLength: Int { hopLength ?? resolvedWinLength / 4 }
    /// `fMax ?? sampleRate / 2`.
    public var resolvedFMax: Double { fMax ?? Double(sampleRate) / 2 }

    /// Output rows: `nMels`.
    public var rows: Int { nMels }

    /// Output frames for a clip of `sampleCount` samples (after the `duration` cut).
    public func frameCount(sampleCount: Int) -> Int {
        frames ?? stftFrameCount(sampleCount: usedSampleCount(sampleCount), nFFT: nFFT, hopLength: resolvedHopLength)
    }

    /// Throws a `DSPError` naming the first invalid parameter. Also builds (and caches) the
    /// FFT plan and filterbank, so the first clip does not pay for them.
    public func validate() throws {
        _ = try pipeline()
    }

    private func usedSampleCount(_ count: Int) -> Int {
        guard let duration else { return count }
        return min(count, Int(duration * Double(sampleRate)))
    }

    fileprivate func pipeline() throws -> (STFTAnalysis, MelFilterbank) {
        guard sampleRate > 0 else {
            throw DSPError.invalidParameter(name: "sampleRate", value: "\(sampleRate)", expected: "a positive rate in Hz, e.g. 16000")
        }
        if let duration, !(duration > 0 && duration.isFinite) {
            throw DSPError.invalidParameter(name: "duration", value: "\(duration)", expected: "a positive number of seconds, or nil for the whole clip")
        }
        if let frames, frames <= 0 {
            throw DSPError.invalidParameter(name: "frames", value: "\(frames)", expected: "a positive number of frames, or nil for every frame")
        }
        guard amin > 0 else {
            throw DSPError.invalidParameter(name: "amin", value: "\(amin)", expected: "a strictly positive power floor, e.g. 1e-10")
        }
        if let topDB, !(topDB >= 0) {
            throw DSPError.invalidParameter(name: "topDB", value: "\(topDB)", expected: "a non-negative range in dB (e.g. 80) or nil")
        }
        let analysis = try STFTAnalysis(nFFT: nFFT, hopLength: hopLength, winLength: winLength, power: power)
        let filterbank = try MelFilterbank.shared(sampleRate: sampleRate, nFFT: nFFT, nMels: nMels, fMin: fMin,
                                                  fMax: resolvedFMax, scale: melScale, norm: melNorm)
        return (analysis, filterbank)
    }

    private enum CodingKeys: String, CodingKey {
        case sampleRate, duration, nFFT, hopLength, winLength, nMels, fMin, fMax, power, melScale, melNorm
        case toDB, dbReference, amin, topDB, frames, fit
    }

    /// Absent keys take librosa's defaults (see `init`). `topDB: null` means no floor.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = FrontEnd()
        sampleRate = try c.decodeIfPresent(Int.self, forKey: .sampleRate) ?? d.sampleRate
        duration = try c.decodeIfPresent(Double.self, forKey: .duration)
        nFFT = try c.decodeIfPresent(Int.self, forKey: .nFFT) ?? d.nFFT
        hopLength = try c.decodeIfPresent(Int.self, forKey: .hopLength)
        winLength = try c.decodeIfPresent(Int.self, forKey: .winLength)
        nMels = try c.decodeIfPresent(Int.self, forKey: .nMels) ?? d.nMels
        fMin = try c.decodeIfPresent(Double.self, forKey: .fMin) ?? d.fMin
        fMax = try c.decodeIfPresent(Double.self, forKey: .fMax)
        power = try c.decodeIfPresent(Float.self, forKey: .power) ?? d.power
        melScale = try c.decodeIfPresent(MelScale.self, forKey: .melScale) ?? d.melScale
        melNorm = try c.decodeIfPresent(MelNorm.self, forKey: .melNorm) ?? d.melNorm
        toDB = try c.decodeIfPresent(Bool.self, forKey: .toDB) ?? d.toDB
        dbReference = try c.decodeIfPresent(DecibelReference.self, forKey: .dbReference) ?? d.dbReference
        amin = try c.decodeIfPresent(Float.self, forKey: .amin) ?? d.amin
        topDB = c.contains(.topDB) ? try c.decodeIfPresent(Float.self, forKey: .topDB) : d.topDB
        frames = try c.decodeIfPresent(Int.self, forKey: .frames)
        fit = try c.decodeIfPresent(FrameFit.self, forKey: .fit) ?? d.fit
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sampleRate, forKey: .sampleRate)
        try c.encodeIfPresent(duration, forKey: .duration)
        try c.encode(nFFT, forKey: .nFFT)
        try c.encodeIfPresent(hopLength, forKey: .hopLength)
        try c.encodeIfPresent(winLength, forKey: .winLength)
        try c.encode(nMels, forKey: .nMels)
        try c.encode(fMin, forKey: .fMin)
        try c.encodeIfPresent(fMax, forKey: .fMax)
        try c.encode(power, forKey: .power)
        try c.encode(melScale, forKey: .melScale)
        try c.encode(melNorm, forKey: .melNorm)
        try c.encode(toDB, forKey: .toDB)
        try c.encode(dbReference, forKey: .dbReference)
        try c.encode(amin, forKey: .amin)
        try c.encode(topDB, forKey: .topDB)  // null when nil: "no floor", distinct from absent
        try c.encodeIfPresent(frames, forKey: .frames)
        try c.encode(fit, forKey: .fit)
    }
}

/// The model input for one decoded clip, the evaluation way (a `.randomCrop` config takes
/// the centre crop). `samples` must be mono at `config.sampleRate`.
///
/// - Returns: `[config.nMels, config.frameCount(sampleCount: samples.count)]`, row-major.
public func features(samples: [Float], config: FrontEnd) throws -> Spectrogram {
    try features(samples: samples, config: config, randomStart: centreStart)
}

/// The model input for one decoded clip, the training way: a `.randomCrop` config draws its
/// crop from `generator` (other fit modes do not touch it).
public func features(samples: [Float], config: FrontEnd,
                     using generator: inout some RandomNumberGenerator) throws -> Spectrogram {
    try features(samples: samples, config: config, randomStart: { Int.random(in: 0...$0, using: &generator) })
}

/// librosa's `melspectrogram(y=samples, sr=, n_fft=, hop_length=, win_length=, power=,
/// n_mels=, fmin=, fmax=, htk=, norm=)` with `config`'s parameters: every frame, no dB, no
/// fit, no `duration` cut. Returns `[nMels, stftFrameCount(...)]`.
public func melSpectrogram(samples: [Float], config: FrontEnd) throws -> Spectrogram {
    let (analysis, filterbank) = try config.pipeline()
    guard !samples.isEmpty else { throw DSPError.emptySignal }
    let frames = stftFrameCount(sampleCount: samples.count, nFFT: analysis.nFFT, hopLength: analysis.hopLength)
    return project(samples: samples, analysis: analysis, filterbank: filterbank, kept: 0..<frames, width: frames)
}

private func features(samples: [Float], config: FrontEnd, randomStart: (Int) -> Int) throws -> Spectrogram {
    let (analysis, filterbank) = try config.pipeline()
    guard !samples.isEmpty else { throw DSPError.emptySignal }
    let used = config.duration.map { min(samples.count, Int($0 * Double(config.sampleRate))) } ?? samples.count
    let signal = used < samples.count ? Array(samples[..<used]) : samples
    let available = stftFrameCount(sampleCount: signal.count, nFFT: analysis.nFFT, hopLength: analysis.hopLength)
    let width = config.frames ?? available
    // Only the kept frames are analysed; frames past the end of the clip stay zero.
    let kept = frameWindow(available: available, frames: width, mode: config.fit, randomStart: randomStart)
    var output = project(samples: signal, analysis: analysis, filterbank: filterbank, kept: kept, width: width)
    if config.toDB {
        try powerToDBInPlace(&output, reference: config.dbReference, amin: config.amin, topDB: config.topDB)
    }
    return output
}

/// Mel columns of frames `kept`, written to columns `0 ..< kept.count` of a zeroed
/// `[nMels, width]` spectrogram.
private func project(samples: [Float], analysis: STFTAnalysis, filterbank: MelFilterbank,
                     kept: Range<Int>, width: Int) -> Spectrogram {
    var output = Spectrogram(rows: filterbank.nMels, frames: width)
    output.values.withUnsafeMutableBufferPointer { out in
        analysis.forEachFrame(samples: samples, frames: kept) { frame, column in
            filterbank.project(column: column, into: out, frame: frame - kept.lowerBound, frameCount: width)
        }
    }
    return output
}
