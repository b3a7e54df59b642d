import AegisStore

/// Lease messages share the version-1 frame of `MessageCodec` (length
/// prefix, version, type, placement parameters, sender, payload, 32-byte
/// tag) with type bytes of their own, so one link and one authenticator
/// carry both and the driver routes a frame by its type byte
/// (`LeaseCodec.isLeaseFrame`). All integers big-endian.
///
/// Every message is batched per node pair: one request carries every shard
/// the sender asks this peer about in one tick, one reply answers all of them.
///
///     request = round:u64 life:u64 durationMs:u32 count:u16 (shard:u32 term:u32 lastTerm:u32 lastSeq:u64)×count
///     reply   = round:u64 life:u64 count:u16 (shard:u32 term:u32 verdict:u8 voterTerm:u32 grantedTerm:u32)×count
///     requestWithCopyState = as request, each ask followed by copy:u8
///         (bit 0: the requester's copy of the shard may have a hole; the
///         other bits are 0)
///
/// `requestWithCopyState` is a type of its own because 0.2.0 decodes a
/// request only when the frame ends after the last ask: a byte appended to
/// `request` would make every ask malformed there. A node sends it only to
/// peers that announce they decode it (the server's `PeerAnnouncement`
/// capabilities), and `request` to the others; it decodes both. An ask that
/// came as `request` says nothing of the copy (`mayHaveHole` false).
///
/// `requestWithConfig` and `replyWithConfig` carry each shard's replica
/// configuration (docs/shard-movement.md, "The replica configuration"):
///
///     requestWithConfig = as requestWithCopyState, each ask followed by config
///     replyWithConfig   = as reply, each answer followed by config
///     config = epoch:u32, and when epoch > 0: voters:u8 node×voters
///              outgoing:u8 node×outgoing   (outgoing 0: not a joint config)
///     node   = u8 length + UTF-8 name, as the sender's
///
/// An ask's config is the requester's (epoch 0: it has none); an answer
/// carries the voter's only with the verdict `configStale` (and epoch 0
/// otherwise), which exists in this reply type alone. They go only to peers
/// that announce they decode them; a voter that has a config refuses an ask
/// in the older forms, which cannot say which voters the asker counts.
///
/// The hand-off of a lease (docs/shard-movement.md §4), to the same peers:
///
///     handOffPrepare = count:u16 (shard:u32 term:u32)×count
///         holder H → the node D it hands the shards to; term = H's held term T
///     handOffRelease = count:u16 (shard:u32 term:u32 to:node lastTerm:u32 lastSeq:u64)×count
///         H → every other voter, D included: H has let go of term T, and D holds H's
///         writes through (lastTerm, lastSeq)
///
/// D's asks for T + 1 set bit 1 of the copy byte (`transfer`, defined in
/// `requestWithConfig` only): a voter promised to another node answers
/// `prepared` (11, in `replyWithConfig` only) instead of refusing, and turns
/// that into a grant when H's release reaches it.
///
/// A voter that started with an empty data_dir answers an election ask
/// `grantedBlank` (12, in `replyWithConfig` only) until a complete copy of
/// the shard reaches it: a grant that counts only beside a majority of other
/// grants or with every voter's.
///
/// `life` names the requester's process life and `round` its request within
/// that life: a reply is matched to the request it answers by both, so a
/// reply delayed across the requester's restart is never counted as a grant
/// for a request sent later (which would date the lease too late).
public enum LeaseMessageType: UInt8, Sendable, CaseIterable {
    case request = 16
    case reply = 17
    case requestWithCopyState = 18
    case requestWithConfig = 19
    case replyWithConfig = 20
    case handOffPrepare = 21
    case handOffRelease = 22
}

