import CryLabCore
import CryLabFeatures
import CryLabMPI
import CryLabNN
import Foundation

/// The ranks of a data-parallel run (`mpirun -np N crylab pretrain`): one model trained on N
/// processes, each computing the gradients of its share of every global batch.
///
/// - Every rank shuffles the same global order (the recipe's seed) and takes, of a global batch
///   of B clips, the positions `[r * B / N, (r + 1) * B / N)` (integer division): shares differ
///   by at most one clip, and a rank whose share is empty (B < N) adds zero gradients.
/// - Every rank makes the random draws (crop, shifts, mixing, masks, noise) of the *whole* global
///   batch, in the one-process order, on a batch whose other clips are zeros (the draws never
///   depend on the values), and keeps its rows: a clip gets the draws it gets in one process.
///   Mixing adds the next clip of the batch, so a rank also reads the clip after its share.
/// - Each rank divides its loss by the whole batch's denominator (masked cells or elements), so
///   the ranks' gradients and losses add up to the one-process batch's; `GradientBuckets` sums
///   the gradients with in-place fp32 allreduces of buckets started during the backward pass.
public struct DataParallelRanks {
    public let communicator: Communicator
    /// Reads this rank's clips (no rank holds the whole store).
    public let reader: FeatureStoreReader

    public init(communicator: Communicator, reader: FeatureStoreReader) {
        self.communicator = communicator
        self.reader = reader
    }

    public var rank: Int { communicator.rank }
    public var size: Int { communicator.size }
    public var isRoot: Bool { communicator.rank == 0 }

    /// This rank's positions in a global batch of `count` clips.
    public func share(of count: Int) -> Range<Int> {
        (count * rank / size)..<(count * (rank + 1) / size)
    }

    /// The positions of `order` (split into batches of `batchSize`) whose spectrograms this
    /// rank needs: its share of every batch and the clip after it (for mixing).
    func neededPositions(of order: [Int], batchSize: Int) -> [Int] {
        var positions: [Int] = []
        for start in stride(from: 0, to: order.count, by: batchSize) {
            let count = min(batchSize, order.count - start)
            let mine = share(of: count)
            guard !mine.isEmpty else { continue }
            positions += mine.map { start + $0 }
            if count > 1 { positions.append(start + mine.upperBound % count) }
        }
        return positions
    }

    /// The clips of the batches of `indices` (split into batches of `batchSize`) this rank
    /// evaluates: batch k goes to rank k mod N. In batch order.
    func validationClips(of indices: [Int], batchSize: Int) -> [Int] {
        stride(from: 0, to: indices.count, by: batchSize).enumerated()
            .filter { $0.offset % size == rank }
            .flatMap { indices[$0.element..<min($0.element + batchSize, indices.count)] }
    }

    /// Sums one Double per rank exactly as every rank will see it: rank 0 adds them in rank
    /// order and sends the sum back, so every rank gets the same bits. With it goes whether any
    /// rank is `stopping` (was asked to stop), so that all stop after the same step.
    func sumInRankOrder(_ value: Double, stopping: Bool = false) throws -> (sum: Double, stopping: Bool) {
        let gathered = try communicator.gather(bytes(of: [value, stopping ? 1 : 0]))
        let answer = gathered.map { parts -> [Double] in
            let values = parts.map { doubles(from: $0) }
            return [values.map { $0[0] }.reduce(0, +), values.contains { $0[1] != 0 } ? 1 : 0]
        }
        let agreed = try broadcastFromRoot(answer ?? [0, 0])
        return (agreed[0], agreed[1] != 0)
    }

    /// Rank 0's `values` on every rank (the others' are ignored).
    func broadcastFromRoot(_ values: [Double]) throws -> [Double] {
        doubles(from: try communicator.broadcast(bytes(of: values)))
    }

    func broadcastFromRoot(_ value: Double) throws -> Double { try broadcastFromRoot([value])[0] }
}

private func bytes(of values: [Double]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) } }
}

private func doubles(from bytes: [UInt8]) -> [Double] {
    stride(from: 0, to: bytes.count - 7, by: 8).map { start in
        Double(bitPattern: bytes[start..<(start + 8)].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    }
}

extension DataParallelRanks {
    /// Every rank's view embeddings (its clips' first views, then their second views) on every
    /// rank, in the global order: every rank's first views in rank order, then every rank's
    /// second views; and how many clips each rank gave.
    func gatherViewEmbeddings(_ embeddings: [[Double]]) throws -> (rows: [[Double]], clips: [Int]) {
        let width = embeddings.first?.count ?? 0
        let gathered = try communicator.gather(bytes(of: [Double(embeddings.count), Double(width)] + embeddings.flatMap { $0 }))
        var assembled: [Double] = []
        if let gathered {
            let parts = gathered.map { doubles(from: $0) }
            let clips = parts.map { Int($0[0]) / 2 }
            let channels = parts.map { Int($0[1]) }.max() ?? 0
            assembled = clips.map(Double.init) + [Double(channels)]
            for view in 0..<2 {
                for (part, count) in zip(parts, clips) where count > 0 {
                    let length: Int = count * channels
                    let start: Int = 2 + view * length
                    assembled.append(contentsOf: part[start..<(start + length)])
                }
            }
        }
        let flat = try broadcastFromRoot(assembled)
        let clips = flat[..<size].map { Int($0) }
        let channels = Int(flat[size])
        let values = Array(flat[(size + 1)...])
        let rows = stride(from: 0, to: values.count, by: max(channels, 1)).map { Array(values[$0..<($0 + channels)]) }
        return (rows, clips)
    }
}

extension DataParallelRanks {
    /// `body`'s value, or, when it throws (an MPI failure or timeout inside a step, where the
    /// training loop cannot throw), this rank's error on standard error and the end of the job.
    func orAbort<T>(_ body: () throws -> T) -> T {
        do { return try body() } catch {
            FileHandle.standardError.write(Data("crylab: \(communicator.name): error: \(error)\n".utf8))
            communicator.abort()
        }
    }
}

/// Synchronised BatchNormalization statistics: per-channel sums added over the ranks.
final class RanksSum: CrossProcessSum {
    let ranks: DataParallelRanks

    init(_ ranks: DataParallelRanks) { self.ranks = ranks }

    func sumOverProcesses(_ values: inout [Double]) {
        ranks.orAbort { try ranks.communicator.allreduceSum(&values) }
    }
}
