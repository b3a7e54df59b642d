import AegisStore

/// The shards this reactor owns and the memory budget they share. Only the
/// owning reactor's thread may touch a `ShardStore` (it has no locks), so
/// every access goes through the subscript, which checks that in debug
/// builds (OwnerThread.swift); release builds index the array directly.
///
/// Invariants: `stores[s]` is non-nil exactly for `s` in `ownedIndices`
/// (the node's `shardOwner[s]` is this reactor), fixed for the reactor's
/// life; every owned store charges `ledger`.
///
/// Thread hand-over: built on the main thread, filled by log replay on a
/// replay thread (`claim()` there), then served by the reactor's thread
/// (`claim()` when its loop starts).
struct OwnedShards {
    private let stores: [ShardStore?]
    let ledger: MemoryLedger
    let ownedIndices: [Int]
    private var ownerThread = OwnerThread()

    /// `tombstones`: the bounds of what each shard remembers of deletes, nil
    /// when they are not replicated (replication_factor 1: nothing kept).
    init(reactor: Int, shardOwner: [Int], ledger: MemoryLedger, tombstones: TombstoneLimits? = nil) {
        var stores: [ShardStore?] = []
        var owned: [Int] = []
        for shard in shardOwner.indices {
            if shardOwner[shard] == reactor {
                let store = ShardStore(ledger: ledger)
                if let tombstones { store.keepTombstones(limits: tombstones) }
                stores.append(store)
                owned.append(shard)
            } else {
                stores.append(nil)
            }
        }
        self.stores = stores
        self.ownedIndices = owned
        self.ledger = ledger
    }

    /// Every shard of the node, owned here or not.
    var count: Int { stores.count }

    /// The store of `shard`, nil when another reactor owns it.
    @inline(__always) subscript(shard: Int) -> ShardStore? {
        ownerThread.check("a shard store")
        return stores[shard]
    }

    mutating func claim() { ownerThread.claim() }
}
