import Foundation
import PropertyBased
import Testing
@testable import AegisCluster

/// The shard map against its golden vectors (docs/placement.md) and the
/// properties consistent hashing promises.
@Suite struct PlacementTests {
    // MARK: Golden vectors

    struct Vectors: Decodable {
        struct NodePoint: Decodable {
            let node: String
            let virtualNode: Int
            let bytesHex: String
            let xxh64: String
        }

        struct ShardPoint: Decodable {
            let shard: Int
            let numShards: Int
            let point: String
        }

        struct Map: Decodable {
            let members: [String]
            let numShards: Int
            let virtualNodes: Int
            let replicationFactor: Int
            let digest: String
            let owners: [[String]]
        }

        let nodePoints: [NodePoint]
        let shardPoints: [ShardPoint]
        let maps: [Map]
    }

    static func loadVectors() throws -> Vectors {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Resources/placement-vectors.json")
        return try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    static func node(_ name: String) -> NodeID {
        guard let id = NodeID(name) else { preconditionFailure("\(name) is a valid node id in these tests") }
        return id
    }

    @Test func nodePointsMatchTheVectors() throws {
        let vectors = try Self.loadVectors()
        #expect(vectors.nodePoints.count >= 3)
        for v in vectors.nodePoints {
            let bytes = HashRing.nodePointBytes(Self.node(v.node), virtualNode: v.virtualNode)
            #expect(bytes.map { String(format: "%02x", $0) }.joined() == v.bytesHex, "\(v.node)#\(v.virtualNode)")
            #expect(Self.hex(HashRing.nodePoint(Self.node(v.node), virtualNode: v.virtualNode)) == v.xxh64,
                    "\(v.node)#\(v.virtualNode)")
        }
    }

    @Test func shardPointsMatchTheVectors() throws {
        let vectors = try Self.loadVectors()
        #expect(!vectors.shardPoints.isEmpty)
        for v in vectors.shardPoints {
            #expect(Self.hex(HashRing.shardPoint(v.shard, numShards: v.numShards)) == v.point, "\(v.shard)/\(v.numShards)")
        }
    }

    @Test func mapsMatchTheVectors() throws {
        let vectors = try Self.loadVectors()
        #expect(vectors.maps.count >= 4)
        for v in vectors.maps {
            let map = try ShardMap(members: v.members.map(Self.node), numShards: v.numShards,
                                   virtualNodes: v.virtualNodes, replicationFactor: v.replicationFactor)
            #expect(v.owners.count == v.numShards)
            // One issue per map, naming the first shard that differs, rather than hundreds.
            let firstDifference = (0..<v.numShards).first { map.owners(ofShard: $0).map(\.name) != v.owners[$0] }
            #expect(firstDifference == nil, "\(v.members): shard \(firstDifference ?? -1) has other owners")
            #expect(Self.hex(map.digest) == v.digest, "\(v.members)")
        }
    }

    @Test func isOwnerAgreesWithTheOwnerList() throws {
        let members = (1...5).map { NodeID("node\($0)")! }
        let map = try ShardMap(members: members.prefix(4), numShards: 64, virtualNodes: 16, replicationFactor: 3)
        for shard in 0..<64 {
            for node in members {
                #expect(map.isOwner(node, ofShard: shard) == map.owners(ofShard: shard).contains(node), "shard \(shard), \(node)")
            }
        }
    }

    // MARK: Fixed cases