/// One shard in a request: "grant me (or renew) the lease for `term`".
public struct LeaseAsk: Sendable, Equatable {
    public var shard: UInt32
    public var term: UInt32
    /// The requester's newest (term, seq) for the shard: voters refuse a
    /// candidate older than themselves (Raft's election restriction).
    public var lastVersion: EntryVersion
    /// The requester restarted with its log and has not had a complete copy
    /// of the shard since: its copy holds the writes it made as holder, not
    /// those it received as a follower, so `lastVersion` may claim writes it
    /// lacks. A voter whose own copy is whole refuses it (`LeaseMachine`).
    public var mayHaveHole: Bool
    /// The requester's replica configuration of the shard, nil when it has
    /// none (or the ask came in a form that cannot carry one).
    public var config: ShardConfig?
    /// The holder handed the shard to the requester (`handOffPrepare`): a
    /// voter promised to another node prepares a grant instead of refusing.
    /// Carried by `requestWithConfig` only.
    public var transfer: Bool

    public init(shard: UInt32, term: UInt32, lastVersion: EntryVersion, mayHaveHole: Bool = false,
                config: ShardConfig? = nil, transfer: Bool = false) {
        self.shard = shard
        self.term = term
        self.lastVersion = lastVersion
        self.mayHaveHole = mayHaveHole
        self.config = config
        self.transfer = transfer
    }
}

extension LeaseAsk {
    static let mayHaveHoleBit: UInt8 = 1 << 0
    static let transferBit: UInt8 = 1 << 1
}

/// One shard of a `handOffPrepare`: the holder's held term.
public struct HandOffPrepare: Sendable, Equatable {
    public var shard: UInt32
    public var term: UInt32

    public init(shard: UInt32, term: UInt32) {
        self.shard = shard
        self.term = term
    }
}

/// One shard of a `handOffRelease`.
public struct HandOffRelease: Sendable, Equatable {
    public var shard: UInt32
    /// The term the holder let go of.
    public var term: UInt32
    /// The node it handed the shard to.
    public var to: NodeID
    /// The holder's newest write, which `to` holds.
    public var lastVersion: EntryVersion

    public init(shard: UInt32, term: UInt32, to: NodeID, lastVersion: EntryVersion) {
        self.shard = shard
        self.term = term
        self.to = to
        self.lastVersion = lastVersion
    }
}

/// Why a voter refused, or that it granted.
public enum LeaseVerdict: UInt8, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    case granted = 0
    /// The request's term is below the voter's: a replay or an old holder.
    case staleTerm = 1
    /// The voter's grant to another node has not expired on its own clock.
    case leaseHeld = 2
    /// The voter already voted for another node in this term.
    case votedOther = 3
    /// The candidate's last (term, seq) is older than the voter's, or its
    /// copy may have a hole while the voter's is whole (not a verdict of its
    /// own: 0.2.0 refuses a reply with a verdict byte it does not know).
    case candidateBehind = 4
    /// The voter restarted with a wiped data directory: it has forgotten its
    /// promises and votes for nobody until it is refilled.
    case emptyLearner = 5
    /// The voter is not a replica of the shard in its placement.
    case notReplica = 6
    /// The voter restarted within one lease (plus margin): it may have granted
    /// a lease before that it no longer remembers.
    case restarting = 7
    /// The requested duration is longer than the voter's own: its restart
    /// quiet period would not cover such a grant.
    case durationTooLong = 8
    /// The voter does not enforce leases (a member of a release before
    /// leases is in the cluster): it accepts writes for the shards the map
    /// makes it primary of without a lease, so a lease it granted could be
    /// held while it writes the same shard.
    case notEnforcing = 9
    /// The voter holds a newer replica configuration of the shard than the
    /// asker (a higher epoch), or a different one of the same epoch:
    /// majorities counted over the asker's may not intersect those of the
    /// voter's. The answer carries the voter's config, which the asker adopts
    /// if newer. Sent only in `replyWithConfig`.
    case configStale = 10
    /// A transfer ask (`LeaseAsk.transfer`) from the node the holder hands the
    /// shard to: the voter persisted its vote for the asked term and keeps
    /// its promise to the holder; the holder's release makes it a grant.
    /// Sent only in `replyWithConfig`.
    case prepared = 11
    /// A grant from a voter that started with an empty data_dir and has had
    /// no complete copy of the shard since (`ShardLease.blank`): a first
    /// start, or a data_dir removed whole, which looks the same. Given with
    /// no copy to check the candidate against, and perhaps a second vote in
    /// a term its earlier life voted in, it counts only beside a majority of
    /// other grants or with every voter's (`LeaseMachine.wins`). Persisted
    /// and promised like a grant. Sent only in `replyWithConfig`; the older
    /// forms get `emptyLearner` instead.
    case grantedBlank = 12

    public var description: String {
        switch self {
        case .granted: "granted"
        case .staleTerm: "stale_term"
        case .leaseHeld: "lease_held"
        case .votedOther: "voted_other"
        case .candidateBehind: "candidate_behind"
        case .emptyLearner: "empty_learner"
        case .notReplica: "not_replica"
        case .restarting: "restarting"
        case .durationTooLong: "duration_too_long"
        case .notEnforcing: "not_enforcing"
        case .configStale: "config_stale"
        case .prepared: "prepared"
        case .grantedBlank: "granted_blank"
        }
    }

    /// A grant the voter persisted and promised (`granted`, `grantedBlank`).
    public var grants: Bool { self == .granted || self == .grantedBlank }
}

