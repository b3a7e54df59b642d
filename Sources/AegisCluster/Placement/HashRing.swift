import AegisStore

/// The consistent-hash ring: `virtualNodes` points per member on the 64-bit
/// circle, sorted. docs/placement.md fixes every byte that goes into a point,
/// so that another implementation computes the same ring.
///
/// Invariants (checked at construction): `members` is sorted in NodeID byte
/// order without duplicates; `points` is sorted ascending and, where two
/// points are equal, the lower member index comes first, so that equal points
/// are won by the member that sorts first in byte order.
public struct HashRing: Sendable {
    /// The members, in NodeID byte order; a point's owner is an index into it.
    public let members: [NodeID]
    public let virtualNodes: Int
    /// Ring positions, ascending.
    public let points: [UInt64]
    /// `ownerIndex[i]` is the index into `members` of the node `points[i]` belongs to.
    public let ownerIndex: [Int]

    /// Duplicates in `members` count once and their order does not matter.
    /// `virtualNodes` must be at least 1 (ShardMap checks it first).
    public init(members: some Sequence<NodeID>, virtualNodes: Int) {
        self.init(sortedMembers: Set(members).sorted(), virtualNodes: virtualNodes, pointOf: Self.nodePoint)
    }

    /// `pointOf` is `nodePoint` except in tests, which force equal points to
    /// check the tie-break.
    init(sortedMembers members: [NodeID], virtualNodes: Int, pointOf: (NodeID, Int) -> UInt64) {
        precondition(virtualNodes >= 1, "a ring needs at least one point per node")
        precondition(zip(members, members.dropFirst()).allSatisfy { $0.0 < $0.1 },
                     "members must be sorted in byte order without duplicates")
        var entries: [(point: UInt64, owner: Int)] = []
        entries.reserveCapacity(members.count * virtualNodes)
        for (owner, node) in members.enumerated() {
            for vnode in 0..<virtualNodes {
                entries.append((pointOf(node, vnode), owner))
            }
        }
        // Owner index order is NodeID byte order, so this is the documented
        // tie-break: equal points are ordered by the member's name bytes.
        entries.sort { $0.point != $1.point ? $0.point < $1.point : $0.owner < $1.owner }
        self.members = members
        self.virtualNodes = virtualNodes
        self.points = entries.map(\.point)
        self.ownerIndex = entries.map(\.owner)
    }

    /// The index into `points` of the first point at or after `position`,
    /// wrapping to 0 past the last point: "first clockwise".
    public func firstPointIndex(atOrAfter position: UInt64) -> Int {
        var low = 0
        var high = points.count
        while low < high {
            let mid = (low + high) / 2
            if points[mid] < position { low = mid + 1 } else { high = mid }
        }
        return low == points.count ? 0 : low
    }

    /// Up to `count` distinct members met walking clockwise from `position`
    /// (fewer when the ring has fewer members), as indices into `members`;
    /// the first is the owner of `position`.
    public func distinctOwners(from position: UInt64, count: Int) -> [Int] {
        let wanted = min(count, members.count)
        var owners: [Int] = []
        owners.reserveCapacity(wanted)
        guard wanted > 0 else { return owners }
        var index = firstPointIndex(atOrAfter: position)
        // Every member has a point, so one lap finds all `wanted`.
        for _ in 0..<points.count {
            let owner = ownerIndex[index]
            if !owners.contains(owner) {
                owners.append(owner)
                if owners.count == wanted { break }
            }
            index = index + 1 == points.count ? 0 : index + 1
        }
        assert(owners.count == wanted, "one lap of the ring meets every member")
        return owners
    }

    /// The bytes hashed for a virtual node's point: the node id's UTF-8
    /// bytes, "#" (0x23), then the virtual node index in decimal ASCII
    /// without leading zeros. The index has no "#", so the last "#" splits
    /// any such string in exactly one way, and distinct (node, index) pairs
    /// never share input bytes.
    public static func nodePointBytes(_ node: NodeID, virtualNode: Int) -> [UInt8] {
        precondition(virtualNode >= 0, "virtual node indices start at 0")
        return Array(node.name.utf8) + [UInt8(ascii: "#")] + Array(String(virtualNode).utf8)
    }

    /// XXH64 (seed 0) of `nodePointBytes`: KeyHash, the product's key hash.
    public static func nodePoint(_ node: NodeID, virtualNode: Int) -> UInt64 {
        nodePointBytes(node, virtualNode: virtualNode).withUnsafeBytes { KeyHash.hash($0) }
    }

    /// Shard `shard`'s position: floor(shard × 2^64 / numShards). Evenly
    /// spaced rather than hashed, so shard points never bunch up: an arc
    /// holds its length's worth of shards to within one. That helps only
    /// where arcs are long against the spacing; perf/README.md, "aegiskv-placement",
    /// measures both choices.
    public static func shardPoint(_ shard: Int, numShards: Int) -> UInt64 {
        precondition(numShards >= 1 && (0..<numShards).contains(shard), "shard \(shard) outside 0..<\(numShards)")
        // shard < numShards, so the quotient fits in 64 bits.
        return UInt64(numShards).dividingFullWidth((high: UInt64(shard), low: 0)).quotient
    }
}
