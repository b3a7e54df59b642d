/// The binary protocol on the client side (tests, benchmark tool, CLI).

public enum BinaryRequestWriter {
    /// One request frame.
    public static func write(
        command: UInt8, requestID: UInt64, key: [UInt8], value: [UInt8], ttlMs: Int64, version: UInt64,
        into out: WireBuffer
    ) {
        key.withUnsafeBytes { keyBytes in
            value.withUnsafeBytes { valueBytes in
                write(
                    command: command, requestID: requestID, key: keyBytes, value: valueBytes, ttlMs: ttlMs,
                    version: version, into: out)
            }
        }
    }

    /// The same without arrays, for a load generator's hot loop.
    public static func write(
        command: UInt8, requestID: UInt64, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer,
        ttlMs: Int64 = 0, version: UInt64 = 0, into out: WireBuffer
    ) {
        let length = BinaryWire.requestHeaderLength + key.count + value.count
        precondition(key.count <= Int(UInt32.max) && value.count <= Int(UInt32.max) && length <= Int(UInt32.max))
        let headerBytes = 4 + BinaryWire.requestHeaderLength
        let space = out.writableSpace(minimum: 4 + length)
        let p = space.baseAddress!
        p.storeBytes(of: UInt32(length).bigEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: BinaryWire.magic, toByteOffset: 4, as: UInt8.self)
        p.storeBytes(of: BinaryWire.version, toByteOffset: 5, as: UInt8.self)
        p.storeBytes(of: command, toByteOffset: 6, as: UInt8.self)
        p.storeBytes(of: requestID.bigEndian, toByteOffset: 7, as: UInt64.self)
        p.storeBytes(of: UInt32(key.count).bigEndian, toByteOffset: 15, as: UInt32.self)
        p.storeBytes(of: UInt32(value.count).bigEndian, toByteOffset: 19, as: UInt32.self)
        p.storeBytes(of: ttlMs.bigEndian, toByteOffset: 23, as: Int64.self)
        p.storeBytes(of: version.bigEndian, toByteOffset: 31, as: UInt64.self)
        out.commitWrite(headerBytes)
        out.append(key)
        out.append(value)
    }
}

/// One decoded response frame.
public struct BinaryResponse: Equatable, Sendable {
    /// Raw status byte; `BinaryStatus(rawValue:)` names the known ones.
    public var status: UInt8
    public var requestID: UInt64
    public var ttlMs: Int64
    public var version: UInt64
    public var key: [UInt8]
    public var value: [UInt8]
    public var error: String
    public var address: String
    /// Bytes consumed, including the 4-byte length.
    public var frameLength: Int

    public init(
        status: UInt8, requestID: UInt64, ttlMs: Int64 = 0, version: UInt64 = 0, key: [UInt8] = [],
        value: [UInt8] = [], error: String = "", address: String = "", frameLength: Int = 0
    ) {
        self.status = status
        self.requestID = requestID
        self.ttlMs = ttlMs
        self.version = version
        self.key = key
        self.value = value
        self.error = error
        self.address = address
        self.frameLength = frameLength
    }

    public var knownStatus: BinaryStatus? { BinaryStatus(rawValue: status) }
}

public struct BinaryResponseError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "binary response error: \(message)" }
}

public enum BinaryResponseParser {
    /// Parses one response frame at the start of `bytes`; nil when more
    /// bytes are needed. Throws on a frame that can never be valid.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> BinaryResponse? {
        let available = bytes.count
        guard available >= 4 else { return nil }
        let length = Int(bytes.loadBigEndian(fromByteOffset: 0, as: UInt32.self))
        guard length >= BinaryWire.responseHeaderLength else {
            throw BinaryResponseError("frame shorter than the response header")
        }
        if available >= 5 && bytes[4] != BinaryWire.magic { throw BinaryResponseError("bad magic byte") }
        if available >= 6 && bytes[5] != BinaryWire.version { throw BinaryResponseError("unsupported protocol version") }
        let headerEnd = 4 + BinaryWire.responseHeaderLength
        guard available >= headerEnd else { return nil }
        let keyLength = Int(bytes.loadBigEndian(fromByteOffset: 15, as: UInt32.self))
        let valueLength = Int(bytes.loadBigEndian(fromByteOffset: 19, as: UInt32.self))
        let errorLength = Int(bytes.loadBigEndian(fromByteOffset: 39, as: UInt32.self))
        let addressLength = Int(bytes.loadBigEndian(fromByteOffset: 43, as: UInt32.self))
        guard length == BinaryWire.responseHeaderLength + keyLength + valueLength + errorLength + addressLength else {
            throw BinaryResponseError("frame length does not match payload lengths")
        }
        let frameLength = 4 + length
        guard available >= frameLength else { return nil }
        var position = headerEnd
        func take(_ count: Int) -> UnsafeRawBufferPointer {
            defer { position += count }
            return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
        }
        return BinaryResponse(
            status: bytes[6],
            requestID: bytes.loadBigEndian(fromByteOffset: 7, as: UInt64.self),
            ttlMs: bytes.loadBigEndian(fromByteOffset: 23, as: Int64.self),
            version: bytes.loadBigEndian(fromByteOffset: 31, as: UInt64.self),
            key: Array(take(keyLength)),
            value: Array(take(valueLength)),
            error: String(decoding: take(errorLength), as: UTF8.self),
            address: String(decoding: take(addressLength), as: UTF8.self),
            frameLength: frameLength)
    }
}
