import AegisStore
import PropertyBased
import Testing
@testable import AegisCluster

/// The primary's bookkeeping for replication (issue 12): acknowledgements,
/// the version committed at W, what every replica holds, the recent-writes
/// tail and the replies waiting for a quorum.
@Suite struct ReplicationProgressTests {
    static let b = NodeID("b")!
    static let c = NodeID("c")!
    static func v(_ seq: UInt64, term: UInt32 = 1) -> EntryVersion { EntryVersion(term: term, seq: seq) }

    static func primary(writes: UInt64) -> ReplicationProgress {
        var p = ReplicationProgress(followers: [b, c])
        for seq in 1...writes { p.wrote(v(seq)) }
        return p
    }

    @Test func theCommittedVersionIsTheWthNewestThePrimaryCounted() {
        var p = Self.primary(writes: 10)
        p.sent(Self.v(10), to: Self.b)
        p.sent(Self.v(10), to: Self.c)
        #expect(p.committed(writeQuorum: 0) == Self.v(10))
        #expect(p.committed(writeQuorum: 1) == Self.v(10))
        #expect(p.committed(writeQuorum: 2) == .zero)
        #expect(p.acknowledge(Self.v(7), from: Self.b) == .advanced)
        #expect(p.committed(writeQuorum: 2) == Self.v(7))
        #expect(p.committed(writeQuorum: 3) == .zero)
        #expect(p.acknowledge(Self.v(4), from: Self.c) == .advanced)
        #expect(p.committed(writeQuorum: 3) == Self.v(4))
        #expect(p.acknowledgedByAll == Self.v(4))
        #expect(!p.canReach(writeQuorum: 4))
        #expect(p.committed(writeQuorum: 4) == .zero)
        #expect(p.problems.isEmpty)
    }

    /// A primary that took the shard over presumes its followers hold its
    /// copy (`resume`); a stream that ends below that, with nothing
    /// written since, says the copy is no newer: nothing is left to send.
    @Test func aStreamThatEndsBelowThePresumedNewestWriteSettlesIt() {
        var p = ReplicationProgress(followers: [Self.b, Self.c])
        p.resume(after: Self.v(9))
        #expect(p.sent == [Self.v(9), Self.v(9)])
        p.cutOff(Self.b)
        p.streamed(Self.v(6), to: Self.b)
        #expect(p.written == Self.v(9) && p.sent[0] == Self.v(6), "b is still behind: it would be streamed again")
        p.settle(atMost: Self.v(6))
        #expect(p.written == Self.v(6) && p.sent == [Self.v(6), Self.v(6)] && p.acknowledged[0] == Self.v(6))
        // A newest write above what was written changes nothing.
        p.settle(atMost: Self.v(8))
        #expect(p.written == Self.v(6))
        // The next write follows it as usual.
        p.wrote(Self.v(7))
        p.sent(Self.v(7), to: Self.b)
        #expect(p.acknowledge(Self.v(7), from: Self.b) == .advanced)
    }

    @Test func acknowledgementsThatWereNeverEarnedChangeNothing() {
        var p = Self.primary(writes: 5)
        p.sent(Self.v(3), to: Self.b)
        let before = p
        #expect(p.acknowledge(Self.v(4), from: Self.b) == .neverSent)
        #expect(p.acknowledge(Self.v(1), from: NodeID("z")!) == .unknownFollower)
        #expect(p == before)
        #expect(p.acknowledge(Self.v(3), from: Self.b) == .advanced)
        let after = p
        #expect(p.acknowledge(Self.v(3), from: Self.b) == .duplicate)
        #expect(p == after)
    }

    @Test func aFollowerThatLostItsDataIsSentAgainFromWhatItHolds() {
        var p = Self.primary(writes: 6)
        p.sent(Self.v(6), to: Self.b)
        #expect(p.acknowledge(Self.v(6), from: Self.b) == .advanced)
        #expect(p.acknowledge(.zero, from: Self.b) == .behind)
        #expect(p.acknowledged[0] == .zero && p.sent[0] == .zero)
        #expect(p.lagRecords(Self.b) == 6)
        #expect(p.problems.isEmpty)
    }

