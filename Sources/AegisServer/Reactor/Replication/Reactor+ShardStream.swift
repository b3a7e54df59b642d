import AegisCluster
import AegisStore
import CSupport

/// Shard streams between reactors (see `ShardStreams` for the cluster
/// loop's half and docs/replication.md for the argument).
///
/// On the primary, the shard's reactor walks the shard with the SCAN cursor
/// (`ShardStore.scan`: every entry present for the whole walk is visited at
/// least once, even across table growth), at most one slice per loop pass,
/// paced by `StreamSlicePacer`, and only while the cluster loop has granted
/// slices. The walk remembers the
/// version the shard held when it began (`start`) and sends only entries at
/// or below it: every write after `start` is in the recent-writes tail, which
/// the follower gets after the stream. An entry changed or deleted during
/// the walk is therefore either sent as it was at or before `start` or not
/// at all, and its later writes come from the tail in order; an entry sent
/// twice (a table shrink) is applied once (versions).
///
/// On the follower, slice 0 replaces the shard (`replaceForStream`: entries,
/// tombstones and the absent floor go), every slice is applied with
/// `applyIfNewer` and acknowledged, and after the last
/// (`completeStream`: the absent floor becomes `start`) the shard holds the
/// primary's chain through `start`.
enum ShardStreamWire {
    /// Set in a slice's number (the header's ticket) on the walk's last slice.
    static let lastSlice: UInt64 = 1 << 63
    /// Set in a grant's count (the header's ticket) on the stream's first:
    /// only that one starts a walk. A later grant can cross the walk's last
    /// slice on its way (the cluster loop grants on an acknowledgement before
    /// the last slice reached it) and must not start the walk again.
    static let startWalk: UInt64 = 1 << 62
    /// Bounds of one slice, i.e. of the work one loop pass of the primary's
    /// reactor does for a stream, whichever is reached first: entries
    /// scanned (sent, or skipped as written after the walk began: skipping
    /// costs the scan too) and bytes. 16 KiB of 512 B values is about 10 µs
    /// of copying and checksums, what a GET that arrives meanwhile waits.
    static let sliceScannedMax = 256
    static let sliceBytesMax = 16 << 10
    /// Entries the walk asks the scan for at a time, so that a slice stops
    /// close to its bounds (at most this many entries past them).
    static let scanStep = 8
}

/// A stream's walk over one shard on its primary's reactor.
struct ShardWalk {
    let id: UInt32
    let shard: Int
    let start: EntryVersion
    var cursor: UInt64 = 0
    var nextSlice: UInt64 = 0
    /// Slices the cluster loop asked for and not yet walked.
    var credit = 0
}

/// A stream a follower's reactor is receiving for one shard.
struct IncomingStream {
    let id: UInt32
    let start: EntryVersion
    /// The peer (the cluster loop's number) the slices come from.
    let origin: UInt16
    var nextSlice: UInt64 = 0
}

extension Reactor {
    // MARK: - As the primary

    /// The cluster loop grants `ticket` more slices of a stream; the first
    /// grant (`startWalk`) starts its walk, a grant for a walk that is over
    /// is ignored. A shard not held here starts nothing: the cluster loop
    /// gives the stream up when it stalls.
    func streamSlicesGranted(_ header: ForwardHeader) {
        let credit = Int(clamping: min(header.route.ticket & ~ShardStreamWire.startWalk, 1 << 20))
        if let i = replica.walks.firstIndex(where: { $0.id == header.connectionIndex }) {
            replica.walks[i].credit += credit
            return
        }
        guard header.route.ticket & ShardStreamWire.startWalk != 0 else { return }
        let shard = Int(header.route.shard)
        guard shard < shards.count, let store = shards[shard] else { return }
        replica.walks.append(ShardWalk(id: header.connectionIndex, shard: shard, start: store.lastWriteVersion, credit: credit))
        replica.streamWalksStarted += 1
    }

    func streamCancelled(_ header: ForwardHeader) {
        replica.walks.removeAll { $0.id == header.connectionIndex }
    }

    /// True while a walk may go on (the loop then rests, see `StreamSlicePacer`).
    var hasStreamSliceDue: Bool { replica.walks.contains { $0.credit > 0 } }

    /// This reactor's share of `stream_rate_limit_mb` in bytes per second (0: no limit).
    var streamBytesPerSecond: Int {
        let limitMB = node.runtime.currentStreamRateLimitMB
        return limitMB == 0 ? 0 : max(1, limitMB * 1_048_576 / node.reactorCount)
    }

    /// True while a stream slice or a slice of a dropped copy waits
    /// (Reactor+Routing.swift, `freeOneSliceOfDroppedCopies`); both are paced alike.
    var hasBackgroundSliceDue: Bool { hasStreamSliceDue || !droppedCopies.isEmpty }