public struct LeaseAnswer: Sendable, Equatable {
    public var shard: UInt32
    /// The term asked for.
    public var term: UInt32
    public var verdict: LeaseVerdict
    /// The voter's term for the shard: a requester that holds no lease and
    /// is below it adopts it, so that its next campaign goes above.
    public var voterTerm: UInt32
    /// The highest term the voter knows was granted to a peer or won (not a
    /// term it only campaigned for): a holder below it demotes itself. A
    /// candidate whose campaign failed thus never deposes a live holder.
    public var grantedTerm: UInt32
    /// With `configStale` only: the voter's newer configuration.
    public var config: ShardConfig?

    public init(shard: UInt32, term: UInt32, verdict: LeaseVerdict, voterTerm: UInt32, grantedTerm: UInt32? = nil,
                config: ShardConfig? = nil) {
        self.shard = shard
        self.term = term
        self.verdict = verdict
        self.voterTerm = voterTerm
        self.grantedTerm = grantedTerm ?? voterTerm
        self.config = config
    }
}

public enum LeasePayload: Sendable, Equatable {
    /// The form 0.2.0 decodes: each ask's `mayHaveHole` is not sent, and
    /// decodes as false.
    case request(round: UInt64, life: UInt64, durationMs: UInt32, asks: [LeaseAsk])
    case reply(round: UInt64, life: UInt64, answers: [LeaseAnswer])
    /// A request whose asks carry `mayHaveHole`, for peers that decode it.
    case requestWithCopyState(round: UInt64, life: UInt64, durationMs: UInt32, asks: [LeaseAsk])
    /// A request whose asks carry the copy state and the requester's config.
    case requestWithConfig(round: UInt64, life: UInt64, durationMs: UInt32, asks: [LeaseAsk])
    /// The answer to `requestWithConfig`: `configStale` answers carry the voter's config.
    case replyWithConfig(round: UInt64, life: UInt64, answers: [LeaseAnswer])
    case handOffPrepare([HandOffPrepare])
    case handOffRelease([HandOffRelease])

    /// A request's asks in any form; nil for a reply.
    public var asks: [LeaseAsk]? {
        switch self {
        case let .request(_, _, _, asks), let .requestWithCopyState(_, _, _, asks), let .requestWithConfig(_, _, _, asks): asks
        case .reply, .replyWithConfig, .handOffPrepare, .handOffRelease: nil
        }
    }

    /// A reply's answers in either form; nil for a request.
    public var answers: [LeaseAnswer]? {
        switch self {
        case let .reply(_, _, answers), let .replyWithConfig(_, _, answers): answers
        case .request, .requestWithCopyState, .requestWithConfig, .handOffPrepare, .handOffRelease: nil
        }
    }

    public var type: LeaseMessageType {
        switch self {
        case .request: .request
        case .reply: .reply
        case .requestWithCopyState: .requestWithCopyState
        case .requestWithConfig: .requestWithConfig
        case .replyWithConfig: .replyWithConfig
        case .handOffPrepare: .handOffPrepare
        case .handOffRelease: .handOffRelease
        }
    }
}

