/// The memcached text protocol, client side only (get/set/delete), for a
/// benchmark tool that drives memcached and AegisKV with the same load.

public enum MemcacheTextWriter {
    /// `get <key>\r\n`
    public static func get(key: UnsafeRawBufferPointer, into out: WireBuffer) {
        out.reserve(key.count + 6)
        out.append("get ")
        out.append(key)
        out.append("\r\n")
    }

    /// `set <key> <flags> <exptime> <bytes>[ noreply]\r\n<value>\r\n`
    public static func set(
        key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, flags: UInt32 = 0, exptime: Int = 0,
        noreply: Bool = false, into out: WireBuffer
    ) {
        out.reserve(key.count + value.count + 64)
        out.append("set ")
        out.append(key)
        out.append(byte: UInt8(ascii: " "))
        out.appendDecimal(Int(flags))
        out.append(byte: UInt8(ascii: " "))
        out.appendDecimal(exptime)
        out.append(byte: UInt8(ascii: " "))
        out.appendDecimal(value.count)
        if noreply { out.append(" noreply") }
        out.append("\r\n")
        out.append(value)
        out.append("\r\n")
    }

    /// `delete <key>[ noreply]\r\n`
    public static func delete(key: UnsafeRawBufferPointer, noreply: Bool = false, into out: WireBuffer) {
        out.reserve(key.count + 18)
        out.append("delete ")
        out.append(key)
        if noreply { out.append(" noreply") }
        out.append("\r\n")
    }

    public static func get(key: [UInt8], into out: WireBuffer) {
        key.withUnsafeBytes { get(key: $0, into: out) }
    }

    public static func set(
        key: [UInt8], value: [UInt8], flags: UInt32 = 0, exptime: Int = 0, noreply: Bool = false, into out: WireBuffer
    ) {
        key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in set(key: k, value: v, flags: flags, exptime: exptime, noreply: noreply, into: out) }
        }
    }

    public static func delete(key: [UInt8], noreply: Bool = false, into out: WireBuffer) {
        key.withUnsafeBytes { delete(key: $0, noreply: noreply, into: out) }
    }
}

public struct MemcacheItem: Equatable, Sendable {
    public var key: [UInt8]
    public var flags: UInt32
    public var value: [UInt8]
    public var cas: UInt64?

    public init(key: [UInt8], flags: UInt32 = 0, value: [UInt8], cas: UInt64? = nil) {
        self.key = key
        self.flags = flags
        self.value = value
        self.cas = cas
    }
}

public enum MemcacheReply: Equatable, Sendable {
    /// A retrieval reply: the `VALUE` blocks up to `END` (empty on a miss).
    case values([MemcacheItem])
    case stored, notStored, exists, notFound, deleted, touched, ok
    /// `ERROR`
    case error
    case clientError(String)
    case serverError(String)
    case version(String)
    /// The reply of incr/decr.
    case number(UInt64)
}

public struct MemcacheReplyError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "memcache reply error: \(message)" }
}

public enum MemcacheReplyParser {
    /// Parses one reply at the start of `bytes`; nil when more bytes are needed.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> (MemcacheReply, consumed: Int)? {
        var position = 0
        guard let first = try line(bytes, &position) else { return nil }
        if startsWith(first, "VALUE ") || equals(first, "END") {
            var items: [MemcacheItem] = []
            var header = first
            while !equals(header, "END") {
                guard startsWith(header, "VALUE ") else { throw MemcacheReplyError("expected VALUE or END") }
                let fields = split(UnsafeRawBufferPointer(rebasing: header[6...]))
                guard fields.count == 3 || fields.count == 4,
                    let flags = UInt32(text(fields[1])), let length = Int(text(fields[2])), length >= 0
                else { throw MemcacheReplyError("malformed VALUE line") }
                var cas: UInt64?
                if fields.count == 4 {
                    guard let parsed = UInt64(text(fields[3])) else { throw MemcacheReplyError("malformed cas") }
                    cas = parsed
                }
                guard bytes.count - position >= length, bytes.count - position - length >= 2 else { return nil }
                let end = position + length
                guard bytes[end] == UInt8(ascii: "\r") && bytes[end + 1] == UInt8(ascii: "\n") else {
                    throw MemcacheReplyError("missing CRLF after value")
                }
                items.append(MemcacheItem(
                    key: Array(fields[0]), flags: flags, value: Array(bytes[position..<end]), cas: cas))
                position = end + 2
                guard let next = try line(bytes, &position) else { return nil }
                header = next
            }
            return (.values(items), position)
        }
        let reply: MemcacheReply
        switch text(first) {
        case "STORED": reply = .stored
        case "NOT_STORED": reply = .notStored
        case "EXISTS": reply = .exists
        case "NOT_FOUND": reply = .notFound
        case "DELETED": reply = .deleted
        case "TOUCHED": reply = .touched
        case "OK": reply = .ok
        case "ERROR": reply = .error
        case let other:
            if other.hasPrefix("CLIENT_ERROR ") {
                reply = .clientError(String(other.dropFirst(13)))
            } else if other.hasPrefix("SERVER_ERROR ") {
                reply = .serverError(String(other.dropFirst(13)))
            } else if other.hasPrefix("VERSION ") {
                reply = .version(String(other.dropFirst(8)))
            } else if let number = UInt64(other) {
                reply = .number(number)
            } else {
                throw MemcacheReplyError("unknown reply line")
            }
        }
        return (reply, position)
    }

    private static func line(_ bytes: UnsafeRawBufferPointer, _ position: inout Int) throws -> UnsafeRawBufferPointer? {
        var index = position
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "\r") {
                guard bytes[index + 1] == UInt8(ascii: "\n") else { throw MemcacheReplyError("CR without LF") }
                let result = UnsafeRawBufferPointer(rebasing: bytes[position..<index])
                position = index + 2
                return result
            }
            index += 1
        }
        return nil
    }

    private static func text(_ bytes: UnsafeRawBufferPointer) -> String { String(decoding: bytes, as: UTF8.self) }

    private static func startsWith(_ bytes: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
        let count = prefix.utf8CodeUnitCount
        guard bytes.count >= count else { return false }
        for index in 0..<count where bytes[index] != prefix.utf8Start[index] { return false }
        return true
    }

    private static func equals(_ bytes: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
        bytes.count == word.utf8CodeUnitCount && startsWith(bytes, word)
    }

    private static func split(_ bytes: UnsafeRawBufferPointer) -> [UnsafeRawBufferPointer] {
        var fields: [UnsafeRawBufferPointer] = []
        var start = 0
        for index in 0...bytes.count where index == bytes.count || bytes[index] == UInt8(ascii: " ") {
            if index > start { fields.append(UnsafeRawBufferPointer(rebasing: bytes[start..<index])) }
            start = index + 1
        }
        return fields
    }
}
