// Engine benchmark: samples/s, GFLOP/s and peak RSS for the three reference workloads.
//
//     swift run -c release crylab-engine-bench <workload> [--batch 32] [--steps 5] [--threads 2] [--precision fp32|bf16|winograd|fast]
//
// workloads:
//   unet-train        story U-Net 128x128x1 (32-64-128-256 / 512), MSE + Adam training step
//   small-unet-train  U-Net 64x64x1, widths 8-16-32-64-128, MSE + Adam training step
//   classifier-infer  story encoder + story head (Flatten, Dense 1024, BN, Dropout, 512, 128, 4), inference
//   recipe-unet-train the recommended recipe's U-Net (Recipes/pretrain.yaml): 64x256x1, widths 16-32-64-128 / 256,
//                     BatchNorm after every convolution, top skip cut; MSE + Adam training step (no Keras twin)
//
// --precision bf16 runs the oneDNN convolutions in bfloat16 with fp32 accumulation (ConvolutionPrecision);
// --precision winograd runs 3x3 stride-1 passes through oneDNN's Winograd kernels where it has them;
// --precision fast runs each pass with whichever of direct fp32, bf16 and Winograd timed fastest when first seen;
// and then times the whole step that way and in each single precision, and runs the fastest (--per-pass-only: not);
// --fast-mode-choices FILE reads the fast mode's choices from FILE and records new ones there
// (FastModeChoices); "first_step_seconds" in the JSON shows what the timing costs;
// --implementations prints the oneDNN kernel chosen for each convolution shape after the warm-up;
// --nhwc-only keeps every activation NHWC (Model.passesBlockedActivations off), to compare;
// --breakdown times one more step per layer type, and the time inside oneDNN's convolution kernels
// and in the activation reorders around blocked (Winograd, blocked direct) passes;
// --memory also reports the peak RSS of the warm-up step (with the fast mode's timing, if any) and of
// the steps after it apart ("peak_rss_warm_up_gib", "peak_rss_steps_gib"; the kernel's peak is
// reset between them through /proc/self/clear_refs);
// --passes times every oneDNN pass of every convolution shape in fp32, bf16 and winograd, in turn
// (winograd's times include its activation reorders; "-" where oneDNN has no Winograd kernel).
// Runs with OMP_WAIT_POLICY=PASSIVE unless the variable is set (e.g. OMP_WAIT_POLICY=ACTIVE to compare).
// Run one workload per process: peak RSS (VmHWM) is per process. Scripts/keras/bench_side_by_side.py
// runs these and Scripts/keras/bench_keras.py one after the other and prints the ratios.
import CryLabNN
import CryLabOneDNN
import Foundation

func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }
    return 0
}

