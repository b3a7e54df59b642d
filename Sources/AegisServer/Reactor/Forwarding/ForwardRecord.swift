/// The fixed header of every message between reactors; the payload follows.
///
/// Requests carry the client's raw request bytes (one RESP command or one
/// binary frame) so the owner parses them with the same code as a local
/// request; replies carry reply bytes already encoded for the client's
/// protocol, which the origin copies into the connection's reply slot.
struct ForwardHeader {
    enum Kind: UInt8 {
        case request = 1
        case reply = 2
    }

    var kind: Kind
    var wire: WireKind          // the client's protocol, so the owner encodes the reply for it
    var connectionIndex: UInt32
    var connectionGeneration: UInt32
    var slotSequence: UInt64
    var payloadLength: Int      // bytes of the request or reply

    static let size = 24

    @inline(__always) func store(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: kind.rawValue, toByteOffset: 0, as: UInt8.self)
        pointer.storeBytes(of: wire.rawValue, toByteOffset: 1, as: UInt8.self)
        pointer.storeBytes(of: UInt16(0), toByteOffset: 2, as: UInt16.self)
        pointer.storeBytes(of: connectionIndex, toByteOffset: 4, as: UInt32.self)
        pointer.storeBytes(of: connectionGeneration, toByteOffset: 8, as: UInt32.self)
        pointer.storeBytes(of: UInt32(payloadLength), toByteOffset: 12, as: UInt32.self)
        pointer.storeBytes(of: slotSequence, toByteOffset: 16, as: UInt64.self)
    }

    @inline(__always) static func load(from bytes: UnsafeRawBufferPointer) -> ForwardHeader {
        assert(bytes.count >= size)
        return ForwardHeader(
            kind: Kind(rawValue: bytes.load(fromByteOffset: 0, as: UInt8.self))!,
            wire: WireKind(rawValue: bytes.load(fromByteOffset: 1, as: UInt8.self))!,
            connectionIndex: bytes.load(fromByteOffset: 4, as: UInt32.self),
            connectionGeneration: bytes.load(fromByteOffset: 8, as: UInt32.self),
            slotSequence: bytes.load(fromByteOffset: 16, as: UInt64.self),
            payloadLength: Int(bytes.load(fromByteOffset: 12, as: UInt32.self))
        )
    }
}

/// Record flags in the ring: a payload too large for the ring travels as a
/// pointer to a heap copy, which the consumer frees.
enum RecordFlags {
    static let inline: UInt32 = 0
    static let indirect: UInt32 = 1
}

/// The protocol a connection speaks, fixed by its first byte (and HELLO).
enum WireKind: UInt8 {
    case resp2 = 0
    case resp3 = 1
    case binary = 2
}