    @Test func aCutOffFollowerIsSentAgainFromItsAcknowledgement() {
        var p = Self.primary(writes: 8)
        p.sent(Self.v(8), to: Self.b)
        #expect(p.acknowledge(Self.v(5), from: Self.b) == .advanced)
        p.cutOff(Self.b)
        #expect(p.sent[0] == Self.v(5))
        #expect(p.acknowledge(Self.v(6), from: Self.b) == .neverSent)
        #expect(p.lagRecords(Self.b) == 3)
        #expect(p.lagRecords(Self.c) == 8)
        #expect(p.problems.isEmpty)
    }

    @Test func aMapChangeKeepsTheProgressOfFollowersThatStay() {
        var p = Self.primary(writes: 4)
        p.sent(Self.v(4), to: Self.b)
        _ = p.acknowledge(Self.v(4), from: Self.b)
        let d = NodeID("d")!
        p.setFollowers([d, Self.b])
        #expect(p.acknowledged == [.zero, Self.v(4)])
        #expect(p.acknowledgedByAll == .zero)
        p.setFollowers([])
        #expect(p.acknowledgedByAll == Self.v(4), "no follower: every replica (the primary) holds every write")
    }

    /// A follower that became primary (its primary died) resumes sending
    /// after what it holds, not from zero, which no tail reaches; the
    /// followers' acknowledgements stay theirs to give.
    @Test func aNewPrimaryResumesAfterWhatItHeldAsAFollower() {
        var p = ReplicationProgress(followers: [Self.b, Self.c])
        p.resume(after: Self.v(150))
        p.wrote(Self.v(151))
        #expect(p.sent == [Self.v(150), Self.v(150)], "both presumed to hold 150: the record chained to it goes out at once")
        #expect(p.acknowledged == [.zero, .zero], "a presumption is not an acknowledgement")
        #expect(p.committed(writeQuorum: 2) == .zero)
        p.sent(Self.v(151), to: Self.b)
        p.sent(Self.v(151), to: Self.c)
        #expect(p.acknowledge(Self.v(151), from: Self.b) == .advanced)
        // c held only 120: it dropped 151 as past a gap and says so twice.
        #expect(p.acknowledge(Self.v(120), from: Self.c) == .advanced)
        #expect(p.acknowledge(Self.v(120), from: Self.c) == .duplicate)
        p.cutOff(Self.c)
        #expect(p.sent[1] == Self.v(120), "c is sent again from what it holds")
        p.resume(after: Self.v(140))
        #expect(p.written == Self.v(151), "an older history changes nothing")
        #expect(p.problems.isEmpty)
    }

    /// A new primary presumes only the followers that replicated the shard
    /// with it: the one the map put in place of a dead voter starts from
    /// nothing, so the catch-up streams it the shard though nobody writes.
    @Test func aNewPrimaryPresumesOnlyTheFollowersItNames() {
        var p = ReplicationProgress(followers: [Self.b, Self.c])
        p.resume(after: Self.v(150)) { $0 == Self.b }
        #expect(p.written == Self.v(150))
        #expect(p.sent == [Self.v(150), .zero], "c, never a replica with this node, is owed every write")
        #expect(p.lagRecords(Self.c) == 150)
        p.wrote(Self.v(151))
        #expect(p.sent == [Self.v(150), .zero], "only b was sent everything before 151: the caller sends 151 to b alone")
        p.streamed(Self.v(151), to: Self.c)
        #expect(p.sent == [Self.v(150), Self.v(151)])
        #expect(p.problems.isEmpty)
    }