/// Multiply-add FLOPs (x2) of one forward pass, from the layer shapes.
func forwardFlops(_ model: Model, batch: Int) throws -> Double {
    var shapes: [[Int]] = [[batch] + model.inputShape]
    var total = 0.0
    for node in model.nodes {
        let inputs = node.inputs.map { shapes[$0] }
        let output = try node.layer.outputShape(inputShapes: inputs)
        switch node.layer {
        case let conv as Conv2D:
            total += 2 * Double(output.reduce(1, *)) * Double(conv.kernelSize * conv.kernelSize * conv.inputChannels)
        case let up as Conv2DTranspose:  // every input pixel: a [k*k*filters, inputChannels] product
            let inputPixels = inputs[0].reduce(1, *) / up.inputChannels
            total += 2 * Double(inputPixels) * Double(up.kernelSize * up.kernelSize * up.filters * up.inputChannels)
        case let dense as Dense:
            total += 2 * Double(output.reduce(1, *)) * Double(dense.inputFeatures)
        default:
            break
        }
        shapes.append(output)
    }
    return total
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

// Passive OpenMP waiting unless the caller chose a policy (see ComputeThreads for why).
ComputeThreads.relaunchWithPassiveOpenMPWaitIfNeeded()

let arguments = CommandLine.arguments
func option(_ name: String, _ fallback: Int) -> Int {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count, let v = Int(arguments[i + 1]) else { return fallback }
    return v
}
guard arguments.count >= 2 else {
    print("usage: crylab-engine-bench unet-train|small-unet-train|classifier-infer|recipe-unet-train [--batch 32] [--steps 5] [--threads 2] [--precision fp32|bf16|winograd|fast] [--nhwc-only] [--fast-without bf16,winograd,direct,direct-blocked] [--fast-mode-choices FILE] [--per-pass-only] [--memory] [--breakdown [--layers]] [--passes] [--implementations]")
    exit(2)
}
let workload = arguments[1]
let batch = option("--batch", 32)
let steps = option("--steps", 5)
let threads = option("--threads", 2)
var precision = ConvolutionPrecision.fp32
if let i = arguments.firstIndex(of: "--precision") {
    guard i + 1 < arguments.count, let chosen = ConvolutionPrecision(rawValue: arguments[i + 1]) else {
        print("--precision expects one of \(ConvolutionPrecision.allCases.map(\.rawValue)), got \(arguments.dropFirst(i + 1).first ?? "nothing")")
        exit(2)
    }
    precision = chosen
}
// For A/B runs of the fast mode: kinds of pass it may not choose.
var fastModeCandidates = FastModeCandidates.all
if let i = arguments.firstIndex(of: "--fast-without") {
    for name in arguments.dropFirst(i + 1).first?.split(separator: ",") ?? [] {
        guard let kind = FastModeCandidates(name: String(name)) else {
            print("--fast-without expects some of \(FastModeCandidates.all.names), got \(name)")
            exit(2)
        }
        fastModeCandidates.remove(kind)
    }
}
// The fast mode's choices from (and into) this file: the first step skips timing those it finds.
let fastModeChoices = arguments.firstIndex(of: "--fast-mode-choices").flatMap { arguments.dropFirst($0 + 1).first }
    .map { FastModeChoices(file: URL(fileURLWithPath: $0)) }
let context = ComputeContext(precision: precision, threads: threads, fastModeCandidates: fastModeCandidates,
                             fastModeChoices: fastModeChoices, choosesWholeSteps: !arguments.contains("--per-pass-only"))
/// The same settings in another precision (`--passes` compares them), each with a runtime of its own.
let runtimes = Dictionary(uniqueKeysWithValues: [ConvolutionPrecision.fp32, .bf16, .winograd].map {
    ($0, DNNLConvolution(precision: $0, threads: threads))
})

let model: Model
let training: Bool
switch workload {
case "unet-train":
    model = try Model.uNet(.story)
    training = true
case "small-unet-train":
    model = try Model.uNet(UNetConfiguration(inputShape: [64, 64, 1], widths: [8, 16, 32, 64, 128]))
    training = true
case "classifier-infer":
    model = try Model.classifier(.story)
    training = false
case "recipe-unet-train":
    model = try Model.uNet(UNetConfiguration(inputShape: [64, 256, 1], widths: [16, 32, 64, 128, 256],
                                             skipConnections: [false, true, true, true], batchNormalization: true))
    training = true
default:
    print("unknown workload \(workload)")
    exit(2)
}
// For A/B runs: keep every activation NHWC, as before blocked hand-offs between convolutions.
model.passesBlockedActivations = !arguments.contains("--nhwc-only")
model.context = context

var generator = SeededGenerator(seed: 1)
let input = Tensor(shape: [batch] + model.inputShape, values: (0..<(batch * model.inputShape.reduce(1, *))).map { _ in generator.nextUnitFloat() })
let optimizer = Adam()
let flopsPerStep = try forwardFlops(model, batch: batch) * (training ? 3 : 1)

@MainActor func step() {
    if training {
        model.trainingStep(optimizer: optimizer, clipNorm: nil) {
            model.accumulateGradients(input: input) { meanSquaredError(prediction: $0, target: input) }
        }
    } else {
        _ = model.predict(input)
    }
}

let firstStepStart = now()
step()  // warm-up: primitive creation (and the fast mode's timing, per pass and per whole step), first allocations
let firstStep = now() - firstStepStart
// The warm-up's peak, then the kernel's peak counter reset so that the steps' own peak shows.
let reportsMemoryPhases = arguments.contains("--memory")
let warmUpPeak = peakResidentBytes()
if reportsMemoryPhases { try "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8) }
/// Every Conv2D of the model with its geometry, in graph order.
func convolutions(_ model: Model, batch: Int) throws -> [(Conv2D, ConvolutionGeometry)] {
    var shapes: [[Int]] = [[batch] + model.inputShape]
    var found: [(Conv2D, ConvolutionGeometry)] = []
    for node in model.nodes {
        let inputShape = node.inputs.map { shapes[$0] }.first ?? []
        if let conv = node.layer as? Conv2D {
            found.append((conv, ConvolutionGeometry(batch: batch, inputHeight: inputShape[1], inputWidth: inputShape[2],
                                                    inputChannels: conv.inputChannels, outputChannels: conv.filters,
                                                    kernelHeight: conv.kernelSize, kernelWidth: conv.kernelSize,
                                                    stride: conv.stride, padding: conv.padding)))
        }
        shapes.append(try node.layer.outputShape(inputShapes: node.inputs.map { shapes[$0] }))
    }
    return found
}

if arguments.contains("--implementations") {
    for (conv, g) in try convolutions(model, batch: batch) {
        let kernels = context.backend.convolutionKernels(for: g)
        let names = kernels is DNNLConvolution ? context.oneDNN!.implementationNames(g).joined(separator: ", ") : "sgemm (fp32)"
        print("\(conv.name) \(g.inputShape) -> \(g.outputShape): \(names)")
    }
}
if arguments.contains("--passes") {
    // Each oneDNN pass of each distinct convolution shape, the precisions in turn (so load from
    // other processes hits all alike): median milliseconds over `steps` repetitions.
    var seen = Set<String>()
    print("shape                                   pass             fp32 ms   bf16 ms   wino ms   fp32/bf16  fp32/wino")
    for (_, g) in try convolutions(model, batch: batch) where seen.insert("\(g)").inserted {
        var values = SeededGenerator(seed: 3)
        // Inputs as after a ReLU (half zeros), small gradients of both signs, Glorot-sized weights.
        let x = (0..<g.inputShape.reduce(1, *)).map { _ in max(0, values.nextFloat(in: -1, 1)) }
        let dy = (0..<g.outputShape.reduce(1, *)).map { _ in values.nextFloat(in: -1e-3, 1e-3) }
        let k = (0..<(g.kernelHeight * g.kernelWidth * g.inputChannels * g.outputChannels)).map { _ in values.nextFloat(in: -0.05, 0.05) }
        var y = dy, dx = x, dk = k, db = [Float](repeating: 0, count: g.outputChannels)
        let passes: [(String, (DNNLConvolution) -> Void)] = [
            ("forward", { $0.forward(g, input: x, kernel: k, bias: db, fuseReLU: true, output: &y) }),
            ("backward-data", { $0.backwardData(g, outputGradient: dy, kernel: k, inputGradient: &dx) }),
            ("backward-weights", { $0.backwardWeights(g, input: x, outputGradient: dy, kernelGradient: &dk, biasGradient: &db) }),
        ]
        for (name, pass) in passes {
            var times: [ConvolutionPrecision: [Double]] = [:]
            for _ in 0...steps {  // the first round creates the primitives and is not counted
                for precision in [ConvolutionPrecision.fp32, .bf16, .winograd] {
                    let start = now()
                    pass(runtimes[precision]!)
                    times[precision, default: []].append(now() - start)
                }
            }
            func median(_ precision: ConvolutionPrecision) -> Double { times[precision]!.dropFirst().sorted()[steps / 2] * 1000 }
            let (fp32, bf16) = (median(.fp32), median(.bf16))
            let hasWinograd = runtimes[.winograd]!.implementationNames(g).contains { $0.contains("wino") }
            let winograd = hasWinograd ? String(format: "%8.1f", median(.winograd)) : "       -"
            let ratio = hasWinograd ? String(format: "%6.2f", fp32 / median(.winograd)) : "     -"
            let shape = "\(g.inputShape) -> \(g.outputChannels)"
            print(String(format: "%-40@ %-16@ %8.1f  %8.1f  %@  %6.2f     %@", shape as NSString, name as NSString, fp32, bf16,
                         winograd as NSString, fp32 / bf16, ratio as NSString))
        }
    }
    exit(0)
}
var times: [Double] = []
for _ in 0..<steps {
    let start = now()
    step()
    times.append(now() - start)
}
let median = times.sorted()[times.count / 2]
if arguments.contains("--breakdown") {
    // One more step with per-layer timers (the timers themselves cost next to nothing).
    model.timings = [:]
    model.timingsPerLayer = arguments.contains("--layers")
    let running = model.stepContext(training: training).oneDNN!
    running.timing = .init()
    let start = now()
    step()
    let total = now() - start
    let convolution = running.timing!
    running.timing = nil
    let layerTotal = model.timings!.values.reduce(0, +)
    for (key, seconds) in model.timings!.sorted(by: { $0.value > $1.value }) {
        print(String(format: "%-32@ %8.1f ms", key as NSString, seconds * 1000))
    }
    print(String(format: "%-32@ %8.1f ms", "loss + optimiser + rest" as NSString, (total - layerTotal) * 1000))
    // Inside the layers above: time in oneDNN's convolution primitives, and in the reorders around blocked passes.
    print(String(format: "%-32@ %8.1f ms in %d calls", "oneDNN convolution kernels" as NSString,
                 convolution.kernelSeconds * 1000, convolution.kernelCalls))
    print(String(format: "%-32@ %8.1f ms in %d calls", "blocked-layout reorders" as NSString,
                 convolution.reorderSeconds * 1000, convolution.reorderCalls))
    print(String(format: "%-32@ %8.1f ms", "whole step" as NSString, total * 1000))
}
let result: [String: Any] = [
    "framework": "crylab", "workload": workload,
    "omp_wait_policy": ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] ?? "default", "batch": batch, "threads": context.threads,
    "precision": context.precision.rawValue,
    "fast_whole_step": model.wholeStepPrecision(training: training)?.rawValue ?? "none",
    "steps": steps, "seconds_per_step_median": median, "first_step_seconds": firstStep,
    "samples_per_second": Double(batch) / median,
    "gflops_per_second": flopsPerStep / median / 1e9,
    "gflop_per_step": flopsPerStep / 1e9,
    "peak_rss_gib": Double(max(warmUpPeak, peakResidentBytes())) / 1_073_741_824,
].merging(reportsMemoryPhases ? ["peak_rss_warm_up_gib": Double(warmUpPeak) / 1_073_741_824,
                                 "peak_rss_steps_gib": Double(peakResidentBytes()) / 1_073_741_824] : [:]) { $1 }
let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
print(String(decoding: json, as: UTF8.self))
