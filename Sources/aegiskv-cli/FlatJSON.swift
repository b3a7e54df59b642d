/// A strict reader for the one JSON shape an entry line has: a flat object
/// whose values are strings, integers or null.
///
/// Why not JSONDecoder: measured on this machine it spends about 34,000
/// instructions per entry line, which made restore of a 10M-entry dump take
/// minutes in JSON decoding alone; this reader does it in a small fraction.
/// Header and closing lines, one each per file, still go through JSONDecoder.
enum FlatJSON {
    enum Value {
        case string([UInt8])
        case integer(Int64)
        case null
    }

    /// Calls `field` for each member in order. Throws on anything that is
    /// not such an object (nested values, floats, booleans, bad escapes,
    /// invalid UTF-8, trailing text).
    static func parseObject(_ bytes: UnsafeRawBufferPointer, _ field: (String, Value) throws(LineProblem) -> Void) throws(LineProblem) {
        var cursor = Cursor(bytes: bytes)
        cursor.skipSpace()
        try cursor.expect(UInt8(ascii: "{"), "expected '{' at the start of the entry")
        cursor.skipSpace()
        if cursor.peek() == UInt8(ascii: "}") {
            cursor.position += 1
        } else {
            while true {
                cursor.skipSpace()
                guard cursor.peek() == UInt8(ascii: "\"") else { throw cursor.problem("expected a field name in quotes") }
                let nameBytes = try cursor.string()
                let name = String(decoding: nameBytes, as: UTF8.self)
                cursor.skipSpace()
                try cursor.expect(UInt8(ascii: ":"), "expected ':' after \"\(name)\"")
                cursor.skipSpace()
                let value = try cursor.value(for: name)
                try field(name, value)
                cursor.skipSpace()
                if cursor.peek() == UInt8(ascii: ",") { cursor.position += 1; continue }
                try cursor.expect(UInt8(ascii: "}"), "expected ',' or '}' after the value of \"\(name)\"")
                break
            }
        }
        cursor.skipSpace()
        guard cursor.atEnd else { throw cursor.problem("unexpected text after the entry's closing '}'") }
    }

    private struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var position = 0

        var atEnd: Bool { position >= bytes.count }

        func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

        func problem(_ message: String) -> LineProblem {
            LineProblem("\(message) (column \(position + 1))")
        }

        mutating func skipSpace() {
            while position < bytes.count {
                switch bytes[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }

        mutating func expect(_ byte: UInt8, _ message: String) throws(LineProblem) {
            guard peek() == byte else { throw problem(message) }
            position += 1
        }

        mutating func value(for name: String) throws(LineProblem) -> Value {
            guard let first = peek() else { throw problem("the value of \"\(name)\" is missing") }
            switch first {
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .integer(try integer(name))
            case UInt8(ascii: "n"):
                guard bytes.count - position >= 4, bytes[position + 1] == UInt8(ascii: "u"),
                      bytes[position + 2] == UInt8(ascii: "l"), bytes[position + 3] == UInt8(ascii: "l")
                else { throw problem("invalid value for \"\(name)\"") }
                position += 4
                return .null
            default:
                throw problem("\"\(name)\" must be a string, an integer or null")
            }
        }

        mutating func integer(_ name: String) throws(LineProblem) -> Int64 {
            let negative = peek() == UInt8(ascii: "-")
            if negative { position += 1 }
            let start = position
            var value: Int64 = 0
            while let byte = peek(), byte >= 0x30 && byte <= 0x39 {
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let digit = Int64(byte - 0x30)
                let (next, o2) = negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
                if o1 || o2 { throw problem("\"\(name)\" is out of range") }
                value = next
                position += 1
            }
            let digits = position - start
            guard digits > 0 else { throw problem("\"\(name)\" has a '-' without digits") }
            guard !(digits > 1 && bytes[start] == 0x30) else { throw problem("\"\(name)\" has a leading zero") }
            if let byte = peek(), byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
                throw problem("\"\(name)\" must be a whole number")
            }
            return value
        }

        /// A JSON string's content as UTF-8 bytes; the cursor is on the opening quote.
        mutating func string() throws(LineProblem) -> [UInt8] {
            position += 1
            var result: [UInt8] = []
            var runStart = position
            var sawNonASCII = false
            while true {
                guard position < bytes.count else { throw problem("a string is not closed") }
                let byte = bytes[position]
                if byte == UInt8(ascii: "\"") { break }
                if byte < 0x20 { throw problem("a raw control character inside a string (it must be escaped)") }
                if byte >= 0x80 { sawNonASCII = true }
                if byte != UInt8(ascii: "\\") { position += 1; continue }
                result.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<position]))
                try escape(into: &result)
                runStart = position
            }
            result.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<position]))
            position += 1
            if sawNonASCII && String(validating: result, as: UTF8.self) == nil {
                throw problem("a string is not valid UTF-8 (raw bytes belong in a _b64 field)")
            }
            return result
        }

        /// One escape sequence; the cursor is on the backslash.
        private mutating func escape(into result: inout [UInt8]) throws(LineProblem) {
            position += 1
            guard let letter = peek() else { throw problem("a string ends inside an escape") }
            position += 1
            switch letter {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): result.append(letter)
            case UInt8(ascii: "b"): result.append(0x08)
            case UInt8(ascii: "f"): result.append(0x0C)
            case UInt8(ascii: "n"): result.append(0x0A)
            case UInt8(ascii: "r"): result.append(0x0D)
            case UInt8(ascii: "t"): result.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                        throw problem("a \\u escape is half of a surrogate pair")
                    }
                    position += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw problem("a \\u escape is half of a surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw problem("a \\u escape is half of a surrogate pair")
                }
                appendUTF8(scalar, into: &result)
            default:
                throw problem("unknown escape '\\\(Character(Unicode.Scalar(letter)))' in a string")
            }
        }

        private mutating func hex4() throws(LineProblem) -> UInt32 {
            guard bytes.count - position >= 4 else { throw problem("a \\u escape needs 4 hex digits") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[position]
                let digit: UInt32
                switch byte {
                case 0x30...0x39: digit = UInt32(byte - 0x30)
                case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
                case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
                default: throw problem("a \\u escape needs 4 hex digits")
                }
                value = value << 4 | digit
                position += 1
            }
            return value
        }

        private func appendUTF8(_ scalar: UInt32, into result: inout [UInt8]) {
            switch scalar {
            case 0..<0x80:
                result.append(UInt8(scalar))
            case 0x80..<0x800:
                result.append(UInt8(0xC0 | scalar >> 6))
                result.append(UInt8(0x80 | scalar & 0x3F))
            case 0x800..<0x10000:
                result.append(UInt8(0xE0 | scalar >> 12))
                result.append(UInt8(0x80 | (scalar >> 6) & 0x3F))
                result.append(UInt8(0x80 | scalar & 0x3F))
            default:
                result.append(UInt8(0xF0 | scalar >> 18))
                result.append(UInt8(0x80 | (scalar >> 12) & 0x3F))
                result.append(UInt8(0x80 | (scalar >> 6) & 0x3F))
                result.append(UInt8(0x80 | scalar & 0x3F))
            }
        }
    }
}
