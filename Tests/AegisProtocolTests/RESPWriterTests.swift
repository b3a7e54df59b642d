import AegisProtocol
import PropertyBased
import Testing

@Suite struct RESPWriterTests {
    @Test func exactBytes() {
        #expect(text(written { RESPWriter.simpleString("OK", into: $0) }) == "+OK\r\n")
        #expect(text(written { out in bytes("PONG").withUnsafeBytes { RESPWriter.simpleString(bytes: $0, into: out) } }) == "+PONG\r\n")
        #expect(text(written { RESPWriter.error("ERR syntax error", into: $0) }) == "-ERR syntax error\r\n")
        #expect(text(written { RESPWriter.error(string: "ERR bad\r\nthing\n", into: $0) }) == "-ERR bad  thing \r\n")
        #expect(text(written { RESPWriter.integer(0, into: $0) }) == ":0\r\n")
        #expect(text(written { RESPWriter.integer(-42, into: $0) }) == ":-42\r\n")
        #expect(text(written { RESPWriter.integer(Int.min, into: $0) }) == ":-9223372036854775808\r\n")
        #expect(text(written { RESPWriter.integer(Int.max, into: $0) }) == ":9223372036854775807\r\n")
        #expect(text(written { out in bytes("hello").withUnsafeBytes { RESPWriter.bulk($0, into: out) } }) == "$5\r\nhello\r\n")
        #expect(text(written { RESPWriter.bulk(UnsafeRawBufferPointer(start: nil, count: 0), into: $0) }) == "$0\r\n\r\n")
        #expect(text(written { RESPWriter.bulk(string: "héllo", into: $0) }) == "$6\r\nhéllo\r\n")
        #expect(text(written { RESPWriter.null(.resp2, into: $0) }) == "$-1\r\n")
        #expect(text(written { RESPWriter.null(.resp3, into: $0) }) == "_\r\n")
        #expect(text(written { RESPWriter.nullArray(.resp2, into: $0) }) == "*-1\r\n")
        #expect(text(written { RESPWriter.nullArray(.resp3, into: $0) }) == "_\r\n")
        #expect(text(written { RESPWriter.arrayHeader(3, into: $0) }) == "*3\r\n")
        #expect(text(written { RESPWriter.mapHeader(1, .resp3, into: $0) }) == "%1\r\n")
        #expect(text(written { RESPWriter.mapHeader(2, .resp2, into: $0) }) == "*4\r\n")
        #expect(text(written { RESPWriter.verbatim("a\nb", .resp3, into: $0) }) == "=7\r\ntxt:a\nb\r\n")
        #expect(text(written { RESPWriter.verbatim("a\nb", .resp2, into: $0) }) == "$3\r\na\nb\r\n")
        #expect(text(written { RESPWriter.double(1.5, .resp3, into: $0) }) == ",1.5\r\n")
        #expect(text(written { RESPWriter.double(1.5, .resp2, into: $0) }) == "$3\r\n1.5\r\n")
        #expect(text(written { RESPWriter.double(3, .resp3, into: $0) }) == ",3\r\n")
        #expect(text(written { RESPWriter.double(-.infinity, .resp3, into: $0) }) == ",-inf\r\n")
        #expect(text(written { RESPWriter.double(.infinity, .resp2, into: $0) }) == "$3\r\ninf\r\n")
        #expect(text(written { RESPWriter.double(.nan, .resp3, into: $0) }) == ",nan\r\n")
        #expect(text(written { RESPWriter.boolean(true, .resp3, into: $0) }) == "#t\r\n")
        #expect(text(written { RESPWriter.boolean(false, .resp2, into: $0) }) == ":0\r\n")
    }

    @Test func requestWriterBytes() {
        #expect(text(written { RESPRequestWriter.command([bytes("GET"), bytes("k")], into: $0) }) == "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        #expect(text(written { RESPRequestWriter.command(strings: ["PING"], into: $0) }) == "*1\r\n$4\r\nPING\r\n")
    }

    @Test func writesAppendAfterExistingBytes() {
        let out = WireBuffer(capacity: 4)
        RESPWriter.simpleString("OK", into: out)
        for index in 0..<1000 { RESPWriter.integer(index, into: out) }
        bytes(String(repeating: "x", count: 5000)).withUnsafeBytes { RESPWriter.bulk($0, into: out) }
        withScratch(out.readableArray()) { buffer in
            var position = 0
            var values: [RESPValue] = []
            while let (value, consumed) = try! RESPReplyParser.parse(UnsafeRawBufferPointer(rebasing: buffer[position...])) {
                values.append(value)
                position += consumed
            }
            #expect(position == buffer.count)
            #expect(values.count == 1002)
            #expect(values[0] == .simple("OK"))
            #expect(values[1000] == .integer(999))
            #expect(values[1001] == .bulk(Array(repeating: UInt8(ascii: "x"), count: 5000)))
        }
    }

    @Test func formatDoubleRoundTrips() async {
        await propertyCheck(count: 500, input: Gen.uint64()) { bits in
            let value = Double(bitPattern: bits)
            guard !value.isNaN else { return }
            let formatted = RESPWriter.formatDouble(value)
            #expect(Double(formatted) == value, "\(formatted)")
        }
    }

    // MARK: - Writer → reply parser round trips

