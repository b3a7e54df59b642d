import AegisCluster
import AegisStore
import Testing

/// What a log replay may and may not take as a whole copy of a shard.
@Suite struct ReplayedCopyTests {
    static func replay(_ versions: [(UInt32, UInt64)]) -> ReplayedCopy {
        var copy = ReplayedCopy()
        for (term, seq) in versions { copy.logged(EntryVersion(term: term, seq: seq)) }
        return copy
    }

    @Test func theShardsFirstHolderLoggingEveryWriteOfOneTermIsWhole() {
        let copy = Self.replay((1...40).map { (3, UInt64($0)) })
        #expect(copy.isWhole)
        #expect(copy.head == EntryVersion(term: 3, seq: 40))
    }

    @Test func nothingLoggedProvesNothing() {
        #expect(!ReplayedCopy().isWhole)
    }

    /// The node followed another holder before it wrote: those writes are
    /// not in its log, and its own start past seq 1.
    @Test func aFirstRecordPastSeqOneIsAHole() {
        #expect(!Self.replay([(3, 2), (3, 3)]).isWhole)
        #expect(!Self.replay([(3, 41)]).isWhole, "a snapshot's shard written before its walk starts past seq 1")
    }

    @Test func aSkippedSeqIsAHole() {
        let copy = Self.replay([(3, 1), (3, 2), (3, 4), (3, 5)])
        #expect(!copy.isWhole)
        #expect(copy.head == EntryVersion(term: 3, seq: 2), "whole only up to the gap")
    }

    /// A holder elected while behind continues from its own lower seq: term
    /// 4 was another node's, this node applied its writes (unlogged) and then
    /// won term 5, continuing the seqs it had. Consecutive seqs across a jump
    /// of terms hide them.
    @Test func aJumpOfTermsIsAHoleEvenWithConsecutiveSeqs() {
        #expect(!Self.replay([(3, 1), (3, 2), (3, 3), (5, 4), (5, 5)]).isWhole)
    }

    /// Its own records at terms 3 and 4: both terms were this node's and none
    /// lies between them, so nobody else wrote in between.
    @Test func aStepToTheNextTermWithTheNextSeqContinuesTheChain() {
        let copy = Self.replay([(3, 1), (3, 2), (4, 3), (4, 4), (5, 5)])
        #expect(copy.isWhole)
        #expect(copy.head == EntryVersion(term: 5, seq: 5))
        #expect(!Self.replay([(3, 1), (3, 2), (4, 4)]).isWhole, "the next term, but a skipped seq")
        #expect(Self.replay([(UInt32.max - 1, 1), (UInt32.max, 2)]).isWhole, "the last term is the next of the one before it")
    }

    /// Nothing after a break is trusted again, however well it continues.
    @Test func aBreakIsFinal() {
        let copy = Self.replay([(3, 1), (3, 3), (3, 4), (3, 5)])
        #expect(!copy.isWhole)
        #expect(copy.head == EntryVersion(term: 3, seq: 1))
    }

    /// The same version twice is the same write: the chain already holds it.
    @Test func aRepeatedVersionChangesNothing() {
        let copy = Self.replay([(3, 1), (3, 2), (3, 2), (3, 3)])
        #expect(copy.isWhole)
        #expect(copy.head == EntryVersion(term: 3, seq: 3))
    }

    /// A snapshot's proven head: the replay continues from it, and the
    /// segment the snapshot started may repeat writes at or below it.
    @Test func aProvenHeadIsContinuedAndMayBeRepeated() {
        var copy = ReplayedCopy(provenThrough: EntryVersion(term: 3, seq: 40))
        #expect(copy.isWhole, "a snapshot with its head and nothing after it")
        for seq in [38, 39, 40, 41, 42] as [UInt64] { copy.logged(EntryVersion(term: 3, seq: seq)) }
        #expect(copy.isWhole)
        #expect(copy.head == EntryVersion(term: 3, seq: 42))

        var gap = ReplayedCopy(provenThrough: EntryVersion(term: 3, seq: 40))
        gap.logged(EntryVersion(term: 3, seq: 42))
        #expect(!gap.isWhole)
        var olderTerm = ReplayedCopy(provenThrough: EntryVersion(term: 3, seq: 40))
        olderTerm.logged(EntryVersion(term: 2, seq: 12))
        #expect(!olderTerm.isWhole, "no write of another term belongs in the chain")
        var nextTerm = ReplayedCopy(provenThrough: EntryVersion(term: 3, seq: 40))
        nextTerm.logged(EntryVersion(term: 4, seq: 41))
        #expect(nextTerm.isWhole, "the next term continues a proven head like any chain")
        var laterTerm = ReplayedCopy(provenThrough: EntryVersion(term: 3, seq: 40))
        laterTerm.logged(EntryVersion(term: 5, seq: 41))
        #expect(!laterTerm.isWhole)
    }

    /// A holder's snapshot of a shard no write reached proves it whole
    /// through nothing; the shard's first write, logged, continues it like
    /// any chain, and a write the node did not log (it followed another
    /// holder first) leaves a hole as it would without the proof.
    @Test func aSnapshotOfAShardNoWriteReachedProvesItWholeThroughNothing() {
        let empty = ReplayedCopy(provenThrough: .zero)
        #expect(empty.isWhole)
        #expect(empty.head == .zero)
        var firstWrite = empty
        firstWrite.logged(EntryVersion(term: 7, seq: 1))
        #expect(firstWrite.isWhole)
        #expect(firstWrite.head == EntryVersion(term: 7, seq: 1))
        var followedFirst = empty
        followedFirst.logged(EntryVersion(term: 7, seq: 3))
        #expect(!followedFirst.isWhole)
        var undone = empty
        undone.breakChain()
        #expect(!undone.isWhole)
    }

    /// A holder's snapshot misses no write of a term up to the one it held:
    /// its first write at that term continues the chain however many terms
    /// lie between it and the newest write (a shard handed on twice with no
    /// write between), and so does one at the term after; one past that may
    /// hide another holder's writes, as without the snapshot.
    @Test func aHoldersSnapshotCarriesTheChainToTheTermItHeld() {
        let head = EntryVersion(term: 1, seq: 2)
        var held = ReplayedCopy(provenThrough: head, heldTerm: 3)
        #expect(held.isWhole && held.wholeThroughTerm == 3)
        held.logged(EntryVersion(term: 3, seq: 3))
        held.logged(EntryVersion(term: 4, seq: 4))
        #expect(held.isWhole)
        #expect(held.head == EntryVersion(term: 4, seq: 4))
        var past = ReplayedCopy(provenThrough: head, heldTerm: 3)
        past.logged(EntryVersion(term: 5, seq: 3))
        #expect(!past.isWhole)
        var unheld = ReplayedCopy(provenThrough: head)
        unheld.logged(EntryVersion(term: 3, seq: 3))
        #expect(!unheld.isWhole, "without the held term, a jump of two terms is a hole")
        var gap = ReplayedCopy(provenThrough: head, heldTerm: 3)
        gap.logged(EntryVersion(term: 3, seq: 4))
        #expect(!gap.isWhole, "the held term vouches for no skipped seq")
    }

    /// A change that was not logged (a failed batch undone) ends the proof.
    @Test func aBrokenChainStaysBroken() {
        var copy = Self.replay([(3, 1), (3, 2)])
        copy.breakChain()
        copy.logged(EntryVersion(term: 3, seq: 3))
        #expect(!copy.isWhole)
    }
}
