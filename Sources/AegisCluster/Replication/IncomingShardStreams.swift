/// The shard streams a follower receives: pure bookkeeping for the cluster
/// loop's reports (/cluster's moves, the stream metrics, one notice line per
/// shard received). The reactor decides what it applies; this only watches
/// the slices go by (ShardStreams is the primary's half).
///
/// A stream of a shard starts with its slice 0 and ends when the reactor
/// applied its last slice. A new slice 0 for a shard replaces the stream
/// running for it (the primary gave that one up and started again), and a
/// stream with no slice for `stallMs` is dropped: both count as abandoned.
///
/// Invariant (checked by `problems`): at most one stream per shard, and
/// each one's applied slices never exceed the slices that arrived.
public struct IncomingShardStreams: Sendable {
    public struct Stream: Sendable, Equatable {
        public let shard: Int
        /// The primary sending it (node id) and its number for the stream.
        public let from: String
        public let id: UInt32
        public let startedMs: Int64
        public fileprivate(set) var lastSliceMs: Int64
        public fileprivate(set) var slicesArrived = 0
        public fileprivate(set) var slicesApplied = 0
        public fileprivate(set) var bytes = 0
    }

    public let stallMs: Int64
    public private(set) var running: [Int: Stream] = [:]
    public private(set) var finished = 0
    public private(set) var abandoned = 0
    /// Bytes of every slice that arrived, finished stream or not.
    public private(set) var bytes = 0

    public init(stallMs: Int64) {
        precondition(stallMs > 0, "the stall bound must be positive")
        self.stallMs = stallMs
    }

    /// Slice `number` of stream `id` of `shard` arrived from `from`. Slices of
    /// a stream not known here (its slice 0 came before a restart of this
    /// loop, or was refused) are counted in `bytes` and otherwise ignored.
    public mutating func sliceArrived(shard: Int, from: String, id: UInt32, number: UInt64, bytes count: Int, nowMs: Int64) {
        bytes += count
        if number == 0 {
            if running[shard] != nil { abandoned += 1 }
            running[shard] = Stream(shard: shard, from: from, id: id, startedMs: nowMs, lastSliceMs: nowMs)
        }
        guard var stream = running[shard], stream.id == id, stream.from == from else { return }
        stream.slicesArrived += 1
        stream.bytes += count
        stream.lastSliceMs = nowMs
        running[shard] = stream
    }

    /// The reactor applied a slice of `shard`'s stream; returns the stream
    /// when that was its last slice.
    public mutating func sliceApplied(shard: Int, last: Bool, nowMs: Int64) -> Stream? {
        guard var stream = running[shard], stream.slicesApplied < stream.slicesArrived else { return nil }
        stream.slicesApplied += 1
        stream.lastSliceMs = nowMs
        guard last else {
            running[shard] = stream
            return nil
        }
        running[shard] = nil
        finished += 1
        return stream
    }

    /// The streams with no slice for `stallMs`, dropped.
    public mutating func expire(nowMs: Int64) -> [Stream] {
        let stallMs = stallMs
        let gone = running.values.filter { nowMs - $0.lastSliceMs >= stallMs }.sorted { $0.shard < $1.shard }
        for stream in gone { running[stream.shard] = nil }
        abandoned += gone.count
        return gone
    }

    /// Every violated invariant, described; empty when all hold.
    public var problems: [String] {
        running.compactMap { shard, stream in
            if stream.shard != shard { return "stream of shard \(stream.shard) filed under \(shard)" }
            if stream.slicesApplied > stream.slicesArrived {
                return "shard \(shard): \(stream.slicesApplied) slices applied of \(stream.slicesArrived) arrived"
            }
            return nil
        }
    }
}

/// Bytes per second for `bytes` moved in `ms` (0 for no time), and the same
/// as MB/s text with one decimal, for log lines.
public enum TransferRate {
    public static func bytesPerSecond(_ bytes: Int, ms: Int64) -> Int {
        ms > 0 ? Int((Double(bytes) * 1_000 / Double(ms)).rounded()) : 0
    }

    public static func megabytesPerSecondText(_ bytes: Int, ms: Int64) -> String {
        let tenths = Int((Double(bytesPerSecond(bytes, ms: ms)) / 100_000).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
