import AegisCluster
import AegisProtocol
import Synchronization

/// The shard map as reactors use it: which shards this node is primary for
/// and, for the others, the primary's client address (for REDIRECT and
/// TRYAGAIN texts). Immutable; the cluster loop builds a new one whenever
/// the alive member set changes.
public final class ClusterRouting: Sendable {
    public let version: UInt64
    public let map: ShardMap
    public let selfID: NodeID
    /// Per shard: the node the lease machine believes holds the shard's lease
    /// (empty without leases). Where it names one of the shard's owners, that
    /// node is the primary writes go to, not the map's first owner: after a
    /// failover the old primary comes back first in the map, but the lease
    /// stays with the node that won it.
    let leaseHolders: [NodeID?]
    /// Per shard: true when this node is its primary.
    let primaryHere: [Bool]
    /// Per shard: its owners other than the primary, in ring order (those
    /// that take replication).
    let followers: [[NodeID]]
    /// Per shard: the primary's node id and client address ("" when unknown).
    let primaryName: [String]
    let primaryClientAddress: [String]
    public let shardsPrimaryHere: Int

    /// - Parameter withoutReplication: members left out of every shard's
    ///   followers, so no replication, stream or read probe goes to them: a
    ///   release before leases (0.1.0) has no replication either, and closes
    ///   a link that carries a record kind it does not know.
    init(version: UInt64, map: ShardMap, selfID: NodeID, clientAddressOf: [String: String], leaseHolders: [NodeID?] = [],
         withoutReplication: Set<String> = []) {
        self.version = version
        self.map = map
        self.selfID = selfID
        self.leaseHolders = leaseHolders
        var here: [Bool] = []
        var names: [String] = []
        var addresses: [String] = []
        var followers: [[NodeID]] = []
        here.reserveCapacity(map.numShards)
        for shard in 0..<map.numShards {
            let owners = map.owners(ofShard: shard)
            var primary = map.primary(ofShard: shard)
            if shard < leaseHolders.count, let holder = leaseHolders[shard], owners.contains(holder) { primary = holder }
            here.append(primary == selfID)
            names.append(primary.name)
            addresses.append(clientAddressOf[primary.name] ?? "")
            followers.append(owners.filter { $0 != primary && !withoutReplication.contains($0.name) })
        }
        self.followers = followers
        primaryHere = here
        primaryName = names
        primaryClientAddress = addresses
        shardsPrimaryHere = here.count { $0 }
    }

    /// True when the shard's primary is the lease holder this node knows
    /// of, false when it is only the map's first owner (no holder known, or
    /// one outside this node's map, which a node that has not met every
    /// member yet may not have).
    func primaryIsKnownHolder(_ shard: Int) -> Bool {
        shard < leaseHolders.count && leaseHolders[shard]?.name == primaryName[shard]
    }

    /// Same primaries, addresses, followers and knowledge of the holders:
    /// nothing a reactor or the relay acts on differs. A holder learned that
    /// is the map's guess already changes no primary, but it lets a waiting
    /// request go on (and a forwarded one be relayed) there.
    func routesAlike(_ other: ClusterRouting) -> Bool {
        map == other.map && primaryName == other.primaryName && primaryClientAddress == other.primaryClientAddress
            && followers == other.followers
            && (0..<map.numShards).allSatisfy { primaryIsKnownHolder($0) == other.primaryIsKnownHolder($0) }
    }

    public var digestHex: String {
        let hex = String(map.digest, radix: 16)
        return String(repeating: "0", count: max(0, 16 - hex.count)) + hex
    }
}

/// Where reactors pick up the current routing. Why a swapped snapshot and
/// not a record into each reactor's ring: a reactor needs the whole map at
/// once, not a stream of changes, and an unchanged map costs it one atomic
/// load per loop iteration; the lock is taken only when the version moved.
public final class RoutingBoard: Sendable {
    private let current = Mutex<ClusterRouting?>(nil)
    private let published = Atomic<UInt64>(0)

    public init() {}

    func publish(_ routing: ClusterRouting) {
        current.withLock { $0 = routing }
        published.store(routing.version, ordering: .releasing)
    }

    /// 0 until the first map.
    @inline(__always) var version: UInt64 { published.load(ordering: .acquiring) }

    public var routing: ClusterRouting? { current.withLock { $0 } }
}

/// Replies made where a request cannot run: on a node that is not the
/// shard's primary in its own view, and when forwarding fails. Both
/// protocols; the reactors and the cluster loop share them.
enum ForwardReplies {
    /// The request id of a binary request frame (after its length prefix).
    static func binaryRequestID(_ request: UnsafeRawBufferPointer) -> UInt64 {
        request.count >= 15 ? request.loadBigEndian(fromByteOffset: 7, as: UInt64.self) : 0
    }

    /// A forwarded request for a shard this node is not the primary of,
    /// that it cannot pass on (no holder known elsewhere, or passed on
    /// `Reactor.maxHops` times already: `Reactor.passOnIfNotPrimary`): the
    /// client retries.
    static func notOwner(wire: WireKind, request: UnsafeRawBufferPointer, shard: Int, owner: String, ownerAddress: String, into out: WireBuffer) {
        switch wire {
        case .binary:
            BinaryResponseWriter.writeRedirect(requestID: binaryRequestID(request), address: ownerAddress, into: out)
        case .resp2, .resp3:
            let at = ownerAddress.isEmpty ? "" : " (\(ownerAddress))"
            RESPWriter.error(string: "TRYAGAIN shard \(shard) is owned by \(owner)\(at) in the view of the node that got it; retry", into: out)
        }
    }

    /// A request for another node reached a reactor after the node's
    /// cluster loop stopped: it was sent nowhere, so the client may retry
    /// it on another node (TRYAGAIN, as a refusal for a shard changing
    /// hands), where a forwarding that failed in flight may have run.
    static func stopping(wire: WireKind, request: UnsafeRawBufferPointer, into out: WireBuffer) {
        error(wire: wire, request: request, text: "TRYAGAIN this node is stopping and forwards no more requests; retry on another node", into: out)
    }

    /// The request was never sent (no link to the peer that routing names):
    /// it ran nowhere, so unlike `failed` the client may simply retry it,
    /// and does by the same TRYAGAIN as for a shard changing hands.
    static func notSent(wire: WireKind, request: UnsafeRawBufferPointer, why: String, into out: WireBuffer) {
        error(wire: wire, request: request, text: notSentText(why), into: out)
    }

    static func notSentText(_ why: String) -> String { "TRYAGAIN " + why + ", the request was not sent; retry" }

    /// `text` as the error reply in the request's protocol: a RESP error,
    /// or a binary ERROR status carrying it under the request's id.
    static func error(wire: WireKind, request: UnsafeRawBufferPointer, text: String, into out: WireBuffer) {
        switch wire {
        case .binary:
            BinaryResponseWriter.write(status: .error, requestID: binaryRequestID(request), errorText: text, into: out)
        case .resp2, .resp3:
            RESPWriter.error(string: text, into: out)
        }
    }

    /// The forwarding failed; `why` names the peer and the cause. A RESP
    /// error needs its kind first (`ERR`); a binary ERROR status has none.
    static func failed(wire: WireKind, request: UnsafeRawBufferPointer, why: String, into out: WireBuffer) {
        error(wire: wire, request: request, text: (wire == .binary ? "" : "ERR ") + "forwarding failed: " + why, into: out)
    }
}
