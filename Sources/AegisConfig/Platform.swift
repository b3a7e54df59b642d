// The few C library calls the configuration module needs: IP literal checks,
// the host name, and reading a file (also used by the server for /proc and
// the WAL's layout file). Kept here so the rest stays portable and
// free of Foundation (which would pull ICU into every binary).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public enum Platform {
    /// The canonical text of an IPv4 literal, or nil when `text` is not one
    /// (dotted decimal, exactly four parts, as `inet_pton` accepts them).
    static func canonicalIPv4(_ text: String) -> String? {
        var address = in_addr()
        guard inet_pton(AF_INET, text, &address) == 1 else { return nil }
        return ntop(family: AF_INET, &address, capacity: Int(INET_ADDRSTRLEN))
    }

    /// The canonical (compressed, lower-case) text of an IPv6 literal without
    /// brackets, or nil when `text` is not one.
    static func canonicalIPv6(_ text: String) -> String? {
        var address = in6_addr()
        guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
        return ntop(family: AF_INET6, &address, capacity: Int(INET6_ADDRSTRLEN))
    }

    private static func ntop<T>(family: Int32, _ address: inout T, capacity: Int) -> String? {
        var buffer = [CChar](repeating: 0, count: capacity + 1)
        let ok = withUnsafePointer(to: &address) { pointer in
            buffer.withUnsafeMutableBufferPointer { out in
                inet_ntop(family, pointer, out.baseAddress, socklen_t(capacity)) != nil
            }
        }
        guard ok else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The machine's host name, or "localhost" when it cannot be read.
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let result = buffer.withUnsafeMutableBufferPointer { gethostname($0.baseAddress!, $0.count - 1) }
        guard result == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }

    public enum ReadError: Error {
        case system(String)
        case tooLarge(Int)
    }

    /// Reads a whole (small) file. Errors carry the C library's wording.
    public static func readFile(_ path: String, limit: Int) -> Result<[UInt8], ReadError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.system(errorText())) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(.system(errorText()))
            }
            if count == 0 { return .success(bytes) }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > limit { return .failure(.tooLarge(limit)) }
        }
    }

    /// A small text file (a /proc entry, a marker file), or nil when it
    /// cannot be read or is larger than `limit`.
    public static func readText(_ path: String, limit: Int = 64 * 1024) -> String? {
        guard case .success(let bytes) = readFile(path, limit: limit) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func errorText() -> String {
        String(cString: strerror(errno))
    }
}