public struct LeaseMessage: Sendable, Equatable {
    public var sender: NodeID
    public var payload: LeasePayload

    public init(sender: NodeID, payload: LeasePayload) {
        self.sender = sender
        self.payload = payload
    }
}

public enum LeaseDecodeResult: Sendable, Equatable {
    case message(LeaseMessage)
    case dropped(DropReason)
}

public enum LeaseCodec {
    static let typeByteIndex = MessageCodec.lengthPrefixBytes + 1

    /// Whether a whole frame from a peer link is a lease message (and goes to
    /// the lease machine) rather than a membership one.
    public static func isLeaseFrame(_ frame: [UInt8]) -> Bool {
        frame.count > typeByteIndex && LeaseMessageType(rawValue: frame[typeByteIndex]) != nil
    }

    public static func encode(_ message: LeaseMessage, parameters: ClusterParameters,
                              authenticator: some MessageAuthenticator) -> [UInt8] {
        var writer = ByteWriter()
        writer.u32(0)
        writer.u8(MessageCodec.version)
        writer.u8(message.payload.type.rawValue)
        writer.u32(parameters.numShards)
        writer.u32(parameters.virtualNodes)
        writer.u32(parameters.replicationFactor)
        writer.string(message.sender.name)
        // The gossip address slot of the shared header: lease replies go to the
        // sender by node ID, so it stays empty.
        writer.string("")
        switch message.payload {
        case let .request(round, life, durationMs, asks), let .requestWithCopyState(round, life, durationMs, asks),
             let .requestWithConfig(round, life, durationMs, asks):
            precondition(asks.count <= Int(UInt16.max), "one request per tick per peer holds at most 65535 shards")
            let withConfig = message.payload.type == .requestWithConfig
            let withCopyState = withConfig || message.payload.type == .requestWithCopyState
            writer.u64(round)
            writer.u64(life)
            writer.u32(durationMs)
            writer.u16(UInt16(asks.count))
            for ask in asks {
                writer.u32(ask.shard)
                writer.u32(ask.term)
                writer.u32(ask.lastVersion.term)
                writer.u64(ask.lastVersion.seq)
                precondition(!ask.transfer || withConfig, "a transfer ask goes only in requestWithConfig")
                if withCopyState {
                    writer.u8((ask.mayHaveHole ? LeaseAsk.mayHaveHoleBit : 0) | (ask.transfer ? LeaseAsk.transferBit : 0))
                }
                if withConfig { writer.config(ask.config) }
            }
        case let .reply(round, life, answers), let .replyWithConfig(round, life, answers):
            precondition(answers.count <= Int(UInt16.max), "a reply answers one request")
            writer.u64(round)
            writer.u64(life)
            writer.u16(UInt16(answers.count))
            for answer in answers {
                writer.u32(answer.shard)
                writer.u32(answer.term)
                writer.u8(answer.verdict.rawValue)
                writer.u32(answer.voterTerm)
                writer.u32(answer.grantedTerm)
                if message.payload.type == .replyWithConfig { writer.config(answer.config) }
            }
        case let .handOffPrepare(shards):
            precondition(!shards.isEmpty && shards.count <= Int(UInt16.max), "a hand-off names 1 to 65535 shards")
            writer.u16(UInt16(shards.count))
            for item in shards {
                writer.u32(item.shard)
                writer.u32(item.term)
            }
        case let .handOffRelease(releases):
            precondition(!releases.isEmpty && releases.count <= Int(UInt16.max), "a release names 1 to 65535 shards")
            writer.u16(UInt16(releases.count))
            for item in releases {
                writer.u32(item.shard)
                writer.u32(item.term)
                writer.string(item.to.name)
                writer.u32(item.lastVersion.term)
                writer.u64(item.lastVersion.seq)
            }
        }
        let bodyLength = writer.bytes.count - MessageCodec.lengthPrefixBytes + MessageCodec.tagBytes
        writer.patchU32(at: 0, UInt32(bodyLength))
        let tag = authenticator.tag(for: writer.bytes[...])
        precondition(tag.count == MessageCodec.tagBytes, "a MessageAuthenticator returns \(MessageCodec.tagBytes) bytes")
        writer.bytes.append(contentsOf: tag)
        return writer.bytes
    }

