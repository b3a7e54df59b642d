import AegisStore

/// One shard's newest replication records on its primary, oldest first,
/// bounded by count and bytes: what a follower that fell behind, or has a
/// gap, is served from. Each record names the version the shard held before
/// it (`previous`), so the records form a chain and the tail knows which
/// followers it can serve: one that holds at least the oldest record's
/// `previous` (`servesFrom`). Any other follower (`after` answers `.gone`)
/// needs the shard streamed instead.
///
/// Invariants: versions increase from front to back, and each record's
/// `previous` is below its version and equal to the version of the record
/// before it (a record that does not continue the chain empties the tail
/// first); `byteCount` is the sum of the records'
/// sizes; after every append, `count <= countMax` and `byteCount <= bytesMax`
/// unless one record alone is larger (it is kept alone).
public struct RecentWrites: Sendable {
    public struct Record: Sendable, Equatable {
        public let version: EntryVersion
        public let previous: EntryVersion
        public let madeMs: Int64
        public let bytes: [UInt8]
    }

    public enum Tail: Equatable, Sendable {
        /// The records after the asked version (up to the limit), oldest first; empty when none.
        case records([Record])
        /// Some record after the asked version is not here (dropped, or
        /// written before this tail began).
        case gone
    }

    public let countMax: Int
    public let bytesMax: Int
    private var records: [Record] = []
    private var head = 0
    public private(set) var byteCount = 0
    /// The version a follower must hold to be served from here; nil before the first record.
    public private(set) var servesFrom: EntryVersion?

    public init(countMax: Int, bytesMax: Int) {
        precondition(countMax > 0 && bytesMax > 0, "recent-writes bounds must be positive")
        self.countMax = countMax
        self.bytesMax = bytesMax
    }

    public var count: Int { records.count - head }
    public var newest: EntryVersion? { count > 0 ? records[records.count - 1].version : nil }

    /// Appends a record; false (and nothing changes) when it is not newer
    /// than the newest one here.
    @discardableResult
    public mutating func append(version: EntryVersion, previous: EntryVersion, madeMs: Int64, bytes: [UInt8]) -> Bool {
        if let newest, version <= newest { return false }
        guard previous < version else { return false }
        if let newest, previous != newest {
            // A write that never came here broke the chain: nothing before
            // this record can be served without it.
            records.removeAll()
            head = 0
            byteCount = 0
            servesFrom = previous
        }
        if servesFrom == nil { servesFrom = previous }
        records.append(Record(version: version, previous: previous, madeMs: madeMs, bytes: bytes))
        byteCount += bytes.count
        while count > 1 && (count > countMax || byteCount > bytesMax) {
            byteCount -= records[head].bytes.count
            head += 1
            servesFrom = records[head].previous
        }
        if head >= 64 && head * 2 >= records.count {
            records.removeFirst(head)
            head = 0
        }
        return true
    }

    /// The records newer than `version`, at most `limit` of them, for a
    /// follower that holds everything through `version`.
    public func after(_ version: EntryVersion, limit: Int) -> Tail {
        guard let servesFrom else { return .records([]) }
        if version < servesFrom { return .gone }
        let start = firstIndex(after: version)
        let end = Swift.min(records.count, start + Swift.max(0, limit))
        return .records(Array(records[start..<end]))
    }

    /// When the oldest record newer than `version` was made; nil when none
    /// is here. A follower acknowledged through `version` lags by now minus this.
    public func madeMs(firstAfter version: EntryVersion) -> Int64? {
        let i = firstIndex(after: version)
        return i < records.count ? records[i].madeMs : nil
    }

    /// Index of the first record with a version above `version` (binary search).
    private func firstIndex(after version: EntryVersion) -> Int {
        var low = head
        var high = records.count
        while low < high {
            let mid = (low + high) / 2
            if records[mid].version <= version { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
