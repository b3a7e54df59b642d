import AegisStore

/// The shard streams a primary runs: one per (shard, follower) whose missing
/// records left the recent-writes tail. Pure bookkeeping for the cluster
/// loop: which streams run, how many slices each may have in flight, and
/// when one ends, stalls or must be given up.
///
/// Flow: the shard's reactor walks the shard one slice per request (a
/// bounded number of entries and bytes per loop pass); the follower
/// acknowledges every slice it applied. At most `windowSlices` slices of a
/// stream are asked for and not yet acknowledged, so a stream holds at most
/// that many slices in the primary's rings, its peer link and the
/// follower's rings, however slow the follower: the link's backpressure
/// reaches the walk, which simply waits. At most `concurrentMax` streams
/// run at once; the other followers that need one wait for a later turn.
///
/// Invariants (checked by `problems`): at most one stream per (shard,
/// follower); for each stream, acknowledged <= produced <= requested <=
/// acknowledged + windowSlices, and nothing more is asked for once the last
/// slice was produced (credit asked for beyond it is ignored by the walk).
public struct ShardStreams: Sendable {
    public struct Stream: Sendable, Equatable {
        public let id: UInt32
        public let shard: Int
        public let follower: NodeID
        public let startedMs: Int64
        public fileprivate(set) var lastProgressMs: Int64
        /// Slices asked of the reactor, produced by it, and applied by the follower.
        public fileprivate(set) var requested: UInt64 = 0
        public fileprivate(set) var produced: UInt64 = 0
        public fileprivate(set) var acknowledged: UInt64 = 0
        /// Set when the reactor produced the last slice: the number of slices in all.
        public fileprivate(set) var sliceCount: UInt64?
        /// The version the shard held when the walk began (from the first slice).
        public fileprivate(set) var start: EntryVersion?
        public fileprivate(set) var bytes = 0
    }

    /// What a follower's acknowledgement of a slice did.
    public enum Acknowledgement: Equatable, Sendable {
        /// Counted; more slices may be asked for (`grant`).
        case more
        /// The follower applied every slice: it holds the shard through `start`.
        case finished(Stream)
        /// Not a running stream of this follower, or not the next slice:
        /// ignored (a stream aborted meanwhile, or a peer that lies).
        case refused
    }

    public let windowSlices: Int
    public let concurrentMax: Int
    /// A stream with no slice produced or acknowledged for this long is given up.
    public let stallMs: Int64
    public private(set) var running: [UInt32: Stream] = [:]
    private var nextID: UInt32 = 1

    public init(windowSlices: Int, concurrentMax: Int, stallMs: Int64) {
        precondition(windowSlices > 0 && concurrentMax > 0 && stallMs > 0, "stream bounds must be positive")
        self.windowSlices = windowSlices
        self.concurrentMax = concurrentMax
        self.stallMs = stallMs
    }

    public func isStreaming(shard: Int, to follower: NodeID) -> Bool {
        running.values.contains { $0.shard == shard && $0.follower == follower }
    }

    /// Starts a stream of `shard` to `follower`; nil when one runs for the
    /// pair already or `concurrentMax` run.
    public mutating func start(shard: Int, follower: NodeID, nowMs: Int64) -> UInt32? {
        guard running.count < concurrentMax, !isStreaming(shard: shard, to: follower) else { return nil }
        let id = nextID
        nextID = nextID == .max ? 1 : nextID + 1
        running[id] = Stream(id: id, shard: shard, follower: follower, startedMs: nowMs, lastProgressMs: nowMs)
        return id
    }

    /// How many more slices to ask of the reactor now (counted as asked).
    public mutating func grant(_ id: UInt32) -> Int {
        guard var stream = running[id], stream.sliceCount == nil else { return 0 }
        let inFlight = stream.requested - stream.acknowledged
        let more = UInt64(windowSlices) > inFlight ? UInt64(windowSlices) - inFlight : 0
        stream.requested += more
        running[id] = stream
        return Int(more)
    }

    /// The reactor produced slice `number` (`last`: the walk ended) of
    /// `bytes` bytes, the shard held `start` when the walk began. False
    /// (nothing changes) for an unknown stream or a slice out of order.
    public mutating func produced(_ id: UInt32, slice number: UInt64, last: Bool, start: EntryVersion,
                                  bytes: Int, nowMs: Int64) -> Bool {
        guard var stream = running[id], stream.sliceCount == nil, number == stream.produced,
              stream.produced < stream.requested, stream.start == nil || stream.start == start else { return false }
        stream.produced += 1
        stream.start = start
        stream.bytes += bytes
        stream.lastProgressMs = nowMs
        if last { stream.sliceCount = stream.produced }
        running[id] = stream
        return true
    }

    /// `follower` applied slice `number` of stream `id`.
    public mutating func acknowledged(_ id: UInt32, slice number: UInt64, from follower: NodeID, nowMs: Int64) -> Acknowledgement {
        guard var stream = running[id], stream.follower == follower,
              number == stream.acknowledged, number < stream.produced else { return .refused }
        stream.acknowledged += 1
        stream.lastProgressMs = nowMs
        if let count = stream.sliceCount, stream.acknowledged == count {
            running[id] = nil
            return .finished(stream)
        }
        running[id] = stream
        return .more
    }

    /// Gives up the streams that match (a follower's link broke, a shard
    /// changed hands) and returns them; the reactor must stop their walks.
    public mutating func abort(where matches: (Stream) -> Bool) -> [Stream] {
        let gone = running.values.filter(matches).sorted { $0.id < $1.id }
        for stream in gone { running[stream.id] = nil }
        return gone
    }

    /// The streams that made no progress for `stallMs`, given up.
    public mutating func abortStalled(nowMs: Int64) -> [Stream] {
        let stallMs = stallMs
        return abort { nowMs - $0.lastProgressMs >= stallMs }
    }

    /// Every violated invariant, described; empty when all hold.
    public var problems: [String] {
        var found: [String] = []
        var pairs = Set<String>()
        for stream in running.values {
            if !pairs.insert("\(stream.shard)/\(stream.follower)").inserted {
                found.append("two streams of shard \(stream.shard) to \(stream.follower)")
            }
            if stream.acknowledged > stream.produced || stream.produced > stream.requested {
                found.append("stream \(stream.id): acknowledged \(stream.acknowledged), produced \(stream.produced), requested \(stream.requested)")
            }
            if stream.requested > stream.acknowledged + UInt64(windowSlices) {
                found.append("stream \(stream.id) asked beyond its window")
            }
        }
        return found
    }
}
