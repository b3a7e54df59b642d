import Glibc

/// A client's IP address as the kernel reported it at accept: 16 bytes of
/// IPv6, an IPv4 peer as ::ffff:a.b.c.d, so one value type keys both
/// families (protected mode, failed-AUTH counting). Two words instead of a
/// String: it is made on every accept.
public struct ClientAddress: Hashable, Sendable, CustomStringConvertible {
    /// The 16 bytes in network order, as two words in memory order.
    private let words: (UInt64, UInt64)

    public static let unknown = ClientAddress(networkOrder: (0, 0))

    init(networkOrder words: (UInt64, UInt64)) { self.words = words }

    /// From the 16 bytes of an IPv6 address (IPv4 mapped), in network order.
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "an IPv6 address is 16 bytes")
        var words: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &words) { $0.copyBytes(from: bytes) }
        self.words = words
    }

    /// From an IPv4 literal ("10.0.0.1") or an IPv6 one ("::1"); nil when not one.
    public init?(_ text: String) {
        var bytes = [UInt8](repeating: 0, count: 16)
        if text.contains(":") {
            guard inet_pton(AF_INET6, text, &bytes) == 1 else { return nil }
        } else {
            var four = [UInt8](repeating: 0, count: 4)
            guard inet_pton(AF_INET, text, &four) == 1 else { return nil }
            bytes[10] = 0xFF
            bytes[11] = 0xFF
            bytes.replaceSubrange(12..<16, with: four)
        }
        self.init(bytes: bytes)
    }

    public var bytes: [UInt8] { withUnsafeBytes(of: words) { Array($0) } }

    /// An IPv4 peer (::ffff:0:0/96) rather than a native IPv6 one.
    public var isIPv4: Bool {
        let b = bytes
        return b[0..<10].allSatisfy { $0 == 0 } && b[10] == 0xFF && b[11] == 0xFF
    }

    /// 127.0.0.0/8 (also as ::ffff:127.x.y.z, how a dual-stack listener
    /// sees an IPv4 loopback client) or ::1: traffic that never left this
    /// machine, the only clients protected mode answers.
    public var isLoopback: Bool {
        let b = bytes
        if isIPv4 { return b[12] == 127 }
        return b[0..<15].allSatisfy { $0 == 0 } && b[15] == 1
    }

    public var description: String {
        var b = bytes
        if isIPv4 { return "\(b[12]).\(b[13]).\(b[14]).\(b[15])" }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &b, &text, socklen_t(text.count)) != nil else { return "?" }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func == (a: ClientAddress, b: ClientAddress) -> Bool { a.words == b.words }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
    }
}