    /// Random sends, acks (earned or not), cut-offs and writes: the invariants
    /// hold, an acknowledgement moves only as its outcome says, and the
    /// committed version at W is held by at least W replicas.
    @Test func randomHistoriesKeepTheInvariants() async {
        let steps = zip(Gen.int(in: 0...3), Gen.int(in: 0...1), Gen.int(in: 0...12)).array(of: 1...150)
        await propertyCheck(count: 200, input: steps) { steps in
            var p = ReplicationProgress(followers: [Self.b, Self.c])
            var acked: [EntryVersion] = [.zero, .zero]
            for (kind, who, n) in steps {
                let follower = who == 0 ? Self.b : Self.c
                switch kind {
                case 0: p.wrote(Self.v(p.written.seq + 1))
                case 1: if p.written.seq > 0 { p.sent(Self.v(max(1, min(UInt64(n), p.written.seq))), to: follower) }
                case 2:
                    let i = who
                    let outcome = p.acknowledge(Self.v(UInt64(n)), from: follower)
                    switch outcome {
                    case .advanced: #expect(p.acknowledged[i] == Self.v(UInt64(n)) && Self.v(UInt64(n)) > acked[i])
                    case .behind: #expect(p.acknowledged[i] == Self.v(UInt64(n)) && Self.v(UInt64(n)) < acked[i])
                    case .duplicate, .neverSent: #expect(p.acknowledged[i] == acked[i])
                    case .unknownFollower: Issue.record("b and c are followers")
                    }
                default: p.cutOff(follower)
                }
                #expect(p.problems.isEmpty)
                acked = p.acknowledged
                for w in 1...3 {
                    let committed = p.committed(writeQuorum: w)
                    let holders = ([p.written] + p.acknowledged).count { $0 >= committed }
                    #expect(holders >= w)
                }
                // The vector the reactors get is the same committed versions, all at once.
                #expect(p.heldByAtLeast == [p.committed(writeQuorum: 2), p.committed(writeQuorum: 3)])
                #expect(p.heldByAtLeast.last == p.acknowledgedByAll)
            }
        }
    }

    // MARK: - Recent writes

    @Test func theTailServesAFollowerUntilItIsOverwritten() {
        var tail = RecentWrites(countMax: 4, bytesMax: 1 << 20)
        for seq in UInt64(1)...6 {
            let appended = tail.append(version: Self.v(seq), previous: Self.v(seq - 1), madeMs: Int64(seq) * 10, bytes: [UInt8(seq)])
            #expect(appended)
        }
        #expect(tail.count == 4)
        #expect(tail.servesFrom == Self.v(2))
        #expect(tail.after(Self.v(1), limit: 10) == .gone)
        guard case .records(let fromTwo) = tail.after(Self.v(2), limit: 10) else { Issue.record("tail gone"); return }
        #expect(fromTwo.map(\.version) == [3, 4, 5, 6].map { Self.v($0) })
        guard case .records(let limited) = tail.after(Self.v(3), limit: 2) else { Issue.record("tail gone"); return }
        #expect(limited.map(\.version) == [Self.v(4), Self.v(5)])
        #expect(tail.after(Self.v(6), limit: 10) == .records([]))
        #expect(tail.madeMs(firstAfter: Self.v(4)) == 50)
        #expect(tail.madeMs(firstAfter: Self.v(6)) == nil)
        // Out of order or not a chain: refused, nothing changes.
        let outOfOrderAppended = tail.append(version: Self.v(6), previous: Self.v(5), madeMs: 0, bytes: [])
        #expect(!outOfOrderAppended)
        let unchainedAppended = tail.append(version: Self.v(8), previous: Self.v(9), madeMs: 0, bytes: [])
        #expect(!unchainedAppended)
        #expect(tail.count == 4)
    }

    @Test func aTailThatBeganAfterTheShardsFirstWritesCannotServeFromNothing() {
        var tail = RecentWrites(countMax: 100, bytesMax: 1 << 20)
        #expect(tail.after(.zero, limit: 10) == .records([]))
        tail.append(version: Self.v(41), previous: Self.v(40), madeMs: 0, bytes: [1])
        #expect(tail.after(.zero, limit: 10) == .gone, "writes 1...40 were never here")
        #expect(tail.after(Self.v(40), limit: 10) == .records([RecentWrites.Record(version: Self.v(41), previous: Self.v(40), madeMs: 0, bytes: [1])]))
    }

