import Glibc

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
    static func parseObject(_ bytes: UnsafeRawBufferPointer, _ field: ([UInt8], Value) throws(LineProblem) -> Void) throws(LineProblem) {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            throw LineProblem("expected '{' at the start of the entry")
        }
        var cursor = Cursor(base: base, count: bytes.count)
        cursor.skipSpace()
        try cursor.expect(UInt8(ascii: "{"), "expected '{' at the start of the entry")
        cursor.skipSpace()
        if cursor.peek() == UInt8(ascii: "}") {
            cursor.position += 1
        } else {
            while true {
                cursor.skipSpace()
                guard cursor.peek() == UInt8(ascii: "\"") else { throw cursor.problem("expected a field name in quotes") }
                let name = try cursor.string()
                cursor.skipSpace()
                try cursor.expect(UInt8(ascii: ":"), "expected ':' after \"\(text(name))\"")
                cursor.skipSpace()
                let value = try cursor.value(for: name)
                try field(name, value)
                cursor.skipSpace()
                if cursor.peek() == UInt8(ascii: ",") { cursor.position += 1; continue }
                try cursor.expect(UInt8(ascii: "}"), "expected ',' or '}' after the value of \"\(text(name))\"")
                break
            }
        }
        cursor.skipSpace()
        guard cursor.position >= cursor.count else { throw cursor.problem("unexpected text after the entry's closing '}'") }
    }

    /// A field name for messages.
    static func text(_ name: [UInt8]) -> String { String(decoding: name, as: UTF8.self) }

    /// Reads through a typed pointer: its subscript is transparent, so even
    /// debug builds (the test suite's) do not pay a call per byte.
    private struct Cursor {
        let base: UnsafePointer<UInt8>
        let count: Int
        var position = 0

        /// The next byte, or 0 at the end (a NUL is never valid outside a string).
        func peek() -> UInt8 { position < count ? base[position] : 0 }

        func problem(_ message: String) -> LineProblem {
            LineProblem("\(message) (column \(position + 1))")
        }

        mutating func skipSpace() {
            while position < count {
                switch base[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }

        /// The message is an autoclosure: it is built only on failure, not for every field.
        mutating func expect(_ byte: UInt8, _ message: @autoclosure () -> String) throws(LineProblem) {
            guard peek() == byte else { throw problem(message()) }
            position += 1
        }

        mutating func value(for nameBytes: [UInt8]) throws(LineProblem) -> Value {
            switch peek() {
            case 0:
                throw problem("the value of \"\(FlatJSON.text(nameBytes))\" is missing")
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .integer(try integer(nameBytes))
            case UInt8(ascii: "n"):
                guard count - position >= 4, base[position + 1] == UInt8(ascii: "u"),
                      base[position + 2] == UInt8(ascii: "l"), base[position + 3] == UInt8(ascii: "l")
                else { throw problem("invalid value for \"\(FlatJSON.text(nameBytes))\"") }
                position += 4
                return .null
            default:
                throw problem("\"\(FlatJSON.text(nameBytes))\" must be a string, an integer or null")
            }
        }

        mutating func integer(_ nameBytes: [UInt8]) throws(LineProblem) -> Int64 {
            var name: String { FlatJSON.text(nameBytes) }
            let negative = peek() == UInt8(ascii: "-")
            if negative { position += 1 }
            let start = position
            var value: Int64 = 0
            while position < count, base[position] >= 0x30 && base[position] <= 0x39 {
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let digit = Int64(base[position] - 0x30)
                let (next, o2) = negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
                if o1 || o2 { throw problem("\"\(name)\" is out of range") }
                value = next
                position += 1
            }
            let digits = position - start
            guard digits > 0 else { throw problem("\"\(name)\" has a '-' without digits") }
            guard !(digits > 1 && base[start] == 0x30) else { throw problem("\"\(name)\" has a leading zero") }
            let next = peek()
            if next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
                throw problem("\"\(name)\" must be a whole number")
            }
            return value
        }

        /// A JSON string's content as UTF-8 bytes; the cursor is on the
        /// opening quote. One pass finds the end; escapes, when there are
        /// any, are decoded in a second.
        mutating func string() throws(LineProblem) -> [UInt8] {
            position += 1
            let start = position
            var sawNonASCII = false
            var sawEscape = false
            // Numeric literals, not UInt8(ascii:): debug builds call that per byte.
            let quote: UInt8 = 0x22, backslash: UInt8 = 0x5C
            while true {
                guard position < count else { throw problem("a string is not closed") }
                let byte = base[position]
                if byte == quote { break }
                if byte < 0x20 { throw problem("a raw control character inside a string (it must be escaped)") }
                if byte >= 0x80 { sawNonASCII = true }
                // Skip the escaped character so an escaped quote does not end the string.
                if byte == backslash {
                    sawEscape = true
                    position += 2
                } else {
                    position += 1
                }
            }
            let end = position
            position += 1
            let result = sawEscape ? try unescape(from: start, to: end) : copy(from: start, to: end)
            if sawNonASCII && String(validating: result, as: UTF8.self) == nil {
                throw problem("a string is not valid UTF-8 (raw bytes belong in a _b64 field)")
            }
            return result
        }

        private func copy(from start: Int, to end: Int) -> [UInt8] {
            [UInt8](unsafeUninitializedCapacity: end - start) { buffer, initialized in
                if end > start { memcpy(buffer.baseAddress!, base + start, end - start) }
                initialized = end - start
            }
        }

        private mutating func unescape(from start: Int, to end: Int) throws(LineProblem) -> [UInt8] {
            let resume = position
            var result: [UInt8] = []
            result.reserveCapacity(end - start)
            position = start
            var runStart = start
            while position < end {
                if base[position] != 0x5C { position += 1; continue }
                result.append(contentsOf: UnsafeBufferPointer(start: base + runStart, count: position - runStart))
                try escape(into: &result)
                runStart = position
            }
            result.append(contentsOf: UnsafeBufferPointer(start: base + runStart, count: end - runStart))
            position = resume
            return result
        }

        /// One escape sequence; the cursor is on the backslash. A malformed
        /// one fails at the closing quote at the latest, which is no hex digit.
        private mutating func escape(into result: inout [UInt8]) throws(LineProblem) {
            position += 1
            guard position < count else { throw problem("a string ends inside an escape") }
            let letter = base[position]
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
                    guard count - position >= 6, base[position] == UInt8(ascii: "\\"), base[position + 1] == UInt8(ascii: "u") else {
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
            guard count - position >= 4 else { throw problem("a \\u escape needs 4 hex digits") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = base[position]
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
