import AegisProtocol
import PropertyBased
import Testing

/// A request as the test generators describe it.
struct RequestFields: Equatable, Sendable {
    var command: UInt8
    var requestID: UInt64
    var key: [UInt8]
    var value: [UInt8]
    var ttlMs: Int64
    var version: UInt64

    func encoded() -> [UInt8] {
        written {
            BinaryRequestWriter.write(
                command: command, requestID: requestID, key: key, value: value, ttlMs: ttlMs, version: version, into: $0)
        }
    }
}

let requestGen = zip(
    Gen.uint8(), Gen.uint64(), Gen.uint8().array(of: 0...40), Gen.uint8().array(of: 0...200), Gen.int64(), Gen.uint64()
).map { RequestFields(command: $0, requestID: $1, key: $2, value: $3, ttlMs: $4, version: $5) }

func parseBinary(_ input: [UInt8], limits: BinaryLimits = BinaryLimits()) -> (BinaryParseResult, RequestFields?) {
    withScratch(input) { buffer in
        let result = BinaryFrameParser.parse(buffer, limits: limits)
        guard case .complete(let request) = result else { return (result, nil) }
        return (result, RequestFields(
            command: request.commandCode, requestID: request.requestID,
            key: Array(request.key(in: buffer)), value: Array(request.value(in: buffer)),
            ttlMs: request.ttlMs, version: request.version))
    }
}

func parseResponse(_ input: [UInt8]) throws -> BinaryResponse? {
    try withScratch(input) { try BinaryResponseParser.parse($0) }
}

/// A hand-built request header: length, magic, version, command, id, key_len, value_len, ttl, version.
func rawHeader(
    length: UInt32, magic: UInt8 = 0xAE, protocolVersion: UInt8 = 1, command: UInt8 = 1, requestID: UInt64 = 0x1122_3344_5566_7788,
    keyLength: UInt32 = 0, valueLength: UInt32 = 0
) -> [UInt8] {
    let out = WireBuffer()
    out.appendBigEndian(length)
    out.append(byte: magic)
    out.append(byte: protocolVersion)
    out.append(byte: command)
    out.appendBigEndian(requestID)
    out.appendBigEndian(keyLength)
    out.appendBigEndian(valueLength)
    out.appendBigEndian(Int64(0))
    out.appendBigEndian(UInt64(0))
    return out.readableArray()
}

@Suite struct BinaryProtocolTests {
    // MARK: - Exact bytes

