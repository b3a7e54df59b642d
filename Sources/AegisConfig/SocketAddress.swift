/// An address to listen on: an IP literal and a port.
///
/// Parsed from "host:port" where host is an IPv4 literal, a bracketed IPv6
/// literal ("[::1]:7700"), "localhost", or empty (":7700", all IPv4
/// interfaces). The stored host is canonical: "" becomes "0.0.0.0",
/// "localhost" becomes "127.0.0.1", IPv6 is kept compressed and without
/// brackets. Port 0 asks the kernel for an ephemeral port (tests use it).
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses "host:port" as described on the type; nil when it is not valid.
    public init?(parsing text: String) {
        guard case .success(let address) = SocketAddress.parse(text) else { return nil }
        self = address
    }

    /// True when the host is an IPv6 literal.
    public var isIPv6: Bool { host.contains(":") }

    /// True for "0.0.0.0" and "::" (every interface).
    public var isUnspecified: Bool { host == "0.0.0.0" || host == "::" }

    /// "host:port", with brackets around an IPv6 host.
    public var description: String {
        isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    static let expectation =
        "host:port with an IPv4 address, a [bracketed] IPv6 address, localhost or an empty host, and a port from 0 to 65535"

    /// Parses a listening address; the failure explains what is wrong.
    static func parse(_ text: String) -> Result<SocketAddress, AddressProblem> {
        let parts: (host: Substring, port: Substring)
        switch AddressSyntax.split(text) {
        case .success(let split): parts = split
        case .failure(let problem): return .failure(problem)
        }
        guard let port = AddressSyntax.port(parts.port, allowZero: true) else {
            return .failure(AddressProblem("port \(quoted(String(parts.port))) is not a number from 0 to 65535"))
        }
        let host = String(parts.host)
        if host.isEmpty { return .success(SocketAddress(host: "0.0.0.0", port: port)) }
        if host.lowercased() == "localhost" { return .success(SocketAddress(host: "127.0.0.1", port: port)) }
        if host.hasPrefix("[") {
            let inner = String(host.dropFirst().dropLast())
            guard let canonical = Platform.canonicalIPv6(inner) else {
                return .failure(AddressProblem("\(quoted(inner)) is not an IPv6 address"))
            }
            return .success(SocketAddress(host: canonical, port: port))
        }
        guard let canonical = Platform.canonicalIPv4(host) else {
            return .failure(AddressProblem("host \(quoted(host)) is not an IP address or localhost (listening addresses take no host names)"))
        }
        return .success(SocketAddress(host: canonical, port: port))
    }
}

/// Why an address did not parse; joined to the expectation in messages.
struct AddressProblem: Error, Equatable {
    var detail: String
    init(_ detail: String) { self.detail = detail }
}

/// Shared "host:port" syntax for listening addresses and peer addresses.
enum AddressSyntax {
    /// Splits "host:port" and "[v6]:port"; the host keeps its brackets.
    static func split(_ text: String) -> Result<(host: Substring, port: Substring), AddressProblem> {
        let whole = Substring(text)
        if whole.hasPrefix("[") {
            guard let close = whole.firstIndex(of: "]") else {
                return .failure(AddressProblem("missing \"]\" after the IPv6 address"))
            }
            let afterClose = whole.index(after: close)
            guard afterClose < whole.endIndex, whole[afterClose] == ":" else {
                return .failure(AddressProblem("missing \":port\" after \"]\""))
            }
            return .success((whole[whole.startIndex...close], whole[whole.index(after: afterClose)...]))
        }
        guard let colon = whole.lastIndex(of: ":") else {
            return .failure(AddressProblem("missing \":port\""))
        }
        let host = whole[..<colon]
        if host.contains(":") {
            return .failure(AddressProblem("an IPv6 address needs brackets, like [::1]:7700"))
        }
        return .success((host, whole[whole.index(after: colon)...]))
    }

    /// A decimal port: digits only, 0...65535 (1...65535 unless `allowZero`).
    static func port(_ text: Substring, allowZero: Bool) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
              let value = Int(text), value <= 65535, allowZero || value > 0
        else { return nil }
        return UInt16(value)
    }

    static let peerExpectation =
        "host:port with a host name, an IPv4 address or a [bracketed] IPv6 address, and a port from 1 to 65535"

    /// Checks an address other nodes or clients dial: a host name or IP
    /// literal (not a wildcard) and a non-zero port.
    static func checkPeer(_ text: String) -> AddressProblem? {
        let parts: (host: Substring, port: Substring)
        switch split(text) {
        case .success(let split): parts = split
        case .failure(let problem): return problem
        }
        guard port(parts.port, allowZero: false) != nil else {
            return AddressProblem("port \(quoted(String(parts.port))) is not a number from 1 to 65535")
        }
        let host = String(parts.host)
        if host.isEmpty { return AddressProblem("the host is empty") }
        if host.hasPrefix("[") {
            let inner = String(host.dropFirst().dropLast())
            guard let canonical = Platform.canonicalIPv6(inner) else {
                return AddressProblem("\(quoted(inner)) is not an IPv6 address")
            }
            return canonical == "::" ? AddressProblem("\"::\" is not an address others can reach") : nil
        }
        if let canonical = Platform.canonicalIPv4(host) {
            return canonical == "0.0.0.0" ? AddressProblem("\"0.0.0.0\" is not an address others can reach") : nil
        }
        return isHostName(host) ? nil : AddressProblem("\(quoted(host)) is not a valid host name or IP address")
    }

    /// RFC 1123 host name: dot-separated labels of letters, digits and
    /// hyphens (1-63 characters, no hyphen at either end), at most 253
    /// characters, and a last label that is not all digits (so a mistyped
    /// IPv4 address such as 10.0.0.256 is not taken for a name).
    static func isHostName(_ host: String) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        for label in labels {
            guard (1...63).contains(label.utf8.count), label.first != "-", label.last != "-",
                  label.utf8.allSatisfy({ isLetterOrDigit($0) || $0 == UInt8(ascii: "-") })
            else { return false }
        }
        return !(labels.last ?? "").utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    private static func isLetterOrDigit(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
    }
}
