import AegisProtocol
import PropertyBased
import Testing

/// "Any byte string is complete, incomplete or an error — never a crash,
/// never a read out of bounds." Inputs are exactly sized heap copies, so an
/// out-of-bounds read trips the debug bounds checks of the buffer views (and
/// AddressSanitizer under `--sanitize=address`). Each property also checks
/// that the verdict is stable when more bytes arrive: a complete command
/// stays the same command, an error stays an error.
@Suite struct RobustnessTests {
    static let noise = protocolByte.array(of: 0...96)
    static let suffix = protocolByte.array(of: 1...16)
    static let smallLimits = RESPLimits(maxArguments: 8, maxBulkLength: 40, maxInlineLength: 48)

    /// Noise that starts like a request more often than chance would, or a
    /// valid command with one byte changed.
    static let respLike = zip(Gen.int(in: 0...5), Gen.int(in: 0...1000), noise).map { kind, spot, rest -> [UInt8] in
        switch kind {
        case 0: return bytes("*") + rest
        case 1: return bytes("*2\r\n$") + rest
        case 2: return bytes("SET \"") + rest
        case 3: return bytes("*2\r\n$3\r\nGET\r\n") + rest
        case 4:
            var command = encodeCommand([bytes("SET"), Array(rest.prefix(5)), Array(rest.dropFirst(5))])
            command[spot % command.count] = rest.isEmpty ? 0 : rest[spot % rest.count]
            return command
        default: return rest
        }
    }

    @Test(arguments: [RESPLimits(), smallLimits])
    func requestParserNeverCrashes(limits: RESPLimits) async {
        await propertyCheck(count: 2000, input: Self.respLike, Self.suffix) { input, more in
            let (result, args) = parseRequest(input, limits: limits)
            switch result {
            case .complete(let consumed):
                #expect(consumed > 0 && consumed <= input.count)
                #expect(args.count <= limits.maxArguments)
                let (again, argsAgain) = parseRequest(input + more, limits: limits)
                #expect(again == result)
                #expect(argsAgain == args)
                #expect(parseRequest(Array(input[..<consumed]), limits: limits) == (result, args))
            case .incomplete:
                #expect(input.count <= limits.maxInlineLength + 2 || input.first == UInt8(ascii: "*"))
            case .protocolError(let message):
                #expect(message.hasPrefix("Protocol error: "))
                if case .protocolError = parseRequest(input + more, limits: limits).0 {} else {
                    Issue.record("error became something else with more bytes")
                }
            }
        }
    }

    @Test func argumentRangesStayInsideTheCommand() async {
        await propertyCheck(count: 2000, input: Self.respLike) { input in
            let args = RESPArguments()
            withScratch(input) { buffer in
                let result = RESPRequestParser.parse(buffer, into: args, limits: RESPLimits())
                guard case .complete(let consumed) = result else { return }
                for index in 0..<args.count {
                    #expect(args.offset(index) >= 0)
                    #expect(args.length(index) >= 0)
                    #expect(args.offset(index) + args.length(index) <= consumed)
                }
                // The consumed bytes, as the parse left them, mean the same command again
                // (what a server relies on when it forwards them raw).
                #expect(parseRequest(Array(buffer[..<consumed])) == (result, collect(args, buffer, result)))
            }
        }
    }

    /// Noise behind a header that is right more often than chance would make
    /// it, or a valid request with one byte changed.
    static let binaryLike = zip(Gen.int(in: 0...4), Gen.uint8(in: 0...60), Gen.int(in: 0...1000), noise).map {
        kind, length, spot, rest -> [UInt8] in
        switch kind {
        case 0: return [0, 0, 0, 35 &+ length, 0xAE, 0x01] + rest
        case 1: return rawHeader(length: 35 + UInt32(length), keyLength: UInt32(length / 2), valueLength: UInt32(length - length / 2)) + rest
        case 2: return [0, 0, 0, length] + rest
        case 3:
            var frame = RequestFields(command: length, requestID: UInt64(spot), key: Array(rest.prefix(Int(length) % 9)),
                                      value: Array(rest.dropFirst(Int(length) % 9)), ttlMs: 0, version: 0).encoded()
            frame[spot % frame.count] = rest.isEmpty ? 0xFF : rest[spot % rest.count]
            return frame
        default: return rest
        }
    }

    @Test(arguments: [BinaryLimits(), BinaryLimits(maxKeyLength: 8, maxValueLength: 16)])
    func binaryParserNeverCrashes(limits: BinaryLimits) async {
        await propertyCheck(count: 2000, input: Self.binaryLike, Self.suffix) { input, more in
            let result = withScratch(input) { BinaryFrameParser.parse($0, limits: limits) }
            switch result {
            case .complete(let request):
                #expect(request.frameLength <= input.count)
                #expect(request.keyLength <= limits.maxKeyLength && request.valueLength <= limits.maxValueLength)
                #expect(request.keyOffset + request.keyLength == request.valueOffset)
                #expect(request.valueOffset + request.valueLength == request.frameLength)
                #expect(withScratch(input + more) { BinaryFrameParser.parse($0, limits: limits) } == result)
            case .incomplete:
                break
            case .oversized(_, _, let frameLength):
                #expect(frameLength <= input.count)
                #expect(withScratch(input + more) { BinaryFrameParser.parse($0, limits: limits) } == result)
            case .invalid(_, let requestID):
                #expect((requestID != nil) == (input.count >= 15))
                if case .invalid = withScratch(input + more, { BinaryFrameParser.parse($0, limits: limits) }) {} else {
                    Issue.record("invalid became something else with more bytes")
                }
            }
        }
    }

    @Test func replyParsersNeverCrash() async {
        await propertyCheck(count: 2000, input: Self.respLike, Self.binaryLike) { resp, binary in
            _ = withScratch(resp) { try? RESPReplyParser.parse($0) }
            _ = withScratch(binary) { try? BinaryResponseParser.parse($0) }
            if let (_, consumed) = withScratch(resp, { try? RESPReplyParser.parse($0) }) {
                #expect(consumed <= resp.count)
            }
            if let response = withScratch(binary, { try? BinaryResponseParser.parse($0) }) {
                #expect(response.frameLength <= binary.count)
            }
        }
    }

    @Test func snifferClassifiesEveryByte() {
        for byte in UInt8.min...UInt8.max {
            let kind = WireProtocolSniffer.classify(firstByte: byte)
            // Only a legal frame's length high byte is binary; redis-server
            // reads everything else (empty lines, spaces, quotes, digits) as RESP.
            #expect(kind == (byte <= 4 ? .binary : .resp), "byte \(byte)")
        }
        // A real binary frame and real RESP commands sniff as expected.
        let frame = RequestFields(command: 1, requestID: 1, key: bytes("k"), value: [], ttlMs: 0, version: 0).encoded()
        #expect(WireProtocolSniffer.classify(firstByte: frame[0]) == .binary)
        #expect(WireProtocolSniffer.classify(firstByte: encodeCommand([bytes("PING")])[0]) == .resp)
        #expect(WireProtocolSniffer.classify(firstByte: UInt8(ascii: "P")) == .resp)
    }
}
