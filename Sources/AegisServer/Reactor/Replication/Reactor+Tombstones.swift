import AegisCluster
import AegisStore

/// Which of this reactor's shards have followers in the current shard map.
/// A shard without followers needs no tombstones: no replica exists that an
/// older write could still reach, so "every replica acknowledged" holds at
/// once. Recomputed only when the routing version moves.
struct TombstoneNeeds {
    private(set) var routingVersion: UInt64 = 0
    private(set) var shardHasFollowers: [Bool] = []

    mutating func refresh(_ routing: ClusterRouting?) {
        guard let routing else {
            shardHasFollowers = []
            routingVersion = 0
            return
        }
        if routing.version == routingVersion { return }
        routingVersion = routing.version
        shardHasFollowers = (0..<routing.map.numShards).map { !routing.map.followers(ofShard: $0).isEmpty }
    }

    /// A shard the map names no followers for, or every shard before the first map.
    func needsNone(_ shard: Int) -> Bool {
        shard >= shardHasFollowers.count || !shardHasFollowers[shard]
    }
}

extension Reactor {
    /// Drops the tombstones of shards that have no follower to protect
    /// (a node alone, or replication_factor larger than the member count
    /// leaves some shards with none). Shards with followers keep theirs
    /// until they are acknowledged or reach the bounds of `TombstoneLimits`.
    func dropTombstonesNobodyNeeds() {
        guard node.config.replicationFactor > 1 else { return }
        tombstoneNeeds.refresh(routes.current)
        for shard in shards.ownedIndices where tombstoneNeeds.needsNone(shard) {
            let store = shards[shard]!
            if store.tombstoneCount > 0 { store.dropTombstones(acknowledgedThrough: store.lastWriteVersion) }
        }
    }

    /// What shards of a node with replication_factor > 1 remember of deletes.
    static func tombstoneLimits(replicationFactor: Int) -> TombstoneLimits? {
        replicationFactor > 1 ? .standard : nil
    }
}
