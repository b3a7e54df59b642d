/// Which protocol a connection speaks, decided once from its first byte.
public enum WireProtocolKind: Sendable, Equatable {
    case binary, resp
}

public enum WireProtocolSniffer {
    /// A binary frame starts with the high byte of its big-endian length,
    /// 0x00...0x04 for any legal frame. No other byte can start one, and
    /// redis-server reads every other byte as RESP: `*` starts an array,
    /// empty lines are skipped and anything else (a space, a quote, a digit)
    /// starts an inline command. So every other byte is RESP here too
    /// (wire-protocol.md, "Telling the protocols apart on one port").
    @inlinable
    public static func classify(firstByte: UInt8) -> WireProtocolKind {
        firstByte <= 0x04 ? .binary : .resp
    }
}
