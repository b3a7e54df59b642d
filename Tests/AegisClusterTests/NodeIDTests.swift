import AegisCluster
import Testing

@Suite struct NodeIDTests {
    @Test func acceptsWhatNodeIDConfigAccepts() {
        #expect(NodeID("node1")?.name == "node1")
        #expect(NodeID("ä-node") != nil)
        #expect(NodeID(String(repeating: "n", count: 255)) != nil)
    }

    @Test func refusesWhatCannotBeAName() {
        #expect(NodeID("") == nil)
        #expect(NodeID("node 1") == nil)
        #expect(NodeID("node\u{7F}") == nil)
        #expect(NodeID("node\n") == nil)
        #expect(NodeID(String(repeating: "n", count: 256)) == nil)
    }

    @Test func ordersByBytesNotByUnicodeCollation() {
        // "Z" (0x5A) sorts before "a" (0x61) in bytes; a locale-aware order would not.
        #expect(NodeID("Z")! < NodeID("a")!)
        #expect([NodeID("b")!, NodeID("a")!, NodeID("B")!].sorted().map(\.name) == ["B", "a", "b"])
    }
}
