/// RESP on the client side: commands out, replies in. Used by tests, the
/// benchmark tool and the CLI, where allocation is fine.

/// One key/value pair of a RESP3 map (tuples would block `Equatable`).
public struct RESPPair: Equatable, Sendable {
    public var key: RESPValue
    public var value: RESPValue

    public init(_ key: RESPValue, _ value: RESPValue) {
        self.key = key
        self.value = value
    }
}

/// A decoded RESP2/RESP3 reply.
public indirect enum RESPValue: Equatable, Sendable {
    case simple(String)
    /// `-ERR ...` or a RESP3 blob error `!`; the text without the leading `-`.
    case error(String)
    case integer(Int)
    case bulk([UInt8])
    /// RESP2 `$-1` and `*-1`, RESP3 `_`.
    case null
    case array([RESPValue])
    case map([RESPPair])
    /// RESP3 `~`.
    case set([RESPValue])
    /// RESP3 `>`.
    case push([RESPValue])
    case double(Double)
    case boolean(Bool)
    /// RESP3 `=`; the text after its 3-letter format and `:`.
    case verbatim(String)
    /// RESP3 `(`, kept as its decimal text.
    case bigNumber(String)

    /// Convenience for tests and tools: the bytes of a bulk string as text.
    public var text: String? {
        switch self {
        case .simple(let s), .verbatim(let s), .error(let s), .bigNumber(let s): return s
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        default: return nil
        }
    }
}

public struct RESPReplyError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "RESP reply error: \(message)" }
}

public enum RESPReplyParser {
    /// Deepest nesting of aggregates accepted, so hostile input cannot exhaust the stack.
    public static let maxDepth = 256