    /// Never traps: any byte string gives a message or a drop reason. Beyond
    /// the layout it refuses shards outside `0..<numShards`, a shard named
    /// twice in one message, and term 0 (terms start at 1).
    public static func decode(frame: [UInt8], parameters: ClusterParameters,
                              authenticator: some MessageAuthenticator) -> LeaseDecodeResult {
        let prefix = MessageCodec.lengthPrefixBytes
        guard frame.count >= prefix + 1 else { return .dropped(.malformed) }
        guard frame[prefix] == MessageCodec.version else { return .dropped(.unknownVersion) }
        guard let length = MessageCodec.bodyLength(prefix: frame.prefix(prefix)),
              length + prefix == frame.count else { return .dropped(.malformed) }
        let signedEnd = frame.count - MessageCodec.tagBytes
        let expected = authenticator.tag(for: frame[0..<signedEnd])
        guard MessageCodec.constantTimeEqual(expected, frame[signedEnd...]) else { return .dropped(.badMAC) }

        var reader = ByteReader(bytes: frame, index: prefix + 1, end: signedEnd)
        guard let typeByte = reader.u8(), let numShards = reader.u32(), let virtualNodes = reader.u32(),
              let replicationFactor = reader.u32() else { return .dropped(.malformed) }
        let theirs = ClusterParameters(numShards: numShards, virtualNodes: virtualNodes,
                                       replicationFactor: replicationFactor)
        guard theirs == parameters else { return .dropped(.clusterMismatch) }
        guard let type = LeaseMessageType(rawValue: typeByte), let sender = reader.nodeID(),
              let address = reader.string(), address.isEmpty,
              let payload = reader.leasePayload(type, numShards: numShards), reader.isAtEnd
        else { return .dropped(.malformed) }
        return .message(LeaseMessage(sender: sender, payload: payload))
    }
}

extension ByteReader {
    mutating func leasePayload(_ type: LeaseMessageType, numShards: UInt32) -> LeasePayload? {
        if type == .handOffPrepare || type == .handOffRelease { return handOffPayload(type, numShards: numShards) }
        guard let round = u64(), let life = u64() else { return nil }
        var seen = Set<UInt32>()
        switch type {
        case .handOffPrepare, .handOffRelease:
            return nil
        case .request, .requestWithCopyState, .requestWithConfig:
            let withConfig = type == .requestWithConfig
            let withCopyState = withConfig || type == .requestWithCopyState
            guard let durationMs = u32(), durationMs > 0, let count = u16(), count > 0 else { return nil }
            var asks: [LeaseAsk] = []
            asks.reserveCapacity(min(Int(count), 256))
            for _ in 0..<count {
                guard let shard = u32(), shard < numShards, seen.insert(shard).inserted,
                      let term = u32(), term > 0, let lastTerm = u32(), let lastSeq = u64() else { return nil }
                var mayHaveHole = false
                var transfer = false
                if withCopyState {
                    // Bits no release defines yet are refused, like an unknown verdict.
                    // Bit 1 (transfer) exists in requestWithConfig only.
                    let known = LeaseAsk.mayHaveHoleBit | (withConfig ? LeaseAsk.transferBit : 0)
                    guard let copy = u8(), copy & ~known == 0 else { return nil }
                    mayHaveHole = copy & LeaseAsk.mayHaveHoleBit != 0
                    transfer = copy & LeaseAsk.transferBit != 0
                }
                var config: ShardConfig?
                if withConfig {
                    guard let decoded = shardConfig() else { return nil }
                    config = decoded
                }
                asks.append(LeaseAsk(shard: shard, term: term, lastVersion: EntryVersion(term: lastTerm, seq: lastSeq),
                                     mayHaveHole: mayHaveHole, config: config, transfer: transfer))
            }
            switch type {
            case .requestWithConfig: return .requestWithConfig(round: round, life: life, durationMs: durationMs, asks: asks)
            case .requestWithCopyState: return .requestWithCopyState(round: round, life: life, durationMs: durationMs, asks: asks)
            default: return .request(round: round, life: life, durationMs: durationMs, asks: asks)
            }
        case .reply, .replyWithConfig:
            let withConfig = type == .replyWithConfig
            guard let count = u16(), count > 0 else { return nil }
            var answers: [LeaseAnswer] = []
            answers.reserveCapacity(min(Int(count), 256))
            for _ in 0..<count {
                guard let shard = u32(), shard < numShards, seen.insert(shard).inserted,
                      let term = u32(), term > 0, let verdictByte = u8(),
                      let verdict = LeaseVerdict(rawValue: verdictByte), let voterTerm = u32(),
                      let grantedTerm = u32(), grantedTerm <= voterTerm else { return nil }
                var config: ShardConfig?
                if withConfig {
                    // A config comes with `configStale` and only with it; the
                    // older reply has no room for one, so no such verdict.
                    guard let decoded = shardConfig(), (decoded != nil) == (verdict == .configStale) else { return nil }
                    config = decoded
                } else if verdict == .configStale || verdict == .prepared || verdict == .grantedBlank {
                    return nil
                }
                answers.append(LeaseAnswer(shard: shard, term: term, verdict: verdict, voterTerm: voterTerm,
                                           grantedTerm: grantedTerm, config: config))
            }
            return withConfig ? .replyWithConfig(round: round, life: life, answers: answers)
                : .reply(round: round, life: life, answers: answers)
        }
    }

