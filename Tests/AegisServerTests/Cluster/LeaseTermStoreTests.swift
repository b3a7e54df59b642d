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
        "", "aegis-lease-terms 1\n", "aegis-lease-terms 2\nend 0\n", "aegis-lease-terms 1\nend 1\n",
        "aegis-lease-terms 1\n3 7 node2\nend 0\n", "aegis-lease-terms 1\n16 7 node2\nend 1\n",
        "aegis-lease-terms 1\n3 0 node2\nend 1\n", "aegis-lease-terms 1\n3 7 node2\n3 8 -\nend 2\n",
        "aegis-lease-terms 1\n3 7\nend 1\n", "aegis-lease-terms 1\n3 x -\nend 1\n", "aegis-lease-terms 1\n3 7 -\nend 1",
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
        try "aegis-lease-terms 2\nconfig 3 7 a,b,c\nend 1\n".write(toFile: directory + "/" + TermStore.fileName, atomically: true, encoding: .utf8)
        do {
            _ = try TermStore.load(directory: directory, numShards: 16)
            Issue.record("a lease-terms file of format 2 was accepted by a format-1 reader")
        } catch {
            #expect(error.description.contains("format 2"), "\(error.description)")
            #expect(error.description.contains("newer release"), "\(error.description)")
            #expect(!error.description.contains("damaged"), "\(error.description)")
        }
    }

    @Test func renderedTermsParseBack() throws {
        let terms: [Int: PersistedTerm] = [0: PersistedTerm(term: 1, votedFor: nil), 9: PersistedTerm(term: UInt32.max, votedFor: NodeID("a-b.c"))]
        #expect(try TermStore.parse(TermStore.render(terms), numShards: 10, path: "x") == terms)
        #expect(try TermStore.parse(TermStore.render([:]), numShards: 10, path: "x").isEmpty)
    }
}
