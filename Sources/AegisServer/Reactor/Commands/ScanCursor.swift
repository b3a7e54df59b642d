/// A SCAN cursor as redis-server reads it (`parseScanCursorOrReply`: C's
/// strtoul, base 10, the whole argument): an optional sign, digits, and
/// nothing after them. `-1` wraps to 18446744073709551615 and the empty
/// string is 0, as there; leading spaces, other characters and values past
/// 2^64-1 are "ERR invalid cursor" (nil). A cursor that names no shard ends
/// the iteration (cursor 0), so clients that wrap or guess cursors get the
/// answer redis-server gives an empty database.
func parseScanCursor(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
    // redis-server's arguments are C strings: a NUL ends the number.
    let end = bytes.firstIndex(of: 0) ?? bytes.count
    if end == 0 { return 0 }
    var index = 0
    var negative = false
    if bytes[0] == UInt8(ascii: "+") || bytes[0] == UInt8(ascii: "-") {
        negative = bytes[0] == UInt8(ascii: "-")
        index = 1
    }
    let firstDigit = index
    var value: UInt64 = 0
    while index < end, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
        let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
        let (sum, overflow2) = times10.addingReportingOverflow(UInt64(bytes[index] - UInt8(ascii: "0")))
        if overflow1 || overflow2 { return nil }
        value = sum
        index += 1
    }
    // No digits: strtoul stops at the start, so whatever is there is left over.
    guard index > firstDigit, index == end else { return nil }
    return negative ? 0 &- value : value
}