    /// Hand-off frames: at least one shard, each in range and named once,
    /// terms above 0.
    mutating func handOffPayload(_ type: LeaseMessageType, numShards: UInt32) -> LeasePayload? {
        guard let count = u16(), count > 0 else { return nil }
        var seen = Set<UInt32>()
        var prepares: [HandOffPrepare] = []
        var releases: [HandOffRelease] = []
        for _ in 0..<count {
            guard let shard = u32(), shard < numShards, seen.insert(shard).inserted, let term = u32(), term > 0 else { return nil }
            if type == .handOffPrepare {
                prepares.append(HandOffPrepare(shard: shard, term: term))
            } else {
                guard let to = nodeID(), let lastTerm = u32(), let lastSeq = u64() else { return nil }
                releases.append(HandOffRelease(shard: shard, term: term, to: to, lastVersion: EntryVersion(term: lastTerm, seq: lastSeq)))
            }
        }
        return type == .handOffPrepare ? .handOffPrepare(prepares) : .handOffRelease(releases)
    }

    /// A config field: `.some(nil)` for epoch 0 (none), nil when malformed
    /// (a set empty, too long or naming a node twice: `ShardConfig.init`).
    mutating func shardConfig() -> ShardConfig?? {
        guard let epoch = u32() else { return nil }
        if epoch == 0 { return .some(nil) }
        guard let voters = nodeIDs(), let outgoingCount = u8() else { return nil }
        var outgoing: [NodeID]?
        if outgoingCount > 0 {
            guard let nodes = nodeIDs(count: outgoingCount) else { return nil }
            outgoing = nodes
        }
        guard let config = ShardConfig(epoch: epoch, voters: voters, outgoing: outgoing) else { return nil }
        return .some(config)
    }

    private mutating func nodeIDs(count known: UInt8? = nil) -> [NodeID]? {
        guard let count = known ?? u8() else { return nil }
        var nodes: [NodeID] = []
        for _ in 0..<count {
            guard let node = nodeID() else { return nil }
            nodes.append(node)
        }
        return nodes
    }
}

extension ByteWriter {
    /// See `LeaseCodec`: epoch 0 alone for no config.
    mutating func config(_ config: ShardConfig?) {
        guard let config else {
            u32(0)
            return
        }
        precondition(config.voters.count <= Int(UInt8.max) && (config.outgoing?.count ?? 0) <= Int(UInt8.max),
                     "a replica set names at most 255 nodes")
        u32(config.epoch)
        u8(UInt8(config.voters.count))
        for node in config.voters { string(node.name) }
        u8(UInt8(config.outgoing?.count ?? 0))
        for node in config.outgoing ?? [] { string(node.name) }
    }
}