    @Test func requestBytes() {
        let frame = RequestFields(command: 2, requestID: 0x0102_0304_0506_0708, key: bytes("k"), value: bytes("vv"),
                                  ttlMs: -2, version: 9).encoded()
        #expect(frame == [
            0, 0, 0, 38,  // length = 35 + 1 + 2
            0xAE, 0x01, 0x02,  // magic, version, SET
            1, 2, 3, 4, 5, 6, 7, 8,  // request id
            0, 0, 0, 1,  // key_len
            0, 0, 0, 2,  // value_len
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,  // ttl -2
            0, 0, 0, 0, 0, 0, 0, 9,  // version
            UInt8(ascii: "k"), UInt8(ascii: "v"), UInt8(ascii: "v"),
        ])
    }

    @Test func okResponseBytes() {
        let frame = written { out in
            bytes("key").withUnsafeBytes { key in
                bytes("value").withUnsafeBytes { value in
                    BinaryResponseWriter.write(status: .ok, requestID: 0x0102_0304_0506_0708, key: key, value: value,
                                               ttlMs: 1500, version: 7, into: out)
                }
            }
        }
        #expect(frame.count == 4 + 43 + 3 + 5)
        #expect(Array(frame[0..<4]) == [0, 0, 0, 51])  // 43 + 3 + 5
        #expect(frame[4] == 0xAE)
        #expect(frame[5] == 0x01)
        #expect(frame[6] == 0x00)  // OK
        #expect(Array(frame[7..<15]) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(Array(frame[15..<19]) == [0, 0, 0, 3])  // key_len
        #expect(Array(frame[19..<23]) == [0, 0, 0, 5])  // value_len
        #expect(Array(frame[23..<31]) == [0, 0, 0, 0, 0, 0, 0x05, 0xDC])  // ttl 1500
        #expect(Array(frame[31..<39]) == [0, 0, 0, 0, 0, 0, 0, 7])  // version
        #expect(Array(frame[39..<43]) == [0, 0, 0, 0])  // error_len
        #expect(Array(frame[43..<47]) == [0, 0, 0, 0])  // addr_len
        #expect(Array(frame[47...]) == bytes("keyvalue"))
    }

    @Test func errorAndRedirectResponseBytes() throws {
        let error = written { BinaryResponseWriter.write(status: .error, requestID: 5, error: "unknown command", into: $0) }
        #expect(Array(error[0..<4]) == [0, 0, 0, 43 + 15])
        #expect(error[6] == 2)
        #expect(Array(error[39..<43]) == [0, 0, 0, 15])
        #expect(Array(error[47...]) == bytes("unknown command"))

        let dynamic = written { BinaryResponseWriter.write(status: .error, requestID: 6, errorText: "bad \(42)", into: $0) }
        #expect(try parseResponse(dynamic) == BinaryResponse(status: 2, requestID: 6, error: "bad 42", frameLength: 53))

        let redirect = written { BinaryResponseWriter.writeRedirect(requestID: 7, address: "10.0.0.2:7700", into: $0) }
        #expect(redirect[6] == 3)
        #expect(Array(redirect[43..<47]) == [0, 0, 0, 13])
        #expect(try parseResponse(redirect) == BinaryResponse(status: 3, requestID: 7, address: "10.0.0.2:7700", frameLength: 60))
    }

    @Test func pingIsTheSmallestFrame() {
        let frame = RequestFields(command: BinaryCommand.ping.rawValue, requestID: 1, key: [], value: [], ttlMs: 0, version: 0).encoded()
        #expect(frame.count == 39)
        let (result, _) = parseBinary(frame)
        #expect(result == .complete(BinaryRequest(
            commandCode: 4, requestID: 1, ttlMs: 0, version: 0, keyOffset: 39, keyLength: 0, valueOffset: 39, valueLength: 0,
            frameLength: 39)))
    }

    @Test func unknownCommandCodesStillParse() {
        let (result, fields) = parseBinary(RequestFields(command: 200, requestID: 9, key: bytes("k"), value: [], ttlMs: 0, version: 0).encoded())
        guard case .complete(let request) = result else {
            Issue.record("expected complete, got \(result)")
            return
        }
        #expect(request.command == nil)
        #expect(fields?.command == 200)
    }

    // MARK: - Malformed frames

    @Test func hugeLengthIsInvalidFromFourBytes() {
        #expect(parseBinary([0x80, 0, 0, 0]).0 == .invalid(message: "frame too large", requestID: nil))
        #expect(parseBinary([0xFF, 0xFF, 0xFF, 0xFF]).0 == .invalid(message: "frame too large", requestID: nil))
        // With the request id readable it is reported.
        let header = rawHeader(length: 1 << 31)
        #expect(parseBinary(Array(header[0..<15])).0 == .invalid(message: "frame too large", requestID: 0x1122_3344_5566_7788))
        #expect(parseBinary(Array(header[0..<14])).0 == .invalid(message: "frame too large", requestID: nil))
        // Just over the limit of the configured sizes.
        let limits = BinaryLimits(maxKeyLength: 10, maxValueLength: 100)
        #expect(parseBinary(Array(rawHeader(length: 146)[0..<4]), limits: limits).0 == .invalid(message: "frame too large", requestID: nil))
        #expect(parseBinary(Array(rawHeader(length: 145)[0..<4]), limits: limits).0 == .incomplete)
    }

    @Test func shortLength() {
        #expect(parseBinary([0, 0, 0, 34]).0 == .invalid(message: "frame shorter than the request header", requestID: nil))
        #expect(parseBinary([0, 0, 0, 0]).0 == .invalid(message: "frame shorter than the request header", requestID: nil))
    }

    @Test func wrongMagicAndVersion() {
        #expect(parseBinary([0, 0, 0, 35, 0xAF]).0 == .invalid(message: "bad magic byte", requestID: nil))
        #expect(parseBinary(rawHeader(length: 35, magic: 0)).0 == .invalid(message: "bad magic byte", requestID: 0x1122_3344_5566_7788))
        #expect(parseBinary([0, 0, 0, 35, 0xAE, 2]).0 == .invalid(message: "unsupported protocol version", requestID: nil))
        #expect(parseBinary(rawHeader(length: 35, protocolVersion: 0)).0
            == .invalid(message: "unsupported protocol version", requestID: 0x1122_3344_5566_7788))
    }

    @Test func keyAndValueLimits() {
        let id: UInt64 = 0x1122_3344_5566_7788
        let limits = BinaryLimits(maxKeyLength: 10, maxValueLength: 100)
        // Over a limit but well formed: read whole, then answered without closing.
        #expect(parseBinary(rawHeader(length: 35 + 11, keyLength: 11), limits: limits).0 == .incomplete)
        #expect(parseBinary(rawHeader(length: 35 + 11, keyLength: 11) + [UInt8](repeating: 7, count: 11), limits: limits).0
            == .oversized(message: "key too long", requestID: id, frameLength: 4 + 35 + 11))
        #expect(parseBinary(rawHeader(length: 35 + 101, valueLength: 101) + [UInt8](repeating: 7, count: 101), limits: limits).0
            == .oversized(message: "value too long", requestID: id, frameLength: 4 + 35 + 101))
        // Inconsistent lengths stay a protocol error.
        #expect(parseBinary(rawHeader(length: 35 + 12, keyLength: 11), limits: limits).0 == .invalid(message: "key too long", requestID: id))
        #expect(parseBinary(rawHeader(length: 35 + 10, keyLength: 10), limits: limits).0 == .incomplete)
        // Defaults: 64 KiB keys, 64 MiB values.
        #expect(parseBinary(rawHeader(length: 35 + 65537, keyLength: 65537)).0 == .incomplete)
        #expect(parseBinary(rawHeader(length: 35 + 65536, keyLength: 65536)).0 == .incomplete)
        #expect(parseBinary(rawHeader(length: 35 + (64 << 20), valueLength: 64 << 20)).0 == .incomplete)
        #expect(parseBinary(rawHeader(length: 35 + 1, keyLength: UInt32.max, valueLength: 2)).0 == .invalid(message: "key too long", requestID: id))
    }

    @Test func lengthMismatch() {
        let mismatch = BinaryParseResult.invalid(message: "frame length does not match key and value lengths", requestID: 0x1122_3344_5566_7788)
        #expect(parseBinary(rawHeader(length: 40, keyLength: 3, valueLength: 1)).0 == mismatch)
        #expect(parseBinary(rawHeader(length: 36, keyLength: 0, valueLength: 0)).0 == mismatch)
        #expect(parseBinary(rawHeader(length: 35, keyLength: 1, valueLength: 0)).0 == mismatch)
    }

    @Test func malformedResponses() {
        #expect(throws: BinaryResponseError.self) { try parseResponse([0, 0, 0, 42]) }
        #expect(throws: BinaryResponseError.self) { try parseResponse([0, 0, 0, 43, 0xAD]) }
        #expect(throws: BinaryResponseError.self) { try parseResponse([0, 0, 0, 43, 0xAE, 9]) }
        var frame = written { BinaryResponseWriter.write(status: .ok, requestID: 1, into: $0) }
        frame[3] = 44
        #expect(throws: BinaryResponseError.self) { try parseResponse(frame) }
    }

    // MARK: - Properties

    @Test func requestRoundTrip() async {
        await propertyCheck(count: 300, input: requestGen) { fields in
            let frame = fields.encoded()
            let (result, parsed) = parseBinary(frame)
            #expect(parsed == fields)
            if case .complete(let request) = result {
                #expect(request.frameLength == frame.count)
                #expect(request.keyOffset == 39)
                #expect(request.valueOffset == 39 + fields.key.count)
            } else {
                Issue.record("not complete: \(result)")
            }
        }
    }

    @Test func requestIsIncompleteUntilTheLastByte() async {
        await propertyCheck(count: 100, input: requestGen) { fields in
            let frame = fields.encoded()
            for cut in 0..<frame.count {
                #expect(parseBinary(Array(frame[..<cut])).0 == .incomplete, "cut at \(cut)")
            }
        }
    }

    @Test func pipelinedRequests() async {
        await propertyCheck(count: 100, input: requestGen.array(of: 1...6)) { requests in
            let stream = requests.flatMap { $0.encoded() }
            withScratch(stream) { buffer in
                var position = 0
                var parsed: [RequestFields] = []
                while case .complete(let request) = BinaryFrameParser.parse(UnsafeRawBufferPointer(rebasing: buffer[position...]), limits: BinaryLimits()) {
                    let view = UnsafeRawBufferPointer(rebasing: buffer[position...])
                    parsed.append(RequestFields(
                        command: request.commandCode, requestID: request.requestID, key: Array(request.key(in: view)),
                        value: Array(request.value(in: view)), ttlMs: request.ttlMs, version: request.version))
                    position += request.frameLength
                }
                #expect(parsed == requests)
                #expect(position == stream.count)
            }
        }
    }

    @Test func responseRoundTrip() async {
        let responseGen = zip(
            Gen<BinaryStatus>.case, Gen.uint64(), Gen.uint8().array(of: 0...40), Gen.uint8().array(of: 0...200), Gen.int64(),
            Gen.uint64(), Gen.int(in: 0...3))
        await propertyCheck(count: 300, input: responseGen) { status, id, key, value, ttl, version, errorKind in
            let errors: [StaticString?] = [nil, "ERR", "unknown command", "value too long"]
            let error = errors[errorKind]
            let frame = written { out in
                key.withUnsafeBytes { k in
                    value.withUnsafeBytes { v in
                        BinaryResponseWriter.write(status: status, requestID: id, key: k, value: v, ttlMs: ttl, version: version,
                                                   error: error, into: out)
                    }
                }
            }
            let expected = BinaryResponse(
                status: status.rawValue, requestID: id, ttlMs: ttl, version: version, key: key, value: value,
                error: error.map { $0.description } ?? "", address: "", frameLength: frame.count)
            #expect((try? parseResponse(frame)) == .some(expected))
            for cut in stride(from: 0, to: frame.count, by: 1) {
                #expect((try? parseResponse(Array(frame[..<cut]))) == .some(nil))
            }
        }
    }

    @Test func pipelinedResponses() async {
        await propertyCheck(count: 100, input: zip(Gen.uint64(), Gen.uint8().array(of: 0...30), Gen.bool).array(of: 1...6)) { items in
            let frame = written { out in
                for (id, payload, redirect) in items {
                    if redirect {
                        BinaryResponseWriter.writeRedirect(requestID: id, address: text(payload), into: out)
                    } else {
                        payload.withUnsafeBytes { BinaryResponseWriter.write(status: .ok, requestID: id, value: $0, into: out) }
                    }
                }
            }
            try withScratch(frame) { buffer in
                var position = 0
                var index = 0
                while let response = try BinaryResponseParser.parse(UnsafeRawBufferPointer(rebasing: buffer[position...])) {
                    let (id, payload, redirect) = items[index]
                    #expect(response.requestID == id)
                    if redirect {
                        #expect(response.status == BinaryStatus.redirect.rawValue)
                        #expect(response.address == text(payload))
                    } else {
                        #expect(response.value == payload)
                    }
                    position += response.frameLength
                    index += 1
                }
                #expect(index == items.count)
                #expect(position == frame.count)
            }
        }
    }
}
