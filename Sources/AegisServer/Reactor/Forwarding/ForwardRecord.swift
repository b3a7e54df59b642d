import AegisStore

/// The fixed header of every message between reactors; the payload follows.
///
/// Requests carry the client's raw request bytes (one RESP command or one
/// binary frame) so the owner parses them with the same code as a local
/// request; replies carry reply bytes already encoded for the client's
/// protocol, which the origin copies into the connection's reply slot.
///
/// Between nodes the same record travels through the cluster loop (the
/// Interconnect's last endpoint) inside a batch frame on the bulk lane;
/// `route` says where it came from and which shard it is for, so the reply
/// finds its way back through both loops.
struct ForwardHeader {
    enum Kind: UInt8 {
        case request = 1
        case reply = 2
        /// A write of a replicated shard: one WAL record (the log's codec),
        /// from the primary's reactor through both cluster loops to the
        /// follower's reactor. `replicatedPrevious` is the version the shard
        /// held before it (see ReplicationRelay).
        case replicate = 3
        /// A follower's acknowledgement: it holds the shard's records
        /// through the version in the payload (ReplicationWire).
        case replicaAck = 4
        /// From the primary's cluster loop to the shard's reactor: how far
        /// the shard's replicas hold it (ReplicationWire.encodeHeld): for
        /// k = 2 ... replicas, the newest version at least k of them hold.
        /// Releases writes waiting for a quorum, answers WAIT, and the last
        /// one (held by every replica) lets tombstones at or below it go.
        case replicaProgress = 5
        /// A primary's read at `read_quorum` R >= 2 asks a follower for its
        /// state of one key (the payload). The primary's reactor sends it
        /// with `connectionIndex` = how many followers to ask (R - 1),
        /// `slotSequence` = the read's ticket and `route.originReactor` =
        /// itself; the follower's reactor answers `readAnswer` with the
        /// same ticket and route (ReactorReadQuorum.swift).
        case readProbe = 6
        /// A follower's state of the key a `readProbe` named: one WAL
        /// record (a SET with its version, or a DEL with the version the
        /// key was deleted at, `.zero` when never known). The primary's
        /// cluster loop puts the follower's peer number in `connectionIndex`.
        case readAnswer = 7
        /// The newest state a read found, for a replica that answered an
        /// older one: one WAL record, applied with `applyIfNewer` like a
        /// replicated write but outside the primary's chain of records (it
        /// moves no acknowledgement). From the primary's reactor
        /// `connectionIndex` names the follower's peer number.
        case readRepair = 8
        /// Shard streams (ShardStreams, Reactor+ShardStream): from the
        /// primary's cluster loop to the shard's reactor, "walk `ticket` more
        /// slices of stream `connectionIndex`" (the first starts the walk).
        case streamSlice = 9
        /// One slice of a stream (WAL records, one after another), from the
        /// primary's reactor through both cluster loops to the follower's
        /// reactor: `connectionIndex` the stream, `replicatedPrevious` the
        /// version the walk started at, `ticket` the slice number
        /// (`ShardStreamWire.lastSlice` set on the last).
        case streamData = 10
        /// The follower's reactor applied a slice (same fields, no payload),
        /// back to the primary's cluster loop.
        case streamAck = 11
        /// From the primary's cluster loop to the shard's reactor: stop the
        /// walk of stream `connectionIndex`.
        case streamCancel = 12
        /// From a reactor to its own cluster loop, never between nodes: the
        /// reactor installed the lease set `route.ticket` (its version), in
        /// which shard `route.shard` is being handed off, and writes it no
        /// more. Every record of the shard's writes went into the ring
        /// before it (overflow keeps the order), so once the loop
        /// read it, what the shard's followers acknowledged says whether the
        /// hand-off's target holds every write (Cluster/Leases/LeaseHandOffs.swift).
        case shardFrozen = 13
        /// Between cluster loops only, no payload: a stopping node that has
        /// handed its shards off tells a peer it is about to close its
        /// links. The peer sends it no more requests (they go to the
        /// shard's next replica, where the hand-off went) and answers
        /// `farewellAck` on its own bulk link, behind every request it sent
        /// before (ForwardingRelay, "Farewells"). Only to peers that
        /// announce `PeerAnnouncement.Capabilities.farewell`: an older build
        /// closes a link that carries a kind it does not know.
        case farewell = 14
        /// The answer to `farewell`: nothing more comes from this peer.
        case farewellAck = 15
    }

    var kind: Kind
    var wire: WireKind          // the client's protocol, so the owner encodes the reply for it
    var connectionIndex: UInt32
    var connectionGeneration: UInt32
    var slotSequence: UInt64
    var payloadLength: Int      // bytes of the request or reply
    var route = ForwardRoute.local
    /// How many nodes passed this request on after the one its client
    /// reached: one more each time a node that is not the shard's primary
    /// relayed it to the holder its own routing names, up to
    /// `Reactor.maxHops` (`Reactor.passOnIfNotPrimary`). A node of an older
    /// build writes 0 here and never relays.
    var hops: UInt8 = 0
    /// `Flags` bits; a node of an older build writes 0 here and ignores it.
    var flags: UInt8 = 0

