import Synchronization

/// The shard leases this node holds, as reactors check them: per shard the
/// end of the lease on the coarse monotonic clock (exclusive; 0 = none) and
/// its term. Immutable; the cluster loop publishes a new one whenever a
/// lease is won, renewed or lost.
final class ShardLeases: Sendable {
    let version: UInt64
    /// False while the node is alone (no seeds, no peer seen yet), and with
    /// replication_factor 1: writes are then accepted as before leases.
    let enforced: Bool
    let untilMs: [Int64]
    let terms: [UInt32]
    /// Shards this node is handing to another node: held, but frozen
    /// (`untilMs` is 0), so that the target can be given every write.
    let handingOff: [Bool]

    init(version: UInt64, enforced: Bool, untilMs: [Int64], terms: [UInt32], handingOff: [Bool]) {
        precondition(untilMs.count == terms.count && handingOff.count == terms.count, "one end, term and hand-off flag per shard")
        self.version = version
        self.enforced = enforced
        self.untilMs = untilMs
        self.terms = terms
        self.handingOff = handingOff
    }
}

/// Where reactors pick up the leases, published the way `RoutingBoard`
/// publishes the shard map: an unchanged set costs a reactor one atomic
/// load per loop iteration, and the lock is taken only when the version
/// moved (a renewal every lease tick, a change on an election).
final class LeaseBoard: Sendable {
    private let current = Mutex<ShardLeases?>(nil)
    private let published = Atomic<UInt64>(0)

    init() {}

    func publish(_ leases: ShardLeases) {
        current.withLock { $0 = leases }
        published.store(leases.version, ordering: .releasing)
    }

    /// 0 until the first publication.
    @inline(__always) var version: UInt64 { published.load(ordering: .acquiring) }

    var leases: ShardLeases? { current.withLock { $0 } }
}
