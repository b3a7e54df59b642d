// libFuzzer target for the AegisKV binary protocol decoders: the request
// frame parser a reactor runs on every client read, and the response parser
// of the binary client. The first byte picks the limits (defaults or tiny).
// A crash, an AddressSanitizer report or a failed precondition is a finding.
@testable import AegisProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let copy = exactCopy(data, size)
    defer { copy.deallocate() }
    let bytes = UnsafeRawBufferPointer(copy)

    let small = size > 0 && data[0] & 1 == 1
    let limits = small ? BinaryLimits(maxKeyLength: 16, maxValueLength: 64) : BinaryLimits()

    // Pipelined frames, the way a reactor loops over its input buffer.
    var position = 0
    while position < size {
        let view = UnsafeRawBufferPointer(rebasing: bytes[position...])
        guard case .complete(let request) = BinaryFrameParser.parse(view, limits: limits) else { break }
        require(request.frameLength > 0 && request.frameLength <= view.count)
        require(request.valueOffset + request.valueLength == request.frameLength)
        require(request.keyLength <= limits.maxKeyLength && request.valueLength <= limits.maxValueLength)
        require(request.keyOffset >= 0 && request.keyOffset + request.keyLength <= request.valueOffset)
        let frameBytes = UnsafeRawBufferPointer(rebasing: view[..<request.frameLength])
        require(lies(request.key(in: view), within: frameBytes) && lies(request.value(in: view), within: frameBytes))
        // A frame decodes the same on its own: nothing after it is read.
        let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: request.frameLength, alignment: 1)
        defer { frame.deallocate() }
        frame.copyMemory(from: UnsafeRawBufferPointer(rebasing: view[..<request.frameLength]))
        require(BinaryFrameParser.parse(UnsafeRawBufferPointer(frame), limits: limits) == .complete(request))
        position += request.frameLength
    }

    if let response = try? BinaryResponseParser.parse(bytes) {
        require(response.frameLength > 0 && response.frameLength <= size)
    }
    return 0
}