    @Test func badSettingsAreRefusedWithTheirName() {
        let members = [Self.node("node1")]
        #expect(throws: PlacementError.noMembers) {
            try ShardMap(members: [NodeID](), numShards: 256, virtualNodes: 128, replicationFactor: 3)
        }
        #expect(throws: PlacementError.numShardsOutOfRange(0)) {
            try ShardMap(members: members, numShards: 0, virtualNodes: 128, replicationFactor: 3)
        }
        #expect(throws: PlacementError.numShardsOutOfRange(65537)) {
            try ShardMap(members: members, numShards: 65537, virtualNodes: 128, replicationFactor: 3)
        }
        #expect(throws: PlacementError.virtualNodesOutOfRange(0)) {
            try ShardMap(members: members, numShards: 256, virtualNodes: 0, replicationFactor: 3)
        }
        #expect(throws: PlacementError.replicationFactorOutOfRange(0)) {
            try ShardMap(members: members, numShards: 256, virtualNodes: 128, replicationFactor: 0)
        }
        #expect(PlacementError.numShardsOutOfRange(0).description.contains("num_shards 0"))
    }

    /// Equal points are won by the member whose name sorts first in bytes,
    /// whatever order the members were given in.
    @Test func equalPointsGoToTheFirstNodeInByteOrder() {
        let members = ["b", "a", "B"].map(Self.node).sorted()
        let ring = HashRing(sortedMembers: members, virtualNodes: 3, pointOf: { _, vnode in UInt64(vnode) * 1000 })
        #expect(ring.points == [0, 0, 0, 1000, 1000, 1000, 2000, 2000, 2000])
        #expect(ring.ownerIndex.map { ring.members[$0].name } == ["B", "a", "b", "B", "a", "b", "B", "a", "b"])
        #expect(ring.distinctOwners(from: 1, count: 3).map { ring.members[$0].name } == ["B", "a", "b"])
        // Past the last point the walk wraps to the first.
        #expect(ring.firstPointIndex(atOrAfter: 2001) == 0)
        #expect(ring.firstPointIndex(atOrAfter: 2000) == 6)
    }

    @Test func shardPointsAreEvenlySpacedFromZero() {
        #expect(HashRing.shardPoint(0, numShards: 4) == 0)
        #expect(HashRing.shardPoint(1, numShards: 4) == 1 << 62)
        #expect(HashRing.shardPoint(3, numShards: 4) == 3 << 62)
        #expect(HashRing.shardPoint(0, numShards: 1) == 0)
    }

    @Test func lookupsAgreeWithEachOther() throws {
        let map = try ShardMap(members: ["node1", "node2", "node3", "node4"].map(Self.node), numShards: 256,
                               virtualNodes: 128, replicationFactor: 3)
        #expect(map.shards(primaryOn: Self.node("node9")).isEmpty)
        #expect(map.shards(followerOn: Self.node("node9")).isEmpty)
        var primaryCount = 0
        for member in map.members {
            for shard in map.shards(primaryOn: member) {
                #expect(map.primary(ofShard: shard) == member)
                primaryCount += 1
            }
            for shard in map.shards(followerOn: member) {
                #expect(map.followers(ofShard: shard).contains(member))
            }
        }
        #expect(primaryCount == 256)
        #expect(map.shard(ofKeyHash: 513) == 1)
    }

    // MARK: Properties

    struct Setup: CustomStringConvertible, Sendable {
        let members: [NodeID]
        let numShards: Int
        let virtualNodes: Int
        let replicationFactor: Int

        func map(_ members: [NodeID]? = nil) throws -> ShardMap {
            try ShardMap(members: members ?? self.members, numShards: numShards, virtualNodes: virtualNodes,
                         replicationFactor: replicationFactor)
        }

        var description: String {
            "members \(members.map(\.name)), num_shards \(numShards), virtual_nodes \(virtualNodes), rf \(replicationFactor)"
        }
    }

    /// 1 to 12 members drawn from 64 names (duplicates allowed: they count once).
    static let setups = zip(
        Gen.int(in: 0...63).array(of: 1...12), Gen.int(in: 1...128), Gen.int(in: 1...32), Gen.int(in: 1...5)
    ).map { names, shards, vnodes, rf in
        Setup(members: names.map { node("n\($0)") }, numShards: shards, virtualNodes: vnodes, replicationFactor: rf)
    }

    @Test func everyShardHasMinOfRfAndNDistinctOwners() async {
        await propertyCheck(count: 150, input: Self.setups) { setup in
            let map = try setup.map()
            let distinctMembers = Set(setup.members)
            let expected = min(setup.replicationFactor, distinctMembers.count)
            for shard in 0..<setup.numShards {
                let owners = map.owners(ofShard: shard)
                #expect(owners.count == expected, "\(setup) shard \(shard)")
                #expect(Set(owners).count == owners.count, "\(setup) shard \(shard)")
                #expect(Set(owners).isSubset(of: distinctMembers))
                #expect(owners.first == map.primary(ofShard: shard))
                #expect(Array(owners.dropFirst()) == map.followers(ofShard: shard))
            }
            let primaries = distinctMembers.reduce(0) { $0 + map.shards(primaryOn: $1).count }
            let followers = distinctMembers.reduce(0) { $0 + map.shards(followerOn: $1).count }
            #expect(primaries == setup.numShards)
            #expect(followers == setup.numShards * (expected - 1))
        }
    }

    @Test func theMapDependsOnlyOnTheMemberSet() async {
        await propertyCheck(count: 150, input: Self.setups, Gen.int(in: 0...11)) { setup, rotation in
            let map = try setup.map()
            let members = setup.members
            let cut = rotation % members.count
            let reordered = Array((members[cut...] + members[..<cut]).reversed()) + [members[0]]
            let other = try setup.map(reordered)
            #expect(other == map, "\(setup)")
            #expect(other.digest == map.digest, "\(setup)")
            #expect(other.changes(since: map).isEmpty)
        }
    }

    /// A joining node takes shards only for itself: a shard whose primary
    /// changes now has the new node as primary, and no shard gains an owner
    /// other than the new node.
    @Test func aJoinMovesShardsOnlyToTheNewNode() async {
        await propertyCheck(count: 150, input: Self.setups, Gen.int(in: 64...80)) { setup, newName in
            let before = try setup.map()
            let joining = Self.node("n\(newName)")
            let after = try setup.map(setup.members + [joining])
            let diff = after.changes(since: before)
            for change in diff.primaryChanges {
                #expect(change.to == joining, "\(setup) shard \(change.shard)")
            }
            for shard in 0..<setup.numShards {
                let gained = Set(after.owners(ofShard: shard)).subtracting(before.owners(ofShard: shard))
                #expect(gained.isSubset(of: [joining]), "\(setup) shard \(shard)")
            }
            #expect(diff.primaryChanges.map(\.shard) == after.shards(primaryOn: joining))
            #expect(after.digest != before.digest || after == before)
        }
    }

    /// A leaving node's shards go elsewhere and no other shard moves: a shard
    /// keeps its primary unless the primary left, and keeps every owner that
    /// is still a member.
    @Test func aLeaveMovesOnlyTheLeavingNodesShards() async {
        await propertyCheck(count: 150, input: Self.setups, Gen.int(in: 0...11)) { setup, pick in
            let distinct = Set(setup.members).sorted()
            guard distinct.count >= 2 else { return }
            let leaving = distinct[pick % distinct.count]
            let before = try setup.map()
            let after = try setup.map(distinct.filter { $0 != leaving })
            let diff = after.changes(since: before)
            #expect(diff.primaryChanges.map(\.shard) == before.shards(primaryOn: leaving), "\(setup) without \(leaving)")
            #expect(diff.primaryChanges.allSatisfy { $0.from == leaving })
            for shard in 0..<setup.numShards {
                let kept = Set(before.owners(ofShard: shard)).subtracting([leaving])
                #expect(kept.isSubset(of: after.owners(ofShard: shard)), "\(setup) shard \(shard)")
            }
        }
    }
}
