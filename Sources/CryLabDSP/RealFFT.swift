// FFTW at the edge: the only file that calls into CFFTW.
import CFFTW

/// A real-to-complex FFT plan for one transform size, shared by every thread.
///
/// FFTW's planner is not thread-safe, so plans are made once per size under the cache lock
/// and kept for the life of the process. Executing a plan is thread-safe with FFTW's
/// new-array interface (`fftwf_execute_dft_r2c`), as long as each caller brings its own
/// buffers with the same alignment the plan was made with: `RealFFT.Buffers` allocates them
/// with `fftwf_malloc`, like the arrays used for planning.
final class RealFFT: @unchecked Sendable {
    let size: Int
    private let plan: fftwf_plan

    private static let plans = LockedCache<Int, RealFFT>()

    /// The shared plan for `size`-point transforms (made on first use).
    static func plan(size: Int) -> RealFFT {
        plans.value(for: size) { RealFFT(size: size) }
    }

    private init(size: Int) {
        precondition(size > 0)
        self.size = size
        let input = fftwf_malloc(MemoryLayout<Float>.stride * size)!.bindMemory(to: Float.self, capacity: size)
        let output = fftwf_malloc(MemoryLayout<fftwf_complex>.stride * (size / 2 + 1))!
            .bindMemory(to: fftwf_complex.self, capacity: size / 2 + 1)
        defer {
            fftwf_free(input)
            fftwf_free(output)
        }
        // FFTW_ESTIMATE picks the algorithm from the size alone, so results are identical from
        // run to run; FFTW_MEASURE measured no faster here (frontend-bench: 0.43 vs 0.37 ms per clip).
        plan = fftwf_plan_dft_r2c_1d(Int32(size), input, output, UInt32(FFTW_ESTIMATE))!
    }

    /// Aligned scratch for one caller: `input` holds `size` real samples, `output`
    /// `size / 2 + 1` complex bins as interleaved (re, im) floats.
    final class Buffers {
        let input: UnsafeMutablePointer<Float>
        let output: UnsafeMutablePointer<Float>
        private let complexOutput: UnsafeMutablePointer<fftwf_complex>

        init(size: Int) {
            let bins = size / 2 + 1
            input = fftwf_malloc(MemoryLayout<Float>.stride * size)!.bindMemory(to: Float.self, capacity: size)
            complexOutput = fftwf_malloc(MemoryLayout<fftwf_complex>.stride * bins)!
                .bindMemory(to: fftwf_complex.self, capacity: bins)
            // fftwf_complex is float[2]: the same memory read as 2 * bins floats.
            output = UnsafeMutableRawPointer(complexOutput).assumingMemoryBound(to: Float.self)
        }

        deinit {
            fftwf_free(input)
            fftwf_free(complexOutput)
        }

        fileprivate var complex: UnsafeMutablePointer<fftwf_complex> { complexOutput }
    }

    /// Transforms `buffers.input` into `buffers.output`. Thread-safe for distinct buffers.
    func execute(_ buffers: Buffers) {
        fftwf_execute_dft_r2c(plan, buffers.input, buffers.complex)
    }
}
