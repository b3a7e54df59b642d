@testable import AegisServer
import AegisProtocol
import AegisStore
import Testing

/// ScanPage merges every reactor's part of a SCAN page: the page's cursor is
/// the lowest stop, and no key comes back that the next call would return
/// again.
struct ScanPageTests {
    static let shardCount = 8

    /// A SCAN reply as a reactor writes its part.
    func part(cursor: UInt64, _ keys: [String]) -> [UInt8] {
        let out = WireBuffer()
        RESPWriter.arrayHeader(2, into: out)
        RESPWriter.bulk(string: String(cursor), into: out)
        RESPWriter.arrayHeader(keys.count, into: out)
        for key in keys { RESPWriter.bulk(string: key, into: out) }
        return out.readableArray()
    }

    func shard(_ key: String) -> Int {
        Array(key.utf8).withUnsafeBytes { KeyHash.shard(of: KeyHash.hash($0), shardCount: Self.shardCount) }
    }

    func merge(_ parts: [[UInt8]]) throws -> (UInt64, [String]) {
        var page = ScanPage(shardCount: Self.shardCount)
        for part in parts { part.withUnsafeBytes { page.add($0) } }
        let out = WireBuffer()
        page.merged(into: out)
        let (cursor, keys) = try #require(ScanPage.parse(out.readableArray()))
        return (cursor, keys.map { String(decoding: $0, as: UTF8.self) })
    }

    @Test func partsThatFinishedMakeOneWholePage() throws {
        let (cursor, keys) = try merge([part(cursor: 0, ["a", "b"]), part(cursor: 0, ["c"])])
        #expect(cursor == 0)
        #expect(keys.sorted() == ["a", "b", "c"])
    }

    @Test func keysAtOrPastTheLowestStopAreLeftForTheNextCall() throws {
        let keys = (0..<64).map { "key:\($0)" }
        // One part stopped at the start of shard 4, the other finished.
        let stop = UInt64(4) << 40
        let (cursor, kept) = try merge([part(cursor: stop, keys.filter { shard($0) < 4 && shard($0) % 2 == 0 }),
                                        part(cursor: 0, keys.filter { shard($0) % 2 == 1 })])
        #expect(cursor == stop)
        #expect(kept.sorted() == keys.filter { shard($0) < 4 }.sorted())
        // A stop inside shard 5 is its owner's: its keys there are kept.
        let inside = UInt64(5) << 40 | 77
        let (cursorInside, keptInside) = try merge([part(cursor: inside, keys.filter { shard($0) <= 5 && shard($0) % 2 == 1 }),
                                                    part(cursor: 0, keys.filter { shard($0) % 2 == 0 })])
        #expect(cursorInside == inside)
        #expect(keptInside.sorted() == keys.filter { shard($0) <= 5 }.sorted())
    }

    @Test func aPartThatIsNotAScanReplyIsAnErrorNotAPage() {
        var page = ScanPage(shardCount: Self.shardCount)
        Array("+OK\r\n".utf8).withUnsafeBytes { page.add($0) }
        let out = WireBuffer()
        page.merged(into: out)
        #expect(out.readableArray().first == UInt8(ascii: "-"))
    }
}
