import Foundation

/// Runs `work` on each of `items`, dealt out round-robin over the ranks of `communicator`, round
/// by round: in round r, rank i takes item r * N + i, and ranks without an item wait. After each
/// round rank 0 gets every result of the round, in item order, each with its item and whether
/// rank 0 computed it (the others' results travel as JSON); the other ranks get none. Without a
/// communicator every item runs here, one per round. Collective.
///
/// A round's results reach rank 0 only when the whole round is done, so a job that dies loses
/// at most one round. Waits for the other ranks have no time limit (they may be training);
/// a rank that dies is caught by the launcher.
public func dealOut<Item, Result: Codable>(_ items: [Item], over communicator: Communicator?,
                                           work: (Item) throws -> Result,
                                           collect: (_ item: Item, _ result: Result, _ computedHere: Bool) throws -> Void) throws {
    let (rank, size) = (communicator?.rank ?? 0, communicator?.size ?? 1)
    for start in stride(from: 0, to: items.count, by: size) {
        let round = Array(items[start..<min(start + size, items.count)])
        let mine = rank < round.count ? try work(round[rank]) : nil
        guard let communicator else {
            try collect(round[0], mine!, true)
            continue
        }
        guard let gathered = try communicator.gather(mine.map { Array(try JSONEncoder().encode($0)) } ?? [], limit: .never) else { continue }
        for index in round.indices {
            let result = index == rank ? mine! : try JSONDecoder().decode(Result.self, from: Data(gathered[index]))
            try collect(round[index], result, index == rank)
        }
    }
}