    @Test func aBrokenChainEmptiesTheTail() {
        var tail = RecentWrites(countMax: 100, bytesMax: 1 << 20)
        for seq in UInt64(1)...5 { tail.append(version: Self.v(seq), previous: Self.v(seq - 1), madeMs: 0, bytes: [1]) }
        // Write 6 never reached the tail: 7 follows it.
        let afterGapAppended = tail.append(version: Self.v(7), previous: Self.v(6), madeMs: 0, bytes: [2])
        #expect(afterGapAppended)
        #expect(tail.count == 1 && tail.servesFrom == Self.v(6))
        #expect(tail.after(Self.v(3), limit: 10) == .gone)
        guard case .records(let rest) = tail.after(Self.v(6), limit: 10) else { Issue.record("tail gone"); return }
        #expect(rest.map(\.version) == [Self.v(7)])
    }

    @Test func theTailIsBoundedByBytes() {
        var tail = RecentWrites(countMax: 1_000, bytesMax: 100)
        for seq in UInt64(1)...50 {
            tail.append(version: Self.v(seq), previous: Self.v(seq - 1), madeMs: 0, bytes: [UInt8](repeating: 0, count: 30))
        }
        #expect(tail.byteCount <= 100)
        #expect(tail.count == 3)
        // One record larger than the bound is kept alone: a follower can still get it.
        tail.append(version: Self.v(51), previous: Self.v(50), madeMs: 0, bytes: [UInt8](repeating: 0, count: 500))
        #expect(tail.count == 1 && tail.newest == Self.v(51))
        #expect(tail.servesFrom == Self.v(50))
    }

    // MARK: - Quorum waits

    @Test func waitsComeOutOnceByCommitOrByDeadline() {
        var waits = QuorumWaits<Int>()
        for seq in UInt64(1)...5 { waits.wait(shard: 7, version: Self.v(seq), deadlineMs: 100 + Int64(seq), ticket: Int(seq)) }
        waits.wait(shard: 9, version: Self.v(1), deadlineMs: 500, ticket: 91)
        #expect(waits.committed(shard: 7, through: Self.v(2)) == [1, 2])
        #expect(waits.committed(shard: 7, through: Self.v(2)) == [])
        #expect(waits.expired(nowMs: 104) == [3, 4])
        #expect(waits.count == 2)
        #expect(waits.abandon(shard: 9) == [91])
        #expect(waits.committed(shard: 7, through: Self.v(9)) == [5])
        #expect(waits.count == 0)
    }

    @Test func aWaitForAnOlderOrEqualVersionWaitsBehindTheNewestAndIsNeverReleasedEarly() {
        var waits = QuorumWaits<Int>()
        waits.wait(shard: 3, version: Self.v(5), deadlineMs: .max, ticket: 1)
        waits.wait(shard: 3, version: Self.v(5), deadlineMs: .max, ticket: 2)
        waits.wait(shard: 3, version: Self.v(4), deadlineMs: .max, ticket: 3)
        #expect(waits.committed(shard: 3, through: Self.v(4)) == [])
        #expect(waits.committed(shard: 3, through: Self.v(5)) == [1, 2, 3])
        #expect(waits.count == 0)
    }

    @Test func aBusyShardsWaitListStaysBounded() {
        var waits = QuorumWaits<Int>()
        var released = 0
        for seq in UInt64(1)...10_000 {
            waits.wait(shard: 0, version: Self.v(seq), deadlineMs: .max, ticket: Int(seq))
            if seq > 3 { released += waits.committed(shard: 0, through: Self.v(seq - 3)).count }
        }
        #expect(released == 9_997)
        #expect(waits.count == 3)
        #expect(waits.storedWaits < 200, "released waits are given back, not kept behind a head index")
    }
}