    /// Walks one slice of the first walk with credit (then puts it last, so
    /// several streams take turns), bounded by `sliceScannedMax` entries or
    /// `sliceBytesMax` bytes: the rest of the loop pass, and so GET latency,
    /// waits for at most one slice.
    /// `nowNs`: the loop's clock reading that found the slice due, its start.
    func walkOneStreamSlice(nowNs startedNs: Int64) {
        guard let i = replica.walks.firstIndex(where: { $0.credit > 0 }) else { return }
        var walk = replica.walks.remove(at: i)
        guard let store = shards[walk.shard] else { return }  // no longer held here: the cluster loop aborts it
        replica.pacer.walked(nowNs: startedNs)
        let buffer = replica.slice
        buffer.clear()
        let shard = walk.shard
        let start = walk.start
        var entries = 0
        var scanned = 0
        repeat {
            walk.cursor = store.scan(cursor: walk.cursor, count: ShardStreamWire.scanStep, nowMs: now) { entry in
                scanned += 1
                guard entry.version <= start else { return }  // written after the walk began: the tail has it
                WALRecord.append(to: buffer, operation: .set, shard: shard, version: entry.version, expiryMs: entry.expiryMs,
                                 key: entry.key, value: entry.value)
                entries += 1
            }
        } while walk.cursor != 0 && scanned < ShardStreamWire.sliceScannedMax && buffer.readableBytes < ShardStreamWire.sliceBytesMax
        let last = walk.cursor == 0
        var header = ReplicationWire.header(.streamData, shard: shard, payloadLength: buffer.readableBytes)
        header.connectionIndex = walk.id
        header.replicatedPrevious = start
        header.route.ticket = walk.nextSlice | (last ? ShardStreamWire.lastSlice : 0)
        sendRecord(to: routes.clusterEndpoint, header: header, payload: buffer.readableView)
        replica.pacer.streamed(bytes: buffer.readableBytes, startedNs: startedNs, bytesPerSecond: streamBytesPerSecond)
        counters.streamEntriesSent += entries
        buffer.clear()
        buffer.releaseIfIdle(keep: 1 << 20)
        if last { return }
        walk.nextSlice += 1
        walk.credit -= 1
        replica.walks.append(walk)
    }

    // MARK: - As the follower

    /// One slice of a stream for one of this reactor's shards: applied in
    /// order and acknowledged. A slice that is not the next one of the
    /// stream being received (a stream given up meanwhile) is ignored; a
    /// record in it that could not come from a walk ends the stream here
    /// (the primary starts another once it stalls).
    func applyStreamSlice(_ header: ForwardHeader, payload: UnsafeRawBufferPointer) {
        let shard = Int(header.route.shard)
        let number = header.route.ticket & ~ShardStreamWire.lastSlice
        guard shard < shards.count, let store = shards[shard] else {
            replica.streamSlicesRefused += 1
            return
        }
        if number == 0 {
            store.replaceForStream()
            noteUnloggedChange(shard: shard)
            replica.appliedThrough[shard] = .zero
            replica.incoming[shard] = IncomingStream(id: header.connectionIndex, start: header.replicatedPrevious,
                                                     origin: header.route.originNode)
        }
        guard var incoming = replica.incoming[shard], incoming.id == header.connectionIndex,
              incoming.nextSlice == number, incoming.start == header.replicatedPrevious,
              incoming.origin == header.route.originNode else {
            replica.streamSlicesRefused += 1
            return
        }
        var rest = payload
        // Each slice's entries, not only the first slice's drop, are what the log lacks.
        if !rest.isEmpty { noteUnloggedChange(shard: shard) }
        while !rest.isEmpty {
            guard case .record(let decoded, let length) = WALRecord.decode(rest), decoded.shard == shard,
                  decoded.operation == .set, decoded.version <= incoming.start else {
                replica.streamSlicesRefused += 1
                replica.incoming[shard] = nil
                return
            }
            store.applyIfNewer(decoded.key, hash: KeyHash.hash(decoded.key), .set(value: decoded.value, expiryMs: decoded.expiryMs),
                               version: decoded.version, nowMs: now)
            counters.streamEntriesApplied += 1
            rest = UnsafeRawBufferPointer(rebasing: rest[length...])
        }
        incoming.nextSlice += 1
        if header.route.ticket & ShardStreamWire.lastSlice != 0 {
            store.completeStream(streamStart: incoming.start)
            replica.incoming[shard] = nil
            replica.appliedThrough[shard] = incoming.start
            replica.streamsReceived += 1
        } else {
            replica.incoming[shard] = incoming
        }
        var ack = header
        ack.kind = .streamAck
        ack.payloadLength = 0
        sendRecord(to: routes.clusterEndpoint, header: ack, payload: UnsafeRawBufferPointer(start: nil, count: 0))
    }
}
