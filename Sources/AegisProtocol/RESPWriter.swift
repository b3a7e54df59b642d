/// RESP replies written straight into a `WireBuffer`, server side.
///
/// The fast paths (simple strings, errors, integers, bulk strings, nulls,
/// headers) append bytes directly and never build a `String`.

public enum RESPVersion: Sendable, Equatable {
    case resp2, resp3
}

public enum RESPWriter {
    @usableFromInline static let crlf: StaticString = "\r\n"

    /// `+<s>\r\n`. `s` must not contain CR or LF.
    @inlinable
    public static func simpleString(_ s: StaticString, into out: WireBuffer) {
        out.reserve(s.utf8CodeUnitCount &+ 3)
        out.append(byte: UInt8(ascii: "+"))
        out.append(s)
        out.append(crlf)
    }

    /// `+<bytes>\r\n`. The bytes must not contain CR or LF.
    @inlinable
    public static func simpleString(bytes: UnsafeRawBufferPointer, into out: WireBuffer) {
        out.reserve(bytes.count &+ 3)
        out.append(byte: UInt8(ascii: "+"))
        out.append(bytes)
        out.append(crlf)
    }

    /// `-<message>\r\n`; the message carries its own prefix ("ERR syntax error").
    @inlinable
    public static func error(_ message: StaticString, into out: WireBuffer) {
        out.reserve(message.utf8CodeUnitCount &+ 3)
        out.append(byte: UInt8(ascii: "-"))
        out.append(message)
        out.append(crlf)
    }

    /// `-<message>\r\n` with CR and LF in the message replaced by spaces, so a
    /// dynamic text can never break the framing.
    public static func error(string: String, into out: WireBuffer) {
        var message = string
        message.withUTF8 { utf8 in
            out.reserve(utf8.count + 3)
            out.append(byte: UInt8(ascii: "-"))
            var clean = true
            for byte in utf8 where byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") {
                clean = false
                break
            }
            if clean {
                out.append(UnsafeRawBufferPointer(utf8))
            } else {
                for byte in utf8 {
                    out.append(byte: byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") ? UInt8(ascii: " ") : byte)
                }
            }
            out.append(crlf)
        }
    }

    /// `:<v>\r\n`
    @inlinable
    public static func integer(_ v: Int, into out: WireBuffer) {
        out.reserve(23)
        out.append(byte: UInt8(ascii: ":"))
        out.appendDecimal(v)
        out.append(crlf)
    }

    /// `$<len>\r\n<bytes>\r\n`
    @inlinable
    public static func bulk(_ bytes: UnsafeRawBufferPointer, into out: WireBuffer) {
        out.reserve(bytes.count &+ 25)
        out.append(byte: UInt8(ascii: "$"))
        out.appendDecimal(bytes.count)
        out.append(crlf)
        out.append(bytes)
        out.append(crlf)
    }

    /// `$<len>\r\n<utf8>\r\n`
    public static func bulk(string: String, into out: WireBuffer) {
        var text = string
        text.withUTF8 { bulk(UnsafeRawBufferPointer($0), into: out) }
    }

    /// A missing value: RESP2 `$-1\r\n`, RESP3 `_\r\n`.
    @inlinable
    public static func null(_ version: RESPVersion, into out: WireBuffer) {
        switch version {
        case .resp2: out.append("$-1\r\n")
        case .resp3: out.append("_\r\n")
        }
    }

    /// A missing array: RESP2 `*-1\r\n`, RESP3 `_\r\n`.
    @inlinable
    public static func nullArray(_ version: RESPVersion, into out: WireBuffer) {
        switch version {
        case .resp2: out.append("*-1\r\n")
        case .resp3: out.append("_\r\n")
        }
    }

    /// RESP3 `#t\r\n` / `#f\r\n`, RESP2 `:1\r\n` / `:0\r\n`.
    @inlinable
    public static func boolean(_ v: Bool, _ version: RESPVersion, into out: WireBuffer) {
        switch version {
        case .resp2: out.append(v ? ":1\r\n" : ":0\r\n")
        case .resp3: out.append(v ? "#t\r\n" : "#f\r\n")
        }
    }

    /// `*<count>\r\n`; the elements follow.
    @inlinable
    public static func arrayHeader(_ count: Int, into out: WireBuffer) {
        out.reserve(23)
        out.append(byte: UInt8(ascii: "*"))
        out.appendDecimal(count)
        out.append(crlf)
    }

    /// RESP3 `%<pairs>\r\n`, RESP2 `*<2*pairs>\r\n`; keys and values follow, alternating.
    @inlinable
    public static func mapHeader(_ pairs: Int, _ version: RESPVersion, into out: WireBuffer) {
        out.reserve(23)
        switch version {
        case .resp2:
            out.append(byte: UInt8(ascii: "*"))
            out.appendDecimal(pairs * 2)
        case .resp3:
            out.append(byte: UInt8(ascii: "%"))
            out.appendDecimal(pairs)
        }
        out.append(crlf)
    }

    /// RESP3 `=<len>\r\ntxt:<text>\r\n` (INFO, CLIENT LIST...), RESP2 a bulk string.
    public static func verbatim(_ text: String, _ version: RESPVersion, into out: WireBuffer) {
        switch version {
        case .resp2:
            bulk(string: text, into: out)
        case .resp3:
            var copy = text
            copy.withUTF8 { utf8 in
                out.reserve(utf8.count + 29)
                out.append(byte: UInt8(ascii: "="))
                out.appendDecimal(utf8.count + 4)
                out.append("\r\ntxt:")
                out.append(UnsafeRawBufferPointer(utf8))
                out.append(crlf)
            }
        }
    }

    /// RESP3 `,<v>\r\n`, RESP2 the same text as a bulk string. Shortest
    /// round-trip text; integral values without a fraction ("3", not "3.0");
    /// `inf`, `-inf`, `nan` as Redis writes them.
    public static func double(_ v: Double, _ version: RESPVersion, into out: WireBuffer) {
        let text = formatDouble(v)
        switch version {
        case .resp2:
            bulk(string: text, into: out)
        case .resp3:
            out.append(byte: UInt8(ascii: ","))
            out.append(string: text)
            out.append(crlf)
        }
    }

    /// The text Redis uses for a double reply.
    public static func formatDouble(_ v: Double) -> String {
        if v.isNaN { return "nan" }
        if v.isInfinite { return v < 0 ? "-inf" : "inf" }
        if v.magnitude < 1e17 {
            // Int64(v) truncates; equal means integral (no libm call needed).
            let integral = Int64(v)
            if Double(integral) == v {
                if v == 0 && v.sign == .minus { return "-0" }
                return String(integral)
            }
        }
        return v.description
    }
}
