@testable import AegisServer
import AegisCluster
import Foundation
import Testing

/// The lease terms in data_dir (TermStore): what is written reads back,
/// a damaged file stops the start, and a lost file is told from a new node.
@Suite struct LeaseTermStoreTests {
    static func scratchDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-terms-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func persistedTermsAndVotesReadBackAfterARestart() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = TermStore(directory: directory, terms: [:])
        try store.writeInitial()
        try store.persist([(shard: 3, record: PersistedTerm(term: 7, votedFor: NodeID("node2")))])
        try store.persist([(shard: 3, record: PersistedTerm(term: 8, votedFor: nil)),
                           (shard: 250, record: PersistedTerm(term: 1, votedFor: NodeID("node1")))])
        let loaded = try TermStore.load(directory: directory, numShards: 256)
        #expect(!loaded.emptyLearner)
        #expect(loaded.restarted, "terms read back: the node's data is what its log replayed")
        #expect(loaded.terms == [3: PersistedTerm(term: 8, votedFor: nil), 250: PersistedTerm(term: 1, votedFor: NodeID("node1"))])
        let left = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(left.sorted() == [TermStore.fileName, TermStore.markerName].sorted(), "no temporary file is left behind: \(left)")
    }

    @Test func anEmptyDataDirOrAReleaseBeforeLeasesIsAFirstStartAndALostFileBesideTheMarkerIsAnEmptyLearner() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fresh = try TermStore.load(directory: directory, numShards: 16)
        #expect(!fresh.emptyLearner && fresh.terms.isEmpty && !fresh.restarted, "\(fresh.summary)")
        let missing = try TermStore.load(directory: directory + "/not-there", numShards: 16)
        #expect(!missing.emptyLearner, "\(missing.summary)")
        try FileManager.default.createDirectory(atPath: directory + "/wal", withIntermediateDirectories: true)
        let beforeLeases = try TermStore.load(directory: directory, numShards: 16)
        #expect(!beforeLeases.emptyLearner && beforeLeases.terms.isEmpty && !beforeLeases.restarted,
                "a log without the marker was written by a release before leases, which never voted: \(beforeLeases.summary)")
        let store = TermStore(directory: directory, terms: [:])
        try store.writeInitial()
        #expect(FileManager.default.fileExists(atPath: directory + "/" + TermStore.markerName))
        #expect(try !TermStore.load(directory: directory, numShards: 16).emptyLearner, "the file is there")
        try FileManager.default.removeItem(atPath: directory + "/" + TermStore.fileName)
        let lost = try TermStore.load(directory: directory, numShards: 16)
        #expect(lost.emptyLearner && !lost.restarted, "the marker without its terms: the node voted before and lost it: \(lost.summary)")
    }

    @Test(arguments: [
        "", "aegis-lease-terms 1\n", "aegis-lease-terms 1\nend 1\n",
        "aegis-lease-terms 1\n3 7 node2\nend 0\n", "aegis-lease-terms 1\n16 7 node2\nend 1\n",
        "aegis-lease-terms 1\n3 0 node2\nend 1\n", "aegis-lease-terms 1\n3 7 node2\n3 8 -\nend 2\n",
        "aegis-lease-terms 1\n3 7\nend 1\n", "aegis-lease-terms 1\n3 x -\nend 1\n", "aegis-lease-terms 1\n3 7 -\nend 1",
        // Format 2: the config fields are required, counted, and a valid config.
        "aegis-lease-terms 1\n3 7 node2 1 1 a -\nend 1\n", "aegis-lease-terms 2\n3 7 node2\nend 1\n",
        "aegis-lease-terms 2\n3 7 node2 1 2 a a -\nend 1\n", "aegis-lease-terms 2\n3 7 node2 0 1 a -\nend 1\n",
        "aegis-lease-terms 2\n3 7 node2 1 2 a -\nend 1\n", "aegis-lease-terms 2\n3 7 node2 1 1 a 2 b\nend 1\n",
        "aegis-lease-terms 2\n3 7 node2 1 0 -\nend 1\n", "aegis-lease-terms 2\n3 7 node2 1 1 a 0\nend 1\n",
        "aegis-lease-terms 2\n3 7 node2 1 1 a - extra\nend 1\n", "aegis-lease-terms 2\n3 7 node2 x 1 a -\nend 1\n",
    ])
    func aDamagedFileStopsTheStartInsteadOfGuessingATerm(text: String) throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try text.write(toFile: directory + "/" + TermStore.fileName, atomically: true, encoding: .utf8)
        #expect(throws: StartupError.self) { try TermStore.load(directory: directory, numShards: 16) }
    }

    @Test func aFileOfALaterFormatIsRefusedNamingTheFormatNotCalledDamaged() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "aegis-lease-terms 3\nconfig 3 7 a,b,c\nend 1\n".write(toFile: directory + "/" + TermStore.fileName, atomically: true, encoding: .utf8)
        do {
            _ = try TermStore.load(directory: directory, numShards: 16)
            Issue.record("a lease-terms file of format 3 was accepted by a reader of formats 1 and 2")
        } catch {
            #expect(error.description.contains("format 3"), "\(error.description)")
            #expect(error.description.contains("newer release"), "\(error.description)")
            #expect(!error.description.contains("damaged"), "\(error.description)")
        }
    }

    @Test func renderedTermsParseBack() throws {
        let terms: [Int: PersistedTerm] = [0: PersistedTerm(term: 1, votedFor: nil), 9: PersistedTerm(term: UInt32.max, votedFor: NodeID("a-b.c"))]
        #expect(try TermStore.parse(TermStore.render(terms), numShards: 10, path: "x") == terms)
        #expect(try TermStore.parse(TermStore.render([:]), numShards: 10, path: "x").isEmpty)
    }

    static func config(_ epoch: UInt32, _ voters: [String], outgoing: [String]? = nil) -> ShardConfig {
        ShardConfig(epoch: epoch, voters: voters.map { NodeID($0)! }, outgoing: outgoing.map { $0.map { NodeID($0)! } })!
    }

    @Test func termsWithoutConfigsStayInFormat1AndWithOneTheFileIsFormat2AndReadsBack() throws {
        let plain: [Int: PersistedTerm] = [4: PersistedTerm(term: 2, votedFor: NodeID("b"))]
        #expect(TermStore.render(plain).hasPrefix(TermStore.header + "\n"),
                "no config anywhere: the file 0.2.0 reads after a rollback")
        let terms: [Int: PersistedTerm] = [
            0: PersistedTerm(term: 3, votedFor: nil),
            4: PersistedTerm(term: 2, votedFor: NodeID("b"), config: Self.config(1, ["a", "b", "c"])),
            9: PersistedTerm(term: 8, votedFor: NodeID("d"), config: Self.config(5, ["a", "d", "b"], outgoing: ["a", "b", "c"])),
            // Node ids may hold commas and dashes; the counts keep the line unambiguous.
            7: PersistedTerm(term: 1, votedFor: nil, config: Self.config(2, ["n,1", "-x"])),
        ]
        let text = TermStore.render(terms)
        #expect(text.hasPrefix(TermStore.headerWithConfigs + "\n"))
        #expect(text.contains("\n0 3 - 0 0 -\n"), "a shard without a config in a format 2 file: \(text)")
        #expect(text.contains("\n9 8 d 5 3 a d b 3 a b c\n"), "\(text)")
        #expect(try TermStore.parse(text, numShards: 10, path: "x") == terms)
    }

    @Test func aTermBumpWithoutAConfigKeepsTheShardsConfigAcrossARestart() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = TermStore(directory: directory, terms: [:])
        try store.writeInitial()
        let config = Self.config(3, ["a", "b", "c"])
        try store.persist([(shard: 5, record: PersistedTerm(term: 4, votedFor: NodeID("a"), config: config))])
        try store.persist([(shard: 5, record: PersistedTerm(term: 6, votedFor: nil))])
        let loaded = try TermStore.load(directory: directory, numShards: 16)
        #expect(loaded.terms[5] == PersistedTerm(term: 6, votedFor: nil, config: config))
    }

    @Test func aFormat1FileReadsAsTermsWithoutConfigs() throws {
        let terms = try TermStore.parse("aegis-lease-terms 1\n3 7 node2\nend 1\n", numShards: 16, path: "x")
        #expect(terms == [3: PersistedTerm(term: 7, votedFor: NodeID("node2"))])
        #expect(terms[3]?.config == nil)
    }

    /// A node that started with an empty data_dir keeps the shards it is
    /// still blank for beside its terms, written before the first term file,
    /// so a restart before its refill finds it blank; the file shrinks as
    /// copies arrive and goes once none is blank.
    @Test func theShardsANodeIsStillBlankForOutliveARestartUntilNoneIsLeft() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try TermStore.load(directory: directory, numShards: 8)
        #expect(first.blank && first.stillBlank.isEmpty)
        let store = TermStore(directory: directory, terms: first.terms, blankShards: Set(0..<8), loaded: first)
        try store.updateBlank(Set(0..<8))
        #expect(!FileManager.default.fileExists(atPath: store.blankPath), "nothing to keep before a term file exists")
        try store.writeInitial()
        #expect(try TermStore.load(directory: directory, numShards: 8).stillBlank == Set(0..<8))

        try store.updateBlank([1, 2, 5])
        try store.persist([(shard: 1, record: PersistedTerm(term: 2, votedFor: NodeID("node3")))])
        var again = try TermStore.load(directory: directory, numShards: 8)
        #expect(again.restarted && again.stillBlank == [1, 2, 5], "\(again.summary)")
        #expect(again.summary.contains("still blank for 3 shard(s)"))

        // Restarted: the shards only shrink from what the file said.
        let restarted = TermStore(directory: directory, terms: again.terms, blankShards: again.stillBlank, loaded: again)
        try restarted.updateBlank([2, 5, 6])
        #expect(try TermStore.load(directory: directory, numShards: 8).stillBlank == [2, 5])
        try restarted.updateBlank([])
        again = try TermStore.load(directory: directory, numShards: 8)
        #expect(again.stillBlank.isEmpty && !FileManager.default.fileExists(atPath: restarted.blankPath) && again.terms.count == 1)
        let left = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(left.sorted() == [TermStore.fileName, TermStore.markerName].sorted(), "\(left)")
    }

    @Test(arguments: ["", "aegis-blank-shards 1\n1 2\nend 3\n", "aegis-blank-shards 1\n1 9\nend 2\n",
                      "aegis-blank-shards 1\n1 1\nend 2\n", "aegis-blank-shards 2\n1\nend 1\n", "aegis-blank-shards 1\n1 x\nend 2\n"])
    func aDamagedBlankFileMakesEveryShardBlank(text: String) throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = TermStore(directory: directory, terms: [:])
        try store.writeInitial()
        try text.write(toFile: store.blankPath, atomically: true, encoding: .utf8)
        let loaded = try TermStore.load(directory: directory, numShards: 8)
        #expect(loaded.stillBlank == Set(0..<8), "\(loaded.summary)")
        #expect(loaded.summary.contains("is damaged"))
    }

    @Test func renderedBlankShardsParseBack() {
        for shards: Set<Int> in [[0], [3, 1, 7], Set(0..<256)] {
            #expect(TermStore.parseBlank(TermStore.renderBlank(shards), numShards: 256) == shards)
        }
    }
}
