import AegisProtocol
import PropertyBased
import Testing

@Suite struct MemcacheTextTests {
    func parse(_ input: [UInt8]) throws -> (MemcacheReply, consumed: Int)? {
        try withScratch(input) { try MemcacheReplyParser.parse($0) }
    }

    @Test func writerBytes() {
        #expect(text(written { MemcacheTextWriter.get(key: bytes("k1"), into: $0) }) == "get k1\r\n")
        #expect(text(written { MemcacheTextWriter.set(key: bytes("k1"), value: bytes("a\r\nb"), flags: 5, exptime: 60, into: $0) })
            == "set k1 5 60 4\r\na\r\nb\r\n")
        #expect(text(written { MemcacheTextWriter.set(key: bytes("k"), value: [], noreply: true, into: $0) }) == "set k 0 0 0 noreply\r\n\r\n")
        #expect(text(written { MemcacheTextWriter.delete(key: bytes("k1"), into: $0) }) == "delete k1\r\n")
        #expect(text(written { MemcacheTextWriter.delete(key: bytes("k1"), noreply: true, into: $0) }) == "delete k1 noreply\r\n")
    }

    @Test func simpleReplies() throws {
        #expect(try parse(bytes("STORED\r\n"))! == (.stored, 8))
        #expect(try parse(bytes("NOT_FOUND\r\n"))!.0 == .notFound)
        #expect(try parse(bytes("DELETED\r\n"))!.0 == .deleted)
        #expect(try parse(bytes("END\r\n"))! == (.values([]), 5))
        #expect(try parse(bytes("ERROR\r\n"))!.0 == .error)
        #expect(try parse(bytes("CLIENT_ERROR bad data chunk\r\n"))!.0 == .clientError("bad data chunk"))
        #expect(try parse(bytes("SERVER_ERROR out of memory\r\n"))!.0 == .serverError("out of memory"))
        #expect(try parse(bytes("VERSION 1.6.21\r\n"))!.0 == .version("1.6.21"))
        #expect(try parse(bytes("42\r\n"))!.0 == .number(42))
    }

    @Test func valueReplies() throws {
        let reply = bytes("VALUE k1 5 4\r\na\r\nb\r\nVALUE k2 0 0 99\r\n\r\nEND\r\nSTORED\r\n")
        let (parsed, consumed) = try #require(try parse(reply))
        #expect(parsed == .values([
            MemcacheItem(key: bytes("k1"), flags: 5, value: bytes("a\r\nb")),
            MemcacheItem(key: bytes("k2"), flags: 0, value: [], cas: 99),
        ]))
        #expect(consumed == reply.count - 8)
        for cut in 0..<(reply.count - 8) {
            #expect(try parse(Array(reply[..<cut])) == nil, "cut at \(cut)")
        }
    }

    @Test func malformedReplies() {
        for bad in ["WHAT\r\n", "VALUE k\r\n", "VALUE k x 1\r\na\r\nEND\r\n", "VALUE k 0 1\r\nab\r\nEND\r\n", "VALUE k 0 1\r\na\r\nSTORED\r\n", "OK\rX"] {
            #expect(throws: MemcacheReplyError.self, "\(bad.debugDescription)") { try parse(bytes(bad)) }
        }
    }

    @Test func randomBytesNeverCrash() async {
        let prefixes = ["VALUE k 0 ", "VALUE ", "END", "", "STORED", "VALUE k 1 3 7\r\n"]
        await propertyCheck(count: 1000, input: Gen.int(in: 0...5), protocolByte.array(of: 0...64)) { kind, noise in
            let input = bytes(prefixes[kind]) + noise
            if let (_, consumed) = try? parse(input) { #expect(consumed <= input.count) }
        }
    }
}
