/// The replica set of one shard whose majority grants its leases, as the
/// lease protocol changes it (docs/shard-movement.md, "The replica
/// configuration"). The placement (`ShardMap`) says where a shard should
/// live; a `ShardConfig` says who votes for it now. Only the holder changes
/// it, one epoch at a time, and a change from C_old to C_new passes through
/// a joint config that needs a majority of both.
///
/// Invariants (checked by the initializer, so a config read from disk or a
/// frame that breaks them never exists):
/// - `epoch` >= 1 (0 means "no config": such a shard is founded first);
/// - `voters` is not empty and names no node twice;
/// - `outgoing`, when set (a joint config), is not empty and names no node
///   twice; it may share nodes with `voters`.
/// Learners are not part of it: they never vote, and the holder re-creates
/// them after a restart.
public struct ShardConfig: Sendable, Equatable, CustomStringConvertible {
    public let epoch: UInt32
    /// First = the designated primary.
    public let voters: [NodeID]
    /// The previous voters while a change is under way (a joint config).
    public let outgoing: [NodeID]?

    public init?(epoch: UInt32, voters: [NodeID], outgoing: [NodeID]? = nil) {
        guard epoch >= 1, Self.isValidSet(voters) else { return nil }
        if let outgoing, !Self.isValidSet(outgoing) { return nil }
        self.epoch = epoch
        self.voters = voters
        self.outgoing = outgoing
    }

    public var isJoint: Bool { outgoing != nil }

    /// Every node whose vote counts toward some majority of this config.
    public var everyVoter: [NodeID] {
        guard let outgoing else { return voters }
        return voters + outgoing.filter { !voters.contains($0) }
    }

    /// True when `granted` holds a majority of the voters and, in a joint
    /// config, also a majority of the outgoing voters: any two such sets of
    /// two configs one step apart intersect, which is what keeps two leases
    /// for one term from both being granted while the set changes.
    public func isMajority(_ granted: Set<NodeID>) -> Bool {
        sets.allSatisfy { Self.majority(of: $0, in: granted) }
    }

    /// The sets each of which a lease needs a majority of: the voters, and
    /// in a joint config the outgoing voters too.
    public var sets: [[NodeID]] {
        guard let outgoing else { return [voters] }
        return [voters, outgoing]
    }

    public var description: String {
        let names = voters.map(\.name).joined(separator: ",")
        guard let outgoing else { return "epoch \(epoch) {\(names)}" }
        return "epoch \(epoch) {\(names)} joint with {\(outgoing.map(\.name).joined(separator: ","))}"
    }

    private static func majority(of set: [NodeID], in granted: Set<NodeID>) -> Bool {
        2 * set.filter(granted.contains).count > set.count
    }

    private static func isValidSet(_ nodes: [NodeID]) -> Bool {
        !nodes.isEmpty && Set(nodes).count == nodes.count
    }
}
