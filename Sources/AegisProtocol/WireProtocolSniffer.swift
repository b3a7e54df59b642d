/// Which protocol a connection speaks, decided once from its first byte.
public enum WireProtocolKind: Sendable, Equatable {
    case binary, resp, unknown
}

public enum WireProtocolSniffer {
    /// A binary frame starts with the high byte of its big-endian length,
    /// 0x00...0x04 for any legal frame; a RESP client starts with `*` (array)
    /// or a letter (inline command). Anything else is unknown.
    @inlinable
    public static func classify(firstByte: UInt8) -> WireProtocolKind {
        switch firstByte {
        case 0x00...0x04:
            return .binary
        case UInt8(ascii: "*"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
            return .resp
        default:
            return .unknown
        }
    }
}
