import AegisStore

/// Why a shard map cannot be built; each names the bad input.
public enum PlacementError: Error, Equatable, Sendable, CustomStringConvertible {
    case noMembers
    case numShardsOutOfRange(Int)
    case virtualNodesOutOfRange(Int)
    case replicationFactorOutOfRange(Int)

    /// The same bounds as the configuration keys (KeyTable).
    public static let numShardsRange = 1...65536
    public static let virtualNodesRange = 1...65536
    public static let replicationFactorRange = 1...Int(Int32.max)

    public var description: String {
        switch self {
        case .noMembers: "a shard map needs at least one member"
        case .numShardsOutOfRange(let n): "num_shards \(n) is outside \(Self.numShardsRange)"
        case .virtualNodesOutOfRange(let n): "virtual_nodes \(n) is outside \(Self.virtualNodesRange)"
        case .replicationFactorOutOfRange(let n): "replication_factor \(n) is outside \(Self.replicationFactorRange)"
        }
    }
}

/// Which node holds each shard: a pure function of the member set and the
/// three placement settings, so every node that sees the same members
/// computes the same map (compare `digest`s to check). docs/placement.md
/// states the algorithm.
///
/// Shard s's owners are the first min(replicationFactor, members) distinct
/// nodes clockwise from shard s's point on the ring; the first is the
/// primary, the rest are its followers in ring order.
public struct ShardMap: Sendable, Equatable {
    public let members: [NodeID]
    public let numShards: Int
    public let virtualNodes: Int
    public let replicationFactor: Int
    /// min(replicationFactor, members.count): every shard has exactly this many owners.
    public let ownersPerShard: Int
    /// Shard s's owners are `ownerIndex[s * ownersPerShard ..< (s + 1) * ownersPerShard]`,
    /// indices into `members`, primary first.
    private let ownerIndex: [Int]
    private let memberIndex: [NodeID: Int]
    private let primaryShards: [[Int]]
    private let followerShards: [[Int]]
    /// XXH64 over every shard's owners; see `digestBytes`.
    public let digest: UInt64

    /// Duplicates in `members` count once; their order does not matter.
    public init(
        members: some Sequence<NodeID>, numShards: Int, virtualNodes: Int, replicationFactor: Int
    ) throws(PlacementError) {
        guard PlacementError.numShardsRange.contains(numShards) else { throw .numShardsOutOfRange(numShards) }
        guard PlacementError.virtualNodesRange.contains(virtualNodes) else { throw .virtualNodesOutOfRange(virtualNodes) }
        guard PlacementError.replicationFactorRange.contains(replicationFactor) else {
            throw .replicationFactorOutOfRange(replicationFactor)
        }
        let sorted = Set(members).sorted()
        guard !sorted.isEmpty else { throw .noMembers }

        let ring = HashRing(sortedMembers: sorted, virtualNodes: virtualNodes, pointOf: HashRing.nodePoint)
        let perShard = min(replicationFactor, sorted.count)
        var owners: [Int] = []
        owners.reserveCapacity(numShards * perShard)
        var primaryShards = [[Int]](repeating: [], count: sorted.count)
        var followerShards = [[Int]](repeating: [], count: sorted.count)
        for shard in 0..<numShards {
            let shardOwners = ring.distinctOwners(from: HashRing.shardPoint(shard, numShards: numShards), count: perShard)
            primaryShards[shardOwners[0]].append(shard)
            for follower in shardOwners.dropFirst() { followerShards[follower].append(shard) }
            owners.append(contentsOf: shardOwners)
        }

        self.members = sorted
        self.numShards = numShards
        self.virtualNodes = virtualNodes
        self.replicationFactor = replicationFactor
        self.ownersPerShard = perShard
        self.ownerIndex = owners
        self.memberIndex = Dictionary(uniqueKeysWithValues: sorted.enumerated().map { ($1, $0) })
        self.primaryShards = primaryShards
        self.followerShards = followerShards
        self.digest = Self.digestBytes(members: sorted, ownerIndex: owners, ownersPerShard: perShard)
            .withUnsafeBytes { KeyHash.hash($0) }
    }

    public func primary(ofShard shard: Int) -> NodeID {
        members[ownerIndex[ownerSlice(shard).lowerBound]]
    }