    /// Parses one reply at the start of `bytes`. Returns nil when more bytes
    /// are needed; throws when the bytes can never form a reply.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> (RESPValue, consumed: Int)? {
        var cursor = Cursor(bytes: bytes, position: 0)
        guard let value = try cursor.value(depth: 0) else { return nil }
        return (value, cursor.position)
    }

    private struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var position: Int

        /// The bytes up to the next CRLF, and moves past it; nil when no CRLF yet.
        mutating func line() throws -> UnsafeRawBufferPointer? {
            var index = position
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "\r") {
                    guard index + 1 < bytes.count else { return nil }
                    guard bytes[index + 1] == UInt8(ascii: "\n") else {
                        throw RESPReplyError("CR without LF in a line")
                    }
                    let result = UnsafeRawBufferPointer(rebasing: bytes[position..<index])
                    position = index + 2
                    return result
                }
                if bytes[index] == UInt8(ascii: "\n") { throw RESPReplyError("LF without CR in a line") }
                index += 1
            }
            return nil
        }

        mutating func integerLine() throws -> Int? {
            guard let text = try line() else { return nil }
            guard let value = Self.integer(text) else {
                throw RESPReplyError("invalid integer '\(String(decoding: text, as: UTF8.self))'")
            }
            return value
        }

        static func integer(_ text: UnsafeRawBufferPointer) -> Int? {
            var index = 0
            var negative = false
            if index < text.count && (text[index] == UInt8(ascii: "-") || text[index] == UInt8(ascii: "+")) {
                negative = text[index] == UInt8(ascii: "-")
                index += 1
            }
            guard index < text.count else { return nil }
            var value = 0
            while index < text.count {
                let byte = text[index]
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
                let digit = Int(byte - UInt8(ascii: "0"))
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let (next, o2) = negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
                if o1 || o2 { return nil }
                value = next
                index += 1
            }
            return value
        }

        /// `count` bytes followed by CRLF; nil when not all there yet.
        mutating func blob(count: Int) throws -> UnsafeRawBufferPointer? {
            guard count >= 0 else { throw RESPReplyError("negative length") }
            guard bytes.count - position >= count, bytes.count - position - count >= 2 else { return nil }
            let end = position + count
            guard bytes[end] == UInt8(ascii: "\r") && bytes[end + 1] == UInt8(ascii: "\n") else {
                throw RESPReplyError("missing CRLF after blob")
            }
            let result = UnsafeRawBufferPointer(rebasing: bytes[position..<end])
            position = end + 2
            return result
        }

        mutating func elements(_ count: Int, depth: Int) throws -> [RESPValue]? {
            var values: [RESPValue] = []
            // Never trust the count for the allocation: each element takes >= 3 bytes.
            values.reserveCapacity(Swift.min(count, (bytes.count - position) / 3))
            for _ in 0..<count {
                guard let element = try value(depth: depth + 1) else { return nil }
                values.append(element)
            }
            return values
        }

        mutating func value(depth: Int) throws -> RESPValue? {
            guard depth <= RESPReplyParser.maxDepth else { throw RESPReplyError("nesting too deep") }
            guard position < bytes.count else { return nil }
            let type = bytes[position]
            position += 1
            switch type {
            case UInt8(ascii: "+"):
                guard let text = try line() else { return nil }
                return .simple(String(decoding: text, as: UTF8.self))
            case UInt8(ascii: "-"):
                guard let text = try line() else { return nil }
                return .error(String(decoding: text, as: UTF8.self))
            case UInt8(ascii: ":"):
                guard let value = try integerLine() else { return nil }
                return .integer(value)
            case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                guard let length = try integerLine() else { return nil }
                if length == -1 && type == UInt8(ascii: "$") { return .null }
                guard let data = try blob(count: length) else { return nil }
                switch type {
                case UInt8(ascii: "$"):
                    return .bulk(Array(data))
                case UInt8(ascii: "!"):
                    return .error(String(decoding: data, as: UTF8.self))
                default:
                    guard data.count >= 4, data[3] == UInt8(ascii: ":") else {
                        throw RESPReplyError("verbatim string without format")
                    }
                    return .verbatim(String(decoding: UnsafeRawBufferPointer(rebasing: data[4...]), as: UTF8.self))
                }
            case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"):
                guard let count = try integerLine() else { return nil }
                if count == -1 && type == UInt8(ascii: "*") { return .null }
                guard count >= 0 else { throw RESPReplyError("negative aggregate length") }
                guard let values = try elements(count, depth: depth) else { return nil }
                switch type {
                case UInt8(ascii: "*"): return .array(values)
                case UInt8(ascii: "~"): return .set(values)
                default: return .push(values)
                }
            case UInt8(ascii: "%"), UInt8(ascii: "|"):
                guard let count = try integerLine() else { return nil }
                guard count >= 0, count <= Int.max / 2 else { throw RESPReplyError("invalid map length") }
                guard let values = try elements(count * 2, depth: depth) else { return nil }
                if type == UInt8(ascii: "|") {
                    // Attributes describe the reply that follows; clients may ignore them.
                    return try value(depth: depth + 1)
                }
                var pairs: [RESPPair] = []
                pairs.reserveCapacity(count)
                for index in 0..<count { pairs.append(RESPPair(values[2 * index], values[2 * index + 1])) }
                return .map(pairs)
            case UInt8(ascii: "_"):
                guard let text = try line() else { return nil }
                guard text.isEmpty else { throw RESPReplyError("null with payload") }
                return .null
            case UInt8(ascii: "#"):
                guard let text = try line() else { return nil }
                guard text.count == 1, text[0] == UInt8(ascii: "t") || text[0] == UInt8(ascii: "f") else {
                    throw RESPReplyError("invalid boolean")
                }
                return .boolean(text[0] == UInt8(ascii: "t"))
            case UInt8(ascii: ","):
                guard let text = try line() else { return nil }
                let string = String(decoding: text, as: UTF8.self)
                guard let value = Double(string) else { throw RESPReplyError("invalid double '\(string)'") }
                return .double(value)
            case UInt8(ascii: "("):
                guard let text = try line() else { return nil }
                var digits = text.startIndex
                if digits < text.endIndex && (text[digits] == UInt8(ascii: "-") || text[digits] == UInt8(ascii: "+")) {
                    digits += 1
                }
                guard digits < text.endIndex, text[digits...].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                    throw RESPReplyError("invalid big number")
                }
                return .bigNumber(String(decoding: text, as: UTF8.self))
            default:
                throw RESPReplyError("unknown reply type byte \(type)")
            }
        }
    }
}

public enum RESPRequestWriter {
    /// `*N\r\n` then `$L\r\n<arg>\r\n` for every argument.
    public static func command(_ args: [[UInt8]], into out: WireBuffer) {
        RESPWriter.arrayHeader(args.count, into: out)
        for arg in args {
            arg.withUnsafeBytes { RESPWriter.bulk($0, into: out) }
        }
    }

    /// The same from text arguments (CLI, tests).
    public static func command(strings args: [String], into out: WireBuffer) {
        RESPWriter.arrayHeader(args.count, into: out)
        for arg in args { RESPWriter.bulk(string: arg, into: out) }
    }
}
