// libFuzzer target for the RESP decoders: the request parser a reactor runs
// on every client read, and the reply parser the CLI and the bench client
// use. Each input is parsed as a pipeline of requests and as one reply; the
// first byte picks the limits, so both the defaults and tiny limits (every
// limit hit within a short input) are explored. A crash, an AddressSanitizer
// report or a failed precondition is a finding.
@testable import AegisProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let copy = exactCopy(data, size)
    defer { copy.deallocate() }
    let bytes = UnsafeRawBufferPointer(copy)

    let small = size > 0 && data[0] & 1 == 1
    let limits = small ? RESPLimits(maxArguments: 8, maxBulkLength: 64, maxInlineLength: 64) : RESPLimits()

    // Pipelined parsing, the way a reactor loops over its input buffer.
    let args = RESPArguments()
    var position = 0
    while position < size {
        let view = UnsafeRawBufferPointer(rebasing: bytes[position...])
        guard case .complete(let consumed) = RESPRequestParser.parse(view, into: args, limits: limits) else { break }
        require(consumed > 0 && consumed <= view.count)
        require(args.count <= limits.maxArguments)
        var parsed: [[UInt8]] = []
        for index in 0..<args.count {
            require(args.offset(index) >= 0 && args.offset(index) + args.length(index) <= consumed)
            require(args.length(index) <= max(limits.maxBulkLength, limits.maxInlineLength))
            parsed.append(Array(args.bytes(index, in: view)))
        }
        // The consumed bytes, as the parse left them, parse again to the same
        // command: a server forwards them raw to the reactor owning the key.
        let again = UnsafeMutableRawBufferPointer.allocate(byteCount: consumed, alignment: 1)
        defer { again.deallocate() }
        again.copyMemory(from: UnsafeRawBufferPointer(rebasing: view[..<consumed]))
        let againArgs = RESPArguments()
        let againView = UnsafeRawBufferPointer(again)
        require(RESPRequestParser.parse(againView, into: againArgs, limits: limits) == .complete(consumed: consumed))
        require(againArgs.count == parsed.count)
        for index in 0..<againArgs.count { require(Array(againArgs.bytes(index, in: againView)) == parsed[index]) }
        position += consumed
    }

    if let (_, consumed) = try? RESPReplyParser.parse(bytes) { require(consumed > 0 && consumed <= size) }
    return 0
}