    /// The followers in ring order (the order a replacement primary would be picked in).
    public func followers(ofShard shard: Int) -> [NodeID] {
        ownerSlice(shard).dropFirst().map { members[ownerIndex[$0]] }
    }

    /// Primary first, then the followers.
    public func owners(ofShard shard: Int) -> [NodeID] {
        ownerSlice(shard).map { members[ownerIndex[$0]] }
    }

    /// Whether `node` is one of the shard's owners, without building the
    /// owner list (routing and leases ask this per read and per version note).
    public func isOwner(_ node: NodeID, ofShard shard: Int) -> Bool {
        guard let index = memberIndex[node] else { return false }
        return ownerSlice(shard).contains { ownerIndex[$0] == index }
    }

    /// Ascending; empty for a node that is not a member.
    public func shards(primaryOn node: NodeID) -> [Int] {
        memberIndex[node].map { primaryShards[$0] } ?? []
    }

    /// Ascending; empty for a node that is not a member.
    public func shards(followerOn node: NodeID) -> [Int] {
        memberIndex[node].map { followerShards[$0] } ?? []
    }

    /// The shard a key hashes into under this map (KeyHash, as on a single node).
    public func shard(ofKeyHash hash: UInt64) -> Int {
        KeyHash.shard(of: hash, shardCount: numShards)
    }

    /// What changed from `old` to `self`, shard by shard.
    public func changes(since old: ShardMap) -> ShardMapDiff {
        precondition(old.numShards == numShards, "maps with different num_shards do not describe the same shards")
        var primaryChanges: [ShardMapDiff.PrimaryChange] = []
        var ownerSetChanges: [Int] = []
        for shard in 0..<numShards {
            let before = old.primary(ofShard: shard)
            let after = primary(ofShard: shard)
            if before != after { primaryChanges.append(.init(shard: shard, from: before, to: after)) }
            if Set(old.owners(ofShard: shard)) != Set(owners(ofShard: shard)) { ownerSetChanges.append(shard) }
        }
        return ShardMapDiff(primaryChanges: primaryChanges, shardsWithOtherOwners: ownerSetChanges)
    }

    private func ownerSlice(_ shard: Int) -> Range<Int> {
        precondition((0..<numShards).contains(shard), "shard \(shard) outside 0..<\(numShards)")
        return shard * ownersPerShard ..< (shard + 1) * ownersPerShard
    }

    /// The digest's input: for each shard in ascending order, the shard
    /// number and the owner count, each as 4 bytes little-endian, then for
    /// each owner (primary first) its name's UTF-8 length as 1 byte (a
    /// NodeID has at most 255) and the name's bytes.
    static func digestBytes(members: [NodeID], ownerIndex: [Int], ownersPerShard: Int) -> [UInt8] {
        let names = members.map { Array($0.name.utf8) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ownerIndex.count * 8)
        for (shard, start) in stride(from: 0, to: ownerIndex.count, by: ownersPerShard).enumerated() {
            withUnsafeBytes(of: UInt32(shard).littleEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt32(ownersPerShard).littleEndian) { bytes.append(contentsOf: $0) }
            for owner in ownerIndex[start ..< start + ownersPerShard] {
                bytes.append(UInt8(names[owner].count))
                bytes.append(contentsOf: names[owner])
            }
        }
        return bytes
    }

    /// Equal when every shard has the same owners in the same order, as the
    /// digest sees it: the settings that produced them, and members that own
    /// nothing, aside.
    public static func == (lhs: ShardMap, rhs: ShardMap) -> Bool {
        lhs.numShards == rhs.numShards && lhs.ownersPerShard == rhs.ownersPerShard
            && (0..<lhs.numShards).allSatisfy { lhs.owners(ofShard: $0) == rhs.owners(ofShard: $0) }
    }
}

/// The difference between two shard maps over the same shards.
public struct ShardMapDiff: Sendable, Equatable {
    public struct PrimaryChange: Sendable, Equatable {
        public let shard: Int
        public let from: NodeID
        public let to: NodeID
    }

    /// Shards whose primary changed, ascending.
    public let primaryChanges: [PrimaryChange]
    /// Shards whose set of owners (primary and followers) changed, ascending.
    public let shardsWithOtherOwners: [Int]

    public var isEmpty: Bool { primaryChanges.isEmpty && shardsWithOtherOwners.isEmpty }
}