    /// What a request's header may say beyond its route.
    enum Flags {
        /// A one-key read: where its primary cannot be reached, a replica's
        /// copy may answer it (ForwardingRelay, "Reads while the primary is
        /// unreachable").
        static let readOnly: UInt8 = 1
        /// Answer this read from the copy this node holds as a follower;
        /// do not pass it on to the primary, which the sender cannot reach.
        static let answerFromCopy: UInt8 = 2
        /// On a `readAnswer` from this node's cluster loop to a reactor,
        /// never between nodes: only `connectionIndex` of the replicas the
        /// read needs could be asked or can still answer (an address not
        /// known, a link down, or one that broke before its answer with no
        /// other replica left to ask), so the read cannot reach its quorum
        /// and ends at once instead of at its timeout.
        static let followersNotAsked: UInt8 = 4
        /// On a `readAnswer` between nodes: the replica that answered is
        /// a follower whose copy is not whole (restarted from its log, or
        /// being streamed). Its state may be older than a delete whose
        /// tombstone every whole replica has let go, so it never counts as
        /// newer than the asker's (a read repair with it brought a deleted
        /// key back: chaos/run --seed 42 --read-quorum 2). Older builds
        /// never set it.
        static let copyNotWhole: UInt8 = 8
    }

    static let size = 40

    /// A `.replicate` record carries no connection: the version its shard
    /// held before the write travels in the connection fields instead.
    var replicatedPrevious: EntryVersion {
        get { EntryVersion(term: connectionGeneration, seq: slotSequence) }
        set {
            connectionGeneration = newValue.term
            slotSequence = newValue.seq
        }
    }

    /// The header of the reply to this request: the same route and slot, so
    /// it finds its way back.
    func reply(payloadLength: Int) -> ForwardHeader {
        var header = self
        header.kind = .reply
        header.payloadLength = payloadLength
        return header
    }

    /// Stores and loads are unaligned: in a batch frame between nodes, a
    /// record starts wherever the one before it ended.
    @inline(__always) func store(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: kind.rawValue, toByteOffset: 0, as: UInt8.self)
        pointer.storeBytes(of: wire.rawValue, toByteOffset: 1, as: UInt8.self)
        pointer.storeBytes(of: hops, toByteOffset: 2, as: UInt8.self)
        pointer.storeBytes(of: flags, toByteOffset: 3, as: UInt8.self)
        pointer.storeBytes(of: connectionIndex, toByteOffset: 4, as: UInt32.self)
        pointer.storeBytes(of: connectionGeneration, toByteOffset: 8, as: UInt32.self)
        pointer.storeBytes(of: UInt32(payloadLength), toByteOffset: 12, as: UInt32.self)
        pointer.storeBytes(of: slotSequence, toByteOffset: 16, as: UInt64.self)
        pointer.storeBytes(of: route.originNode, toByteOffset: 24, as: UInt16.self)
        pointer.storeBytes(of: route.originReactor, toByteOffset: 26, as: UInt16.self)
        pointer.storeBytes(of: route.shard, toByteOffset: 28, as: UInt32.self)
        pointer.storeBytes(of: route.ticket, toByteOffset: 32, as: UInt64.self)
    }

    @inline(__always) static func load(from bytes: UnsafeRawBufferPointer) -> ForwardHeader {
        assert(bytes.count >= size)
        return ForwardHeader(
            kind: Kind(rawValue: bytes.loadUnaligned(fromByteOffset: 0, as: UInt8.self))!,
            wire: WireKind(rawValue: bytes.loadUnaligned(fromByteOffset: 1, as: UInt8.self))!,
            connectionIndex: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self),
            connectionGeneration: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self),
            slotSequence: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
            payloadLength: Int(bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
            route: ForwardRoute(
                originNode: bytes.loadUnaligned(fromByteOffset: 24, as: UInt16.self),
                originReactor: bytes.loadUnaligned(fromByteOffset: 26, as: UInt16.self),
                shard: bytes.loadUnaligned(fromByteOffset: 28, as: UInt32.self),
                ticket: bytes.loadUnaligned(fromByteOffset: 32, as: UInt64.self)),
            hops: bytes.loadUnaligned(fromByteOffset: 2, as: UInt8.self),
            flags: bytes.loadUnaligned(fromByteOffset: 3, as: UInt8.self)
        )
    }
}

/// Where a record that crosses nodes comes from and what it is for.
/// `originNode` is the receiving cluster loop's own number for the peer that
/// sent the request (its peer table, never sent on the wire as meaningful
/// to the other side); `originReactor` the reactor on the origin node whose
/// connection waits; `shard` the key's shard, looked up by the origin;
/// `ticket` the origin loop's number for the request, unique among its
/// requests in flight (the parts of one MSET/DEL/EXISTS share a reply slot,
/// so the slot alone cannot tell their replies apart).
struct ForwardRoute: Equatable {
    var originNode: UInt16
    var originReactor: UInt16
    var shard: UInt32
    var ticket: UInt64 = 0

    /// A record between two reactors of one node.
    static let local = ForwardRoute(originNode: UInt16.max, originReactor: UInt16.max, shard: UInt32.max)
}

/// Record flags in the ring: a payload too large for the ring travels as a
/// pointer to a heap copy, which the consumer frees.
enum RecordFlags {
    static let inline: UInt32 = 0
    static let indirect: UInt32 = 1
}

/// The protocol a connection speaks, fixed by its first byte (and HELLO).
enum WireKind: UInt8 {
    case resp2 = 0
    case resp3 = 1
    case binary = 2
}
