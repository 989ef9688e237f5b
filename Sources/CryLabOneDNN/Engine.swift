// CryLabOneDNN: the only module that talks to oneDNN (`CDNNL`). It implements CryLabTensor's
// kernel protocols (`ConvolutionKernels`, `MatrixKernels`, `ComputeBackend`) on oneDNN:
//   Engine.swift                 the engine, the stream, running primitives, OpenMP's thread count
//   PrimitiveCache.swift         ready passes per (shape, pass, threads, precision), and how one is chosen
//   ConvolutionPrimitives.swift  memory descriptors and the making of convolution primitives
//   ConvolutionPasses.swift      forward, backward-data and backward-weights on caller's memory
//   Reorders.swift               NHWC <-> nChw16c, Keras <-> oneDNN weights, fp32 -> bf16 rounding
//   MatrixMultiply.swift         sgemm and the matmul primitive (fp32, bf16)
//   KernelSearch.swift           the fast mode's timing of candidate kernels
//   FastModeChoices.swift        the fast mode's choices kept in a file
//   OneDNNBackend.swift          the backend layers are given
import CDNNL
import CryLabTensor
import Foundation
import Synchronization

/// Convolutions through oneDNN's direct kernels (AVX-512 / AVX2 JIT, picked by oneDNN), or its
/// Winograd ones.
///
/// Activations stay in Keras's NHWC in memory and are handed to direct kernels as they are; only the
/// weights may be reordered into the blocked format the chosen kernel wants, and only when that
/// format differs from Keras's [kernelHeight, kernelWidth, inputChannels, outputChannels].
/// Blocked passes take oneDNN's own activation layouts (nChw16c): Winograd kernels
/// (`ConvolutionPrecision.winograd`, and `.fast` where they time fastest) always, and in `.fast`
/// direct kernels made in the layouts oneDNN prefers (`FastModeCandidates.directBlocked`) where
/// those time fastest. A call reorders what such a pass reads from NHWC into two reused buffers
/// and what it writes back (`BlockedActivations`), except for operands handed over already
/// blocked (`ActivationLayout.blocked16`, see `forward(inputLayout:allowingBlockedOutput:)`),
/// which it reads and writes where they lie. NHWC passes get NHWC copies of blocked operands.
/// Primitives are created once per (geometry, pass, thread count, precision) and cached. All
/// primitives share one scratchpad owned here, so memory does not grow with the number of layers.
///
/// In `ConvolutionPrecision.bf16` the operands oneDNN reads (input, weights, output gradient) are
/// rounded to bfloat16 copies first, still NHWC, and the kernel writes fp32 (output, input gradient,
/// weight and bias gradients). If oneDNN has no bf16 kernel for a shape, or only its slow reference
/// one, that shape runs in fp32. `backward` rounds the output gradient once for both backward
/// passes, and `forward(keepingRoundedInput:)` keeps the input's copy (`BFloat16Copy`, half the
/// input's bytes, held by the layer until backward) so backward-weights need not round it again.
/// Calls are serialised by a lock: oneDNN already uses every thread inside each call.
///
/// One runtime serves one `ComputeContext`'s settings (precision, threads, fast-mode candidates
/// and choices), with an engine, a stream, caches and buffers of its own: runtimes of two contexts
/// share nothing but oneDNN's own process state (its kernels, OpenMP's per-thread team size).
public final class DNNLConvolution: ConvolutionKernels, MatrixKernels, @unchecked Sendable {
    /// The settings every call runs with (a `ComputeContext`'s).
    public let precision: ConvolutionPrecision
    public let threads: Int
    public let fastModeCandidates: FastModeCandidates
    /// Where `.fast` looks up and records its timed choices; nil times each once per runtime.
    public let fastModeChoices: FastModeChoices?

