import AegisProtocol
import PropertyBased

/// Runs `body` over a fresh, exactly sized, writable copy of `bytes`, so that
/// an out-of-bounds read trips the debug bounds checks (and ASan), and an
/// in-place unescape never touches shared array storage.
func withScratch<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
    defer { scratch.deallocate() }
    bytes.withUnsafeBytes { source in
        if source.count > 0 { scratch.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: source.count) }
    }
    return try body(UnsafeRawBufferPointer(scratch))
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Parses one request from a copy of `input`; the arguments are copied out.
func parseRequest(_ input: [UInt8], limits: RESPLimits = RESPLimits()) -> (RESPParseResult, [[UInt8]]) {
    let args = RESPArguments()
    return withScratch(input) { buffer in
        let result = RESPRequestParser.parse(buffer, into: args, limits: limits)
        return (result, collect(args, buffer, result))
    }
}

func collect(_ args: RESPArguments, _ buffer: UnsafeRawBufferPointer, _ result: RESPParseResult) -> [[UInt8]] {
    guard case .complete = result else { return [] }
    return (0..<args.count).map { Array(args.bytes($0, in: buffer)) }
}

/// Parses every command in `input`, one after another, like a reactor does.
func parseAll(_ input: [UInt8], limits: RESPLimits = RESPLimits()) -> (commands: [[[UInt8]]], rest: RESPParseResult) {
    let args = RESPArguments()
    return withScratch(input) { buffer in
        var commands: [[[UInt8]]] = []
        var position = 0
        while true {
            let view = UnsafeRawBufferPointer(rebasing: buffer[position...])
            let result = RESPRequestParser.parse(view, into: args, limits: limits)
            guard case .complete(let consumed) = result else { return (commands, result) }
            commands.append(collect(args, view, result))
            position += consumed
        }
    }
}

func encodeCommand(_ args: [[UInt8]]) -> [UInt8] {
    let out = WireBuffer()
    RESPRequestWriter.command(args, into: out)
    return out.readableArray()
}

func written(_ body: (WireBuffer) -> Void) -> [UInt8] {
    let out = WireBuffer()
    body(out)
    return out.readableArray()
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// Bytes that drive the parsers into their interesting branches, mixed with random ones.
let interestingBytes: [UInt8] = Array("\r\n\r\n$*:+-_,#%~=>(!|0123456789 \t\"'\\xaF".utf8) + [0, 0xAE, 0x01, 0xFF]

let protocolByte = Gen.uint8().map { byte -> UInt8 in
    byte < 128 ? interestingBytes[Int(byte) % interestingBytes.count] : byte
}

/// Binary-safe arguments that often contain CR, LF, '$' and digits.
let argumentGen = protocolByte.array(of: 0...24)
let commandGen = argumentGen.array(of: 1...6)

let alphanumerics: [UInt8] = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:".utf8)
let wordGen = Gen.uint8().map { alphanumerics[Int($0) % alphanumerics.count] }.array(of: 1...12)

/// A small deterministic generator for recursive values (SplitMix64).
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
