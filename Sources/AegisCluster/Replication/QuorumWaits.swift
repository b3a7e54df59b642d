import AegisStore

/// Writes whose replies wait for a write quorum, per shard, in version
/// order: a reply is released when its shard's committed version reaches
/// the write's, or answered with a timeout error at its deadline. Generic
/// over the ticket that finds the held reply again.
///
/// Invariants: per shard, waits are kept in the order they were added,
/// which is version order (a shard's writes get increasing versions on its
/// primary; a wait for a version below the newest one waiting is made to
/// wait for that one, which only ever holds it longer, never releases it
/// early); each ticket comes out exactly once, by `committed` or by
/// `expired`. Deadlines are only looked at on each shard's oldest wait: with
/// one `write_timeout` they increase too; after a reload shortened the
/// timeout, a later wait comes out no later than the one ahead of it.
public struct QuorumWaits<Ticket: Sendable>: Sendable {
    struct Waiting: Sendable {
        let version: EntryVersion
        let deadlineMs: Int64
        let ticket: Ticket
    }

    private var waiting: [Int: [Waiting]] = [:]
    private var heads: [Int: Int] = [:]
    public private(set) var count = 0

    public init() {}

    /// Waits held in storage, released ones not yet given back included. For tests.
    var storedWaits: Int { waiting.values.reduce(0) { $0 + $1.count } }

    public mutating func wait(shard: Int, version: EntryVersion, deadlineMs: Int64, ticket: Ticket) {
        // A command that changed a key without a new version (removing an
        // expired entry keeps the entry's own) repeats the newest one.
        let ordered = waiting[shard]?.last.map { Swift.max($0.version, version) } ?? version
        waiting[shard, default: []].append(Waiting(version: ordered, deadlineMs: deadlineMs, ticket: ticket))
        count += 1
    }

    /// The shard's committed version reached `version`: the tickets of
    /// every write at or below it, oldest first.
    public mutating func committed(shard: Int, through version: EntryVersion) -> [Ticket] {
        take(shard) { $0.version <= version }
    }

    /// Tickets of writes whose deadline passed, oldest first per shard.
    public mutating func expired(nowMs: Int64) -> [Ticket] {
        var out: [Ticket] = []
        for shard in Array(waiting.keys) { out += take(shard) { $0.deadlineMs <= nowMs } }
        return out
    }

    /// Every ticket of `shard` (the node stopped being its primary).
    public mutating func abandon(shard: Int) -> [Ticket] { take(shard) { _ in true } }

    private mutating func take(_ shard: Int, while due: (Waiting) -> Bool) -> [Ticket] {
        guard let list = waiting[shard] else { return [] }
        var head = heads[shard] ?? 0
        var out: [Ticket] = []
        while head < list.count && due(list[head]) {
            out.append(list[head].ticket)
            head += 1
        }
        count -= out.count
        if head == list.count {
            waiting[shard] = nil
            heads[shard] = nil
        } else if head >= 64 && head * 2 >= list.count {
            // Gives back the consumed front so a busy shard's list stays bounded by its pending waits.
            waiting[shard]!.removeFirst(head)
            heads[shard] = 0
        } else {
            heads[shard] = head
        }
        return out
    }
}