    /// Serialises this runtime's calls into oneDNN. It is one lock for every runtime in the
    /// process: with a lock per runtime, two contexts' concurrent calls corrupted results in about
    /// one run in eight of the NN test suites (parallel tests, each with contexts of its own), so
    /// oneDNN 2.6 executions from several threads at once are not trusted here.
    let lock = DNNLConvolution.processLock
    private static let processLock = NSLock()
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t
    var cache: [Key: Prepared] = [:]
    var timingStore: Timing?
    var scratchpad = GrowingBuffer()
    var weightsBuffer = GrowingBuffer()
    var weightsGradientBuffer = GrowingBuffer()
    /// bf16 copies of the input (forward, backward-weights) and of the output gradient (backward passes).
    var inputBF16Buffer = GrowingBuffer()
    var outputGradientBF16Buffer = GrowingBuffer()
    /// bf16 copies of matrix-product operands (see DNNLMatrixMultiply.swift).
    var leftBF16Buffer = GrowingBuffer()
    var rightBF16Buffer = GrowingBuffer()
    /// Blocked activations for Winograd passes: src or diff_src, and dst or diff_dst.
    var blockedSourceBuffer = GrowingBuffer()
    var blockedDestinationBuffer = GrowingBuffer()
    /// The fp32 gradient through ReLU, when `backward(reluOutput:)` cannot fuse it into the rounding.
    var reluGradientBuffer = GrowingBuffer()
    /// NHWC copies of nChw16c operands (`ActivationLayout.blocked16`) for passes that take NHWC:
    /// the input (or, in backward-data, the input gradient before its reorder to nChw16c: the
    /// backward-weights pass that may have read the input's copy is done by then), and the output gradient.
    var nhwcInputBuffer = GrowingBuffer()
    var nhwcOutputGradientBuffer = GrowingBuffer()
    /// NHWC <-> nChw16c reorders, per [batch, channels, height, width, direction].
    var layoutReorders: [[Int]: dnnl_primitive_t] = [:]
    /// bf16 matrix-product primitives, nil where oneDNN has only a reference kernel.
    var matmuls: [MatmulKey: MatmulPrimitive?] = [:]
    /// Inference products on kept bf16 weights (`bfloat16Weights`): the weights layout oneDNN picks
    /// per [m, n, k, threads] (nil: none but reference loops), and the primitives per weights layout.
    var preferredWeightsLayouts: [[Int]: dnnl_memory_desc_t?] = [:]
    var keptWeightsMatmuls: [[Int]: [(layout: dnnl_memory_desc_t, primitive: MatmulPrimitive?)]] = [:]
    /// fp32 -> bf16 reorders of flat arrays, per (element count, thread count).
    var conversions: [[Int]: dnnl_primitive_t] = [:]
    /// `.fast`'s decisions above single passes (`decision(_:among:timing:)`: transposed-convolution
    /// products, whole steps), by key: the candidate's name. A lock of its own, since deciding runs
    /// products and steps, which take `lock`.
    let decisions = Mutex<[String: String]>([:])

    /// A runtime of its own (engine, stream, caches, buffers) for these settings.
    public init(precision: ConvolutionPrecision, threads: Int, fastModeCandidates: FastModeCandidates = .all,
                fastModeChoices: FastModeChoices? = nil) {
        precondition(threads >= 1, "thread count must be at least 1, got \(threads)")
        self.precision = precision
        self.threads = threads
        self.fastModeCandidates = fastModeCandidates
        self.fastModeChoices = fastModeChoices
        _ = MemoryPolicy.applied
        var engine: dnnl_engine_t?
        Self.check(dnnl_engine_create(&engine, dnnl_cpu, 0), "creating the CPU engine")
        var stream: dnnl_stream_t?
        Self.check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue), "creating a stream")
        self.engine = engine!
        self.stream = stream!
    }

    /// The buffers go with the runtime. (Its primitives, engine and stream are left to the
    /// process's end: they are small, and a primitive may still be referenced by its descriptor.)
    deinit { releaseAll() }

    /// Frees the buffers reused between calls; they are allocated again when next needed.
    public func releaseBuffers() { lock.withLock { releaseAll() } }

    /// Maps the buffers `releaseBuffers` freed again at their sizes then, their pages touched.
    public func restoreBuffers() { lock.withLock { for buffer in Self.reusedBuffers { self[keyPath: buffer].restore() } } }

    private static let reusedBuffers = [
        \DNNLConvolution.scratchpad, \.weightsBuffer, \.weightsGradientBuffer, \.inputBF16Buffer, \.outputGradientBF16Buffer,
        \.leftBF16Buffer, \.rightBF16Buffer, \.blockedSourceBuffer, \.blockedDestinationBuffer, \.reluGradientBuffer,
        \.nhwcInputBuffer, \.nhwcOutputGradientBuffer,
    ]

    private func releaseAll() {
        for buffer in Self.reusedBuffers { self[keyPath: buffer].release() }
    }

    static func check(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
        if status != dnnl_success {
            fatalError("oneDNN failed while \(what()): status \(status.rawValue)")
        }
    }
}

extension DNNLConvolution {
    /// Where convolution time goes, summed over calls while `timing` is non-nil (the benchmark's
    /// `--breakdown` sets it to `Timing()` and reads it back after one step).
    public struct Timing: Sendable {
        /// In oneDNN's convolution primitives (every pass, every precision).
        public var kernelSeconds = 0.0
        public var kernelCalls = 0
        /// In the reorders of activations between NHWC and a blocked pass's layout.
        public var reorderSeconds = 0.0
        public var reorderCalls = 0
        public init() {}
    }

    public var timing: Timing? {
        get { lock.withLock { timingStore } }
        set { lock.withLock { timingStore = newValue } }
    }

