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

    init(reactor: Int, shardOwner: [Int], ledger: MemoryLedger) {
        var stores: [ShardStore?] = []
        var owned: [Int] = []
        for shard in shardOwner.indices {
            if shardOwner[shard] == reactor {
                stores.append(ShardStore(ledger: ledger))
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
