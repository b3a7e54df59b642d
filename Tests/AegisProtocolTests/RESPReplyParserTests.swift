import AegisProtocol
import PropertyBased
import Testing

@Suite struct RESPReplyParserTests {
    func parse(_ input: String) throws -> (RESPValue, consumed: Int)? {
        try withScratch(bytes(input)) { try RESPReplyParser.parse($0) }
    }

    @Test func resp2Types() throws {
        #expect(try parse("+OK\r\n")! == (.simple("OK"), 5))
        #expect(try parse("-ERR no\r\n")! == (.error("ERR no"), 9))
        #expect(try parse(":-12\r\n")! == (.integer(-12), 6))
        #expect(try parse("$3\r\nabc\r\n")! == (.bulk(bytes("abc")), 9))
        #expect(try parse("$-1\r\n")! == (.null, 5))
        #expect(try parse("*-1\r\n")! == (.null, 5))
        #expect(try parse("*2\r\n:1\r\n$0\r\n\r\n")! == (.array([.integer(1), .bulk([])]), 14))
    }

    @Test func resp3Types() throws {
        #expect(try parse("_\r\n")! == (.null, 3))
        #expect(try parse("#t\r\n")!.0 == .boolean(true))
        #expect(try parse("#f\r\n")!.0 == .boolean(false))
        #expect(try parse(",3.25\r\n")!.0 == .double(3.25))
        #expect(try parse(",-inf\r\n")!.0 == .double(-.infinity))
        #expect(try parse("(12345678901234567890123\r\n")!.0 == .bigNumber("12345678901234567890123"))
        #expect(try parse("=8\r\ntxt:hi\r\n\r\n")!.0 == .verbatim("hi\r\n"))
        #expect(try parse("!5\r\nERR x\r\n")!.0 == .error("ERR x"))
        #expect(try parse("%1\r\n+a\r\n:1\r\n")!.0 == .map([RESPPair(.simple("a"), .integer(1))]))
        #expect(try parse("~1\r\n:1\r\n")!.0 == .set([.integer(1)]))
        #expect(try parse(">2\r\n+message\r\n:1\r\n")!.0 == .push([.simple("message"), .integer(1)]))
        #expect(try parse("|1\r\n+ttl\r\n:3\r\n:7\r\n")! == (.integer(7), 18))
    }

    @Test func incompleteReplies() throws {
        for partial in ["", "+OK", "+OK\r", "$3\r\nab", "$3\r\nabc\r", "*2\r\n:1\r\n", "%1\r\n+a\r\n", "=8\r\ntxt:"] {
            #expect(try parse(partial) == nil, "\(partial.debugDescription)")
        }
    }

    @Test func malformedReplies() {
        for bad in ["?\r\n", ":x\r\n", ":99999999999999999999999\r\n", "$-2\r\n", "$3\r\nabcde", "*-2\r\n", "#x\r\n", ",abc\r\n",
                    "+a\nb\r\n", "+a\rb\r\n", "_x\r\n", "=2\r\nab\r\n", "(12a\r\n", "%-1\r\n"] {
            #expect(throws: RESPReplyError.self, "\(bad.debugDescription)") { try parse(bad) }
        }
    }

    @Test func deepNestingIsAnErrorNotACrash() {
        let deep = String(repeating: "*1\r\n", count: 100_000) + ":1\r\n"
        #expect(throws: RESPReplyError.self) { try parse(deep) }
        let attributes = String(repeating: "|0\r\n", count: 100_000) + ":1\r\n"
        #expect(throws: RESPReplyError.self) { try parse(attributes) }
        let fine = String(repeating: "*1\r\n", count: 100) + ":1\r\n"
        #expect((try? parse(fine)) != nil)
    }

    @Test func hugeCountsDoNotAllocateAhead() throws {
        #expect(try parse("*2147483647\r\n:1\r\n") == nil)
        #expect(try parse("$9223372036854775807\r\n") == nil)
        #expect(try parse("%4611686018427387903\r\n") == nil)
    }
}