    func run(_ reorder: dnnl_primitive_t,
                     from: (dnnl_memory_desc_t, UnsafeMutableRawPointer),
                     to: (dnnl_memory_desc_t, UnsafeMutableRawPointer)) {
        let arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: from.0, pointer: from.1),
                         argument(Int32(DNNL_ARG_DST_0), descriptor: to.0, pointer: to.1)]
        defer { for a in arguments { dnnl_memory_destroy(a.memory) } }
        Self.check(dnnl_primitive_execute(reorder, stream, Int32(arguments.count), arguments), "reordering")
        Self.check(dnnl_stream_wait(stream), "waiting for a reorder")
    }

    /// Runs body, adding its time and one call to `timing` if it is set.
    func timed(_ seconds: WritableKeyPath<Timing, Double>, _ calls: WritableKeyPath<Timing, Int>, _ body: () -> Void) {
        guard timingStore != nil else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        timingStore![keyPath: seconds] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        timingStore![keyPath: calls] += 1
    }

    func execute(_ p: Prepared, _ arguments: [dnnl_exec_arg_t]) {
        OpenMP.apply(threads: threads)
        var all = arguments
        if p.scratchpadBytes > 0 {
            var descriptor = dnnl_primitive_desc_query_md(p.primitiveDescriptor, dnnl_query_scratchpad_md, 0)!.pointee
            var memory: dnnl_memory_t?
            Self.check(dnnl_memory_create(&memory, &descriptor, engine, scratchpad.reserve(bytes: p.scratchpadBytes)), "creating scratchpad memory")
            all.append(dnnl_exec_arg_t(arg: 80, memory: memory))
        }
        defer { for a in all { dnnl_memory_destroy(a.memory) } }
        timed(\.kernelSeconds, \.kernelCalls) {
            Self.check(dnnl_primitive_execute(p.primitive, stream, Int32(all.count), all), "executing a convolution")
            Self.check(dnnl_stream_wait(stream), "waiting for a convolution")
        }
    }

    func argument(_ index: Int32, descriptor: dnnl_memory_desc_t, pointer: UnsafeMutableRawPointer) -> dnnl_exec_arg_t {
        var descriptor = descriptor
        var memory: dnnl_memory_t?
        Self.check(dnnl_memory_create(&memory, &descriptor, engine, pointer), "wrapping a buffer as oneDNN memory")
        return dnnl_exec_arg_t(arg: index, memory: memory)
    }
}

/// A page-aligned buffer that only grows until released; reused across calls.
///
/// Mapped from the kernel, not taken from malloc's heap: `MemoryPolicy` keeps that heap from
/// shrinking, so a buffer of tens of MB freed there (when it grows, or when a runtime's buffers
/// are released between whole-step trials or plans) leaves a hole that activations only partly
/// refill, and the heap grows past it. Unmapped, its pages go back at once. Buffers change size a
/// few times per run, so mapping costs no page faults in a steady step. Faulting pages in is not
/// cheap (about 1.3 ms per MiB on the AMD EPYC host), so a whole-step trial, which releases each
/// candidate's buffers after each run, maps them back with `restore` before the next one is timed.
struct GrowingBuffer {
    private var pointer: UnsafeMutableRawPointer?
    private var capacity = 0
    /// The capacity given back by the last `release`, for `restore`.
    private var releasedCapacity = 0

    /// Frees the memory; the next `reserve` allocates again.
    mutating func release() {
        if let pointer {
            munmap(pointer, capacity)
            releasedCapacity = capacity
        }
        (pointer, capacity) = (nil, 0)
    }

    /// After `release`: maps the capacity it gave back again, every page faulted in now.
    mutating func restore() {
        guard pointer == nil, releasedCapacity > 0 else { return }
        map(releasedCapacity, populating: true)
    }

    mutating func reserve(bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > capacity || pointer == nil {
            release()
            map(max(bytes, 64), populating: false)
        }
        return pointer!
    }

    private mutating func map(_ bytes: Int, populating: Bool) {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (populating ? MAP_POPULATE : 0)
        let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0)
        precondition(mapped != MAP_FAILED, "could not map \(bytes) bytes for a oneDNN buffer: errno \(errno)")
        (pointer, capacity) = (mapped, bytes)
    }
}

/// libgomp is loaded by oneDNN; its two entry points are looked up at run time because the
/// oneDNN shim does not declare them.
enum OpenMP {
    private typealias SetThreads = @convention(c) (Int32) -> Void
    private typealias GetThreads = @convention(c) () -> Int32
    private static let setFunction: SetThreads? = dlsym(dlopen(nil, RTLD_NOW), "omp_set_num_threads")
        .map { unsafeBitCast($0, to: SetThreads.self) }
    private static let getFunction: GetThreads? = dlsym(dlopen(nil, RTLD_NOW), "omp_get_max_threads")
        .map { unsafeBitCast($0, to: GetThreads.self) }

    /// Makes the calling thread's OpenMP team size `threads`. OpenMP keeps the count per calling
    /// thread (process state outside CryLab's control): it is read first and set only where it
    /// differs from what was last applied there, so a steady run sets it once per thread, and
    /// runtimes of different thread counts in one process each get theirs.
    static func apply(threads: Int) {
        let wanted = Int32(threads)
        if let get = getFunction, get() != wanted { setFunction?(wanted) }
    }
}
