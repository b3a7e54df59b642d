// libFuzzer harness for the AegisProtocol parsers. Built by fuzz/run.sh
// together with the module's sources (no package target needed):
//   swiftc -sanitize=fuzzer,address -parse-as-library -O ...
// Each input goes through every parser; the first byte picks the limits so
// both the default and tiny limits are explored. A crash, an ASan report or
// a failed precondition is a finding.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // An exactly sized heap copy: ASan flags any read past the end, and the
    // in-place inline unescape writes into memory we own.
    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 1)
    defer { copy.deallocate() }
    if size > 0 { copy.baseAddress!.copyMemory(from: data, byteCount: size) }
    let bytes = UnsafeRawBufferPointer(copy)

    let small = size > 0 && data[0] & 1 == 1
    let respLimits = small ? RESPLimits(maxArguments: 8, maxBulkLength: 64, maxInlineLength: 64) : RESPLimits()
    let binaryLimits = small ? BinaryLimits(maxKeyLength: 16, maxValueLength: 64) : BinaryLimits()

    // Pipelined parsing, the way a reactor loops over its input buffer.
    let args = RESPArguments()
    var position = 0
    while position < size {
        let view = UnsafeRawBufferPointer(rebasing: bytes[position...])
        guard case .complete(let consumed) = RESPRequestParser.parse(view, into: args, limits: respLimits) else { break }
        precondition(consumed > 0 && consumed <= view.count)
        var parsed: [[UInt8]] = []
        for index in 0..<args.count {
            precondition(args.offset(index) >= 0 && args.offset(index) + args.length(index) <= consumed)
            parsed.append(Array(args.bytes(index, in: view)))
        }
        // The consumed bytes, as the parse left them, parse again to the same
        // command: a server forwards them raw to the reactor owning the key.
        let again = UnsafeMutableRawBufferPointer.allocate(byteCount: consumed, alignment: 1)
        defer { again.deallocate() }
        again.copyMemory(from: UnsafeRawBufferPointer(rebasing: view[..<consumed]))
        let againArgs = RESPArguments()
        let againView = UnsafeRawBufferPointer(again)
        precondition(RESPRequestParser.parse(againView, into: againArgs, limits: respLimits) == .complete(consumed: consumed))
        precondition(againArgs.count == parsed.count)
        for index in 0..<againArgs.count { precondition(Array(againArgs.bytes(index, in: againView)) == parsed[index]) }
        position += consumed
    }

    position = 0
    while position < size {
        let view = UnsafeRawBufferPointer(rebasing: bytes[position...])
        guard case .complete(let request) = BinaryFrameParser.parse(view, limits: binaryLimits) else { break }
        precondition(request.frameLength <= view.count && request.valueOffset + request.valueLength == request.frameLength)
        position += request.frameLength
    }

    if let (_, consumed) = try? RESPReplyParser.parse(bytes) { precondition(consumed <= size) }
    if let response = try? BinaryResponseParser.parse(bytes) { precondition(response.frameLength <= size) }
    return 0
}
