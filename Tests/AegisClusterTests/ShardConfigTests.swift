@testable import AegisCluster
import Testing

/// A shard's replica config (docs/shard-movement.md §1-2): what it accepts,
/// and the joint majority that keeps two configs one step apart from both
/// granting a lease for one term.
@Suite struct ShardConfigTests {
    static func nodes(_ names: String...) -> [NodeID] { names.map { NodeID($0)! } }

    @Test func anInvalidConfigCannotBeMade() {
        #expect(ShardConfig(epoch: 0, voters: Self.nodes("a")) == nil, "epoch 0 means no config")
        #expect(ShardConfig(epoch: 1, voters: []) == nil)
        #expect(ShardConfig(epoch: 1, voters: Self.nodes("a", "a")) == nil)
        #expect(ShardConfig(epoch: 1, voters: Self.nodes("a"), outgoing: []) == nil)
        #expect(ShardConfig(epoch: 1, voters: Self.nodes("a"), outgoing: Self.nodes("b", "b")) == nil)
        #expect(ShardConfig(epoch: 1, voters: Self.nodes("a", "b"), outgoing: Self.nodes("b", "c")) != nil,
                "the old and new sets of a joint config may share nodes")
    }

    @Test func aSimpleConfigNeedsAMajorityOfItsVoters() throws {
        let config = try #require(ShardConfig(epoch: 1, voters: Self.nodes("a", "b", "c")))
        #expect(!config.isJoint)
        #expect(!config.isMajority(Set(Self.nodes("a"))))
        #expect(config.isMajority(Set(Self.nodes("a", "c"))))
        #expect(!config.isMajority(Set(Self.nodes("a", "d", "e"))), "votes from outside the set count for nothing")
        let two = try #require(ShardConfig(epoch: 1, voters: Self.nodes("a", "b")))
        #expect(!two.isMajority(Set(Self.nodes("a"))), "half of an even set is no majority")
    }

    @Test func aJointConfigNeedsAMajorityOfBothSets() throws {
        // {a,b,c} -> {a,b,d}: the case replication.md names, where {b,c} of
        // the old set and {a,d} of the new one would otherwise both win.
        let joint = try #require(ShardConfig(epoch: 2, voters: Self.nodes("a", "b", "d"), outgoing: Self.nodes("a", "b", "c")))
        #expect(joint.isJoint)
        #expect(!joint.isMajority(Set(Self.nodes("b", "c"))), "a majority of the old set alone")
        #expect(!joint.isMajority(Set(Self.nodes("a", "d"))), "a majority of the new set alone")
        #expect(joint.isMajority(Set(Self.nodes("a", "b"))))
        #expect(joint.isMajority(Set(Self.nodes("b", "c", "d"))))
        #expect(joint.everyVoter == Self.nodes("a", "b", "d", "c"))
    }

    @Test func anyTwoJointMajoritiesOfConfigsOneStepApartIntersect() throws {
        // Exhaustive over 4 nodes: every subset that is a majority of the
        // joint config intersects every majority of the old and of the new.
        let all = Self.nodes("a", "b", "c", "d")
        let old = try #require(ShardConfig(epoch: 1, voters: Self.nodes("a", "b", "c")))
        let new = try #require(ShardConfig(epoch: 3, voters: Self.nodes("a", "b", "d")))
        let joint = try #require(ShardConfig(epoch: 2, voters: new.voters, outgoing: old.voters))
        let subsets = (0..<(1 << all.count)).map { mask in Set(all.indices.filter { mask & (1 << $0) != 0 }.map { all[$0] }) }
        for first in subsets where joint.isMajority(first) {
            for second in subsets where old.isMajority(second) || new.isMajority(second) || joint.isMajority(second) {
                #expect(!first.isDisjoint(with: second), "\(first) and \(second)")
            }
        }
    }
}
