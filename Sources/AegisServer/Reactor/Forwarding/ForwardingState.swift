import AegisProtocol

/// Forwarding between this reactor and its peers, beyond the rings
/// themselves: records waiting for ring space, which peers to wake, the
/// backlog bound with the clients parked by it, and the replies still due.
///
/// Invariants:
/// - `overflow[t]` holds records for reactor `t` in the order they were
///   sent; a record goes into the ring directly only while `overflow[t]` is
///   empty, so order is kept;
/// - `backlog.queuedBytes` is the bytes in all `overflow` buffers;
/// - `awaitedReplies` is the requests sent to peers (`.request` records)
///   whose `.reply` records have not been handled yet;
/// - `mustNotify[t]` is set after anything went into the ring to `t` in
///   this iteration, and cleared when `t` was notified.
///
/// Confined to its reactor's thread.
struct ForwardingState {
    /// Outbound records that did not fit their ring yet, per target reactor.
    /// Layout per record: [u32 length][u32 flags][header][payload].
    var overflow: [WireBuffer]
    var mustNotify: [Bool]
    /// What this reactor holds for its peers beyond the rings, and the
    /// clients it stopped reading because of it.
    var backlog = OutboundBacklog()
    /// Requests this reactor forwarded whose replies have not come back yet.
    var awaitedReplies = 0

    /// Endpoints: the node's reactors and the cluster loop (the last).
    init(endpointCount: Int) {
        overflow = (0..<endpointCount).map { _ in WireBuffer() }
        mustNotify = Array(repeating: false, count: endpointCount)
    }

    var hasOverflow: Bool {
        for buffer in overflow where !buffer.isEmpty { return true }
        return false
    }
}

/// What a reactor has queued for its peers beyond their rings, and the
/// client connections it stopped reading because of it.
struct OutboundBacklog {
    /// Bytes in the overflow buffers (heap copies are counted by the Interconnect).
    var queuedBytes = 0
    /// Each connection at most once.
    private(set) var parked: [Connection] = []
    /// Per connection slot: its generation + 1 while parked, 0 otherwise, so
    /// a slot reused by a new connection is not taken for the parked one.
    private(set) var parkedGeneration: [UInt64] = []

    mutating func park(_ connection: Connection) {
        let slot = Int(connection.index)
        if parkedGeneration.count <= slot {
            parkedGeneration.append(contentsOf: repeatElement(0, count: slot + 1 - parkedGeneration.count))
        }
        parkedGeneration[slot] = UInt64(connection.generation) + 1
        parked.append(connection)
    }

    mutating func unparkAll() {
        for connection in parked where parkedGeneration[Int(connection.index)] == UInt64(connection.generation) + 1 {
            parkedGeneration[Int(connection.index)] = 0
        }
        parked.removeAll(keepingCapacity: true)
    }
}
