/// The AegisKV binary protocol, version 1 (shared/spec/wire-protocol.md),
/// server side. Every integer is big-endian; every message is a frame:
/// `u32 length` then `length` bytes of body.
///
/// Request body: magic 0xAE, version 0x01, command u8, request_id u64,
/// key_len u32, value_len u32, ttl i64 (ms), version u64, key, value.
/// Response body: magic, version, status u8, request_id u64, key_len u32,
/// value_len u32, ttl i64, version u64, error_len u32, addr_len u32, key,
/// value, error text, node address.

public enum BinaryCommand: UInt8, Sendable, CaseIterable {
    case get = 1, set, del, ping, pong, replicate, replicateAck, redirect, sync, syncAck, stats, auth
}

public enum BinaryStatus: UInt8, Sendable, CaseIterable {
    case ok = 0, notFound, error, redirect, versionConflict
}

public enum BinaryWire {
    public static let magic: UInt8 = 0xAE
    public static let version: UInt8 = 0x01
    /// Bytes of the fixed request body header (after the 4-byte length).
    public static let requestHeaderLength = 35
    /// Bytes of the fixed response body header (after the 4-byte length).
    public static let responseHeaderLength = 43
    /// Bytes of the length prefix.
    public static let lengthPrefix = 4
}

public struct BinaryLimits: Sendable, Equatable {
    public var maxKeyLength: Int
    public var maxValueLength: Int

    public init(maxKeyLength: Int = 64 * 1024, maxValueLength: Int = 64 * 1024 * 1024) {
        precondition(maxKeyLength >= 0 && maxKeyLength <= Int(UInt32.max))
        precondition(maxValueLength >= 0 && maxValueLength <= Int(UInt32.max))
        self.maxKeyLength = maxKeyLength
        self.maxValueLength = maxValueLength
    }
}

/// One parsed request; key and value are positions in the parsed buffer.
public struct BinaryRequest: Equatable, Sendable {
    /// Raw: unknown codes reach the server so it can answer ERROR and keep
    /// the connection. `BinaryCommand(rawValue:)` names the known ones.
    public var commandCode: UInt8
    public var requestID: UInt64
    public var ttlMs: Int64
    public var version: UInt64
    public var keyOffset: Int
    public var keyLength: Int
    public var valueOffset: Int
    public var valueLength: Int
    /// Bytes consumed, including the 4-byte length.
    public var frameLength: Int

    public init(
        commandCode: UInt8, requestID: UInt64, ttlMs: Int64, version: UInt64,
        keyOffset: Int, keyLength: Int, valueOffset: Int, valueLength: Int, frameLength: Int
    ) {
        self.commandCode = commandCode
        self.requestID = requestID
        self.ttlMs = ttlMs
        self.version = version
        self.keyOffset = keyOffset
        self.keyLength = keyLength
        self.valueOffset = valueOffset
        self.valueLength = valueLength
        self.frameLength = frameLength
    }

    @inlinable public var command: BinaryCommand? { BinaryCommand(rawValue: commandCode) }

    @inlinable
    public func key(in buffer: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer[keyOffset..<(keyOffset + keyLength)])
    }

    @inlinable
    public func value(in buffer: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer[valueOffset..<(valueOffset + valueLength)])
    }
}

public enum BinaryParseResult: Equatable, Sendable {
    case complete(BinaryRequest)
    case incomplete
    /// A protocol error: answer ERROR when `requestID` is known, then close.
    case invalid(message: String, requestID: UInt64?)
    /// A whole, well-formed frame whose key or value is over the limits:
    /// skip its `frameLength` bytes, answer ERROR, keep the connection
    /// (v1 clients put it back in their pool and reuse it).
    case oversized(message: String, requestID: UInt64, frameLength: Int)
}

public enum BinaryFrameParser {
    /// Parses one request frame at the start of `bytes`.
    ///
    /// Each check is made as soon as the bytes it needs are there, without
    /// waiting for the rest of the frame: the length field (too large or
    /// shorter than the header) from the first 4 bytes, then magic, version,
    /// key_len and value_len against the limits, and length against
    /// 35 + key_len + value_len. `requestID` is filled when its 8 bytes were
    /// readable.
    public static func parse(_ bytes: UnsafeRawBufferPointer, limits: BinaryLimits) -> BinaryParseResult {
        let available = bytes.count
        guard available >= 4 else { return .incomplete }
        let length = Int(bytes.loadBigEndian(fromByteOffset: 0, as: UInt32.self))
        // Frame offsets: body offset + 4.
        let requestID: UInt64? = available >= 15 ? bytes.loadBigEndian(fromByteOffset: 7, as: UInt64.self) : nil

        if length > BinaryWire.requestHeaderLength + limits.maxKeyLength + limits.maxValueLength {
            return .invalid(message: "frame too large", requestID: requestID)
        }
        if length < BinaryWire.requestHeaderLength {
            return .invalid(message: "frame shorter than the request header", requestID: requestID)
        }
        if available >= 5 && bytes[4] != BinaryWire.magic {
            return .invalid(message: "bad magic byte", requestID: requestID)
        }
        if available >= 6 && bytes[5] != BinaryWire.version {
            return .invalid(message: "unsupported protocol version", requestID: requestID)
        }
        guard available >= 23 else { return .incomplete }
        let keyLength = Int(bytes.loadBigEndian(fromByteOffset: 15, as: UInt32.self))
        let valueLength = Int(bytes.loadBigEndian(fromByteOffset: 19, as: UInt32.self))
        if keyLength > limits.maxKeyLength || valueLength > limits.maxValueLength {
            let message = keyLength > limits.maxKeyLength ? "key too long" : "value too long"
            // The length prefix was checked against the largest legal frame
            // above, so a consistent frame is at most that: read it whole.
            guard length == BinaryWire.requestHeaderLength + keyLength + valueLength else {
                return .invalid(message: message, requestID: requestID)
            }
            guard available >= 4 + length else { return .incomplete }
            return .oversized(message: message, requestID: requestID!, frameLength: 4 + length)
        }
        if length != BinaryWire.requestHeaderLength + keyLength + valueLength {
            return .invalid(message: "frame length does not match key and value lengths", requestID: requestID)
        }
        let frameLength = 4 + length
        guard available >= frameLength else { return .incomplete }
        let keyOffset = 4 + BinaryWire.requestHeaderLength
        return .complete(
            BinaryRequest(
                commandCode: bytes[6],
                requestID: requestID!,
                ttlMs: bytes.loadBigEndian(fromByteOffset: 23, as: Int64.self),
                version: bytes.loadBigEndian(fromByteOffset: 31, as: UInt64.self),
                keyOffset: keyOffset,
                keyLength: keyLength,
                valueOffset: keyOffset + keyLength,
                valueLength: valueLength,
                frameLength: frameLength))
    }
}