    @Test func repliesRoundTripThroughTheReplyParser() async {
        await propertyCheck(count: 300, input: Gen.uint64(), Gen.bool) { seed, resp3 in
            var rng = SplitMix(state: seed)
            let version: RESPVersion = resp3 ? .resp3 : .resp2
            let value = randomReply(&rng, depth: 0, version: version)
            let encoded = written { encode(value, version, into: $0) }
            let decoded = withScratch(encoded) { try? RESPReplyParser.parse($0) }
            #expect(decoded?.0 == value)
            #expect(decoded?.consumed == encoded.count)
        }
    }

    @Test func replyParserNeedsEveryByte() async {
        await propertyCheck(count: 100, input: Gen.uint64(), Gen.bool) { seed, resp3 in
            var rng = SplitMix(state: seed)
            let version: RESPVersion = resp3 ? .resp3 : .resp2
            let encoded = written { encode(randomReply(&rng, depth: 0, version: version), version, into: $0) }
            for cut in 0..<encoded.count {
                let partial = withScratch(Array(encoded[..<cut])) { try? RESPReplyParser.parse($0) }
                #expect(partial == nil, "cut at \(cut): \(text(encoded).debugDescription)")
            }
        }
    }

    @Test func pipelinedRepliesParseInOrder() async {
        await propertyCheck(count: 100, input: Gen.uint64(), Gen.int(in: 1...8)) { seed, count in
            var rng = SplitMix(state: seed)
            let values = (0..<count).map { _ in randomReply(&rng, depth: 0, version: .resp3) }
            let encoded = written { out in for value in values { encode(value, .resp3, into: out) } }
            withScratch(encoded) { buffer in
                var position = 0
                var decoded: [RESPValue] = []
                while let (value, consumed) = try! RESPReplyParser.parse(UnsafeRawBufferPointer(rebasing: buffer[position...])) {
                    decoded.append(value)
                    position += consumed
                }
                #expect(decoded == values)
                #expect(position == encoded.count)
            }
        }
    }
}

/// A random reply that RESPWriter can express in `version` (RESP2 has no
/// maps, doubles, booleans or verbatim strings on the wire: those are
/// written as arrays, bulk strings and integers and read back as such).
func randomReply(_ rng: inout SplitMix, depth: Int, version: RESPVersion) -> RESPValue {
    let kinds = depth >= 3 ? 6 : 8
    switch rng.below(kinds) {
    case 0: return .simple(randomText(&rng, allowNewlines: false))
    case 1: return .error("ERR " + randomText(&rng, allowNewlines: false))
    case 2: return .integer(Int(bitPattern: UInt(rng.next())) >> rng.below(64))
    case 3: return .bulk((0..<rng.below(40)).map { _ in interestingBytes[rng.below(interestingBytes.count)] })
    case 4: return .null
    case 5:
        guard version == .resp3 else { return .bulk(Array(randomText(&rng, allowNewlines: true).utf8)) }
        switch rng.below(3) {
        case 0: return .double(Double(Int(rng.next() % 2_000_001) - 1_000_000) / 64)
        case 1: return .boolean(rng.below(2) == 0)
        default: return .verbatim(randomText(&rng, allowNewlines: true))
        }
    case 6: return .array((0..<rng.below(5)).map { _ in randomReply(&rng, depth: depth + 1, version: version) })
    default:
        let pairs = (0..<rng.below(4)).map { _ in
            RESPPair(randomReply(&rng, depth: depth + 1, version: version), randomReply(&rng, depth: depth + 1, version: version))
        }
        guard version == .resp3 else { return .array(pairs.flatMap { [$0.key, $0.value] }) }
        return .map(pairs)
    }
}

func randomText(_ rng: inout SplitMix, allowNewlines: Bool) -> String {
    let alphabet = Array("abc XYZ 019 é✓:$*" + (allowNewlines ? "\r\n" : ""))
    return String((0..<rng.below(20)).map { _ in alphabet[rng.below(alphabet.count)] })
}

/// Writes `value` with RESPWriter, the way the server would.
func encode(_ value: RESPValue, _ version: RESPVersion, into out: WireBuffer) {
    switch value {
    case .simple(let s): Array(s.utf8).withUnsafeBytes { RESPWriter.simpleString(bytes: $0, into: out) }
    case .error(let s): RESPWriter.error(string: s, into: out)
    case .integer(let v): RESPWriter.integer(v, into: out)
    case .bulk(let b): b.withUnsafeBytes { RESPWriter.bulk($0, into: out) }
    case .null: RESPWriter.null(version, into: out)
    case .array(let items), .set(let items), .push(let items):
        RESPWriter.arrayHeader(items.count, into: out)
        for item in items { encode(item, version, into: out) }
    case .map(let pairs):
        RESPWriter.mapHeader(pairs.count, version, into: out)
        for pair in pairs {
            encode(pair.key, version, into: out)
            encode(pair.value, version, into: out)
        }
    case .double(let v): RESPWriter.double(v, version, into: out)
    case .boolean(let v): RESPWriter.boolean(v, version, into: out)
    case .verbatim(let s): RESPWriter.verbatim(s, version, into: out)
    case .bigNumber(let s): RESPWriter.bulk(string: s, into: out)
    }
}
