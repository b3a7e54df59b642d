import AegisCluster
import AegisStore

extension Reactor {
    /// Drops the tombstones of shards that have no follower to protect
    /// (a node alone, or replication_factor larger than the member count
    /// leaves some shards with none): no replica exists that an older
    /// write could still reach. Shards with followers keep theirs until
    /// they are acknowledged or reach the bounds of `TombstoneLimits`.
    func dropTombstonesNobodyNeeds() {
        guard node.config.replicationFactor > 1 else { return }
        for shard in shards.ownedIndices where !routes.hasFollowers(shard) {
            let store = shards[shard]!
            if store.tombstoneCount > 0 { store.dropTombstones(acknowledgedThrough: store.lastWriteVersion) }
        }
    }

    /// What shards of a node with replication_factor > 1 remember of deletes.
    static func tombstoneLimits(replicationFactor: Int) -> TombstoneLimits? {
        replicationFactor > 1 ? .standard : nil
    }
}