public enum BinaryResponseWriter {
    /// Length prefix plus the fixed response header.
    @usableFromInline static let headerBytes = 4 + BinaryWire.responseHeaderLength

    /// Writes the 47 bytes of prefix and header, reserving room for the
    /// payloads that follow so they are appended without another growth.
    @inlinable
    static func writeHeader(
        status: UInt8, requestID: UInt64, keyLength: Int, valueLength: Int, ttlMs: Int64, version: UInt64,
        errorLength: Int, addressLength: Int, into out: WireBuffer
    ) {
        let payload = keyLength + valueLength + errorLength + addressLength
        precondition(
            keyLength <= Int(UInt32.max) && valueLength <= Int(UInt32.max)
                && errorLength <= Int(UInt32.max) && addressLength <= Int(UInt32.max)
                && BinaryWire.responseHeaderLength + payload <= Int(UInt32.max),
            "binary response too large")
        let space = out.writableSpace(minimum: headerBytes + payload)
        let p = space.baseAddress!
        p.storeBytes(of: UInt32(truncatingIfNeeded: BinaryWire.responseHeaderLength + payload).bigEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: BinaryWire.magic, toByteOffset: 4, as: UInt8.self)
        p.storeBytes(of: BinaryWire.version, toByteOffset: 5, as: UInt8.self)
        p.storeBytes(of: status, toByteOffset: 6, as: UInt8.self)
        p.storeBytes(of: requestID.bigEndian, toByteOffset: 7, as: UInt64.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: keyLength).bigEndian, toByteOffset: 15, as: UInt32.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: valueLength).bigEndian, toByteOffset: 19, as: UInt32.self)
        p.storeBytes(of: ttlMs.bigEndian, toByteOffset: 23, as: Int64.self)
        p.storeBytes(of: version.bigEndian, toByteOffset: 31, as: UInt64.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: errorLength).bigEndian, toByteOffset: 39, as: UInt32.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: addressLength).bigEndian, toByteOffset: 43, as: UInt32.self)
        out.commitWrite(headerBytes)
    }

    /// One response frame: header, then key, value and error text.
    @inlinable
    public static func write(
        status: BinaryStatus, requestID: UInt64,
        key: UnsafeRawBufferPointer = .init(start: nil, count: 0),
        value: UnsafeRawBufferPointer = .init(start: nil, count: 0),
        ttlMs: Int64 = 0, version: UInt64 = 0, error: StaticString? = nil,
        into out: WireBuffer
    ) {
        let errorLength = error?.utf8CodeUnitCount ?? 0
        writeHeader(
            status: status.rawValue, requestID: requestID, keyLength: key.count, valueLength: value.count,
            ttlMs: ttlMs, version: version, errorLength: errorLength, addressLength: 0, into: out)
        out.append(key)
        out.append(value)
        if let error { out.append(error) }
    }

    /// A response whose error text is built at run time.
    public static func write(status: BinaryStatus, requestID: UInt64, errorText: String, into out: WireBuffer) {
        var text = errorText
        text.withUTF8 { utf8 in
            writeHeader(
                status: status.rawValue, requestID: requestID, keyLength: 0, valueLength: 0, ttlMs: 0, version: 0,
                errorLength: utf8.count, addressLength: 0, into: out)
            out.append(UnsafeRawBufferPointer(utf8))
        }
    }

    /// A REDIRECT response carrying the owner's "host:port".
    public static func writeRedirect(requestID: UInt64, address: String, into out: WireBuffer) {
        var text = address
        text.withUTF8 { utf8 in
            writeHeader(
                status: BinaryStatus.redirect.rawValue, requestID: requestID, keyLength: 0, valueLength: 0,
                ttlMs: 0, version: 0, errorLength: 0, addressLength: utf8.count, into: out)
            out.append(UnsafeRawBufferPointer(utf8))
        }
    }
}
