import AegisProtocol

/// The arguments of one parsed RESP command: positions from the parser over
/// the bytes it parsed. Valid only while those bytes are (until the input
/// buffer is consumed).
struct ArgumentsView {
    let base: UnsafeRawPointer
    let arguments: RESPArguments

    @inline(__always) var count: Int { arguments.count }

    @inline(__always) func bytes(_ index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + arguments.offset(index), count: arguments.length(index))
    }

    /// ASCII case-insensitive comparison with an upper-case option name.
    @inline(__always) func matches(_ index: Int, _ upper: StaticString) -> Bool {
        let argument = bytes(index)
        guard argument.count == upper.utf8CodeUnitCount else { return false }
        let expected = upper.utf8Start
        for i in 0..<argument.count {
            let byte = argument[i]
            let folded = byte >= 97 && byte <= 122 ? byte - 32 : byte
            if folded != expected[i] { return false }
        }
        return true
    }

    /// A strict base-10 signed 64-bit integer, as Redis's string2ll accepts.
    func integer(_ index: Int) -> Int64? {
        parseStrictInteger(bytes(index))
    }

    func string(_ index: Int) -> String {
        String(decoding: bytes(index), as: UTF8.self)
    }
}

/// Digits with an optional leading '-', no spaces, no leading zeros (except
/// "0"), within Int64.
func parseStrictInteger(_ bytes: UnsafeRawBufferPointer) -> Int64? {
    guard bytes.count > 0 && bytes.count <= 20 else { return nil }
    var index = 0
    var negative = false
    if bytes[0] == UInt8(ascii: "-") {
        negative = true
        index = 1
        guard bytes.count > 1 else { return nil }
    }
    if bytes[index] == UInt8(ascii: "0") && bytes.count > index + 1 { return nil }
    var magnitude: UInt64 = 0
    while index < bytes.count {
        let digit = bytes[index] &- 48
        guard digit <= 9 else { return nil }
        let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
        let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit))
        if overflow1 || overflow2 { return nil }
        magnitude = sum
        index += 1
    }
    if negative {
        if magnitude > UInt64(Int64.max) + 1 { return nil }
        if magnitude == 0 { return nil } // "-0" is not an integer in Redis
        return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
    }
    if magnitude > UInt64(Int64.max) { return nil }
    return Int64(magnitude)
}
