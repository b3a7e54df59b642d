import AegisProtocol
import Glibc

/// A failure the user should read: one line on stderr, then `code` as the exit status.
struct CLIError: Error, CustomStringConvertible {
    var message: String
    var code: Int32

    init(_ message: String, code: Int32 = ExitStatus.failure) {
        self.message = message
        self.code = code
    }

    var description: String { message }
}

/// Exit statuses, documented in docs/cli.md so scripts can tell them apart.
enum ExitStatus {
    static let success: Int32 = 0
    /// `get` or `ttl` of a key the node does not hold.
    static let notFound: Int32 = 1
    /// The node, the network, a file or the server's answer went wrong.
    static let failure: Int32 = 2
    /// Bad arguments (ArgumentParser's EX_USAGE).
    static let usage: Int32 = 64
    /// The reader of standard output went away (`dump | head`), as if killed by SIGPIPE.
    static let brokenPipe: Int32 = 141
}

func printToStandardError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { bytes in
        var written = 0
        while written < bytes.count {
            let n = write(2, bytes.baseAddress! + written, bytes.count - written)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            written += n
        }
    }
}

func systemError(_ code: Int32) -> String { String(cString: strerror(code)) }

/// Unix time in milliseconds from the wall clock: TTLs in a dump are
/// turned into absolute expiry times with it, and back at restore.
func wallClockMs() -> Int64 { milliseconds(CLOCK_REALTIME) }

/// For pauses and deadlines, which a clock step must not stretch.
func monotonicMs() -> Int64 { milliseconds(CLOCK_MONOTONIC) }

private func milliseconds(_ clock: clockid_t) -> Int64 {
    var now = timespec()
    clock_gettime(clock, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

/// An address to dial: a host name or IP literal and a port.
struct DialAddress: CustomStringConvertible {
    var host: String
    var port: UInt16

    static let expectation = "host:port, host (port 7700) or [IPv6]:port"

    /// Parses "host:port", "[v6]:port", "[v6]" or a bare host (then `defaultPort`).
    init(parsing text: String, defaultPort: UInt16) throws(CLIError) {
        var host = Substring(text)
        var portText: Substring? = nil
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                throw CLIError("address \"\(text)\": missing \"]\" after the IPv6 address", code: ExitStatus.usage)
            }
            let rest = host[host.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else {
                    throw CLIError("address \"\(text)\": expected \":port\" after \"]\"", code: ExitStatus.usage)
                }
                portText = rest.dropFirst()
            }
            host = host[host.index(after: host.startIndex)..<close]
        } else if let colon = host.lastIndex(of: ":") {
            if host[..<colon].contains(":") {
                throw CLIError("address \"\(text)\": an IPv6 address needs brackets, like [::1]:7700", code: ExitStatus.usage)
            }
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard !host.isEmpty else {
            throw CLIError("address \"\(text)\": the host is empty (expected \(Self.expectation))", code: ExitStatus.usage)
        }
        self.host = String(host)
        if let portText {
            guard portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let port = Int(portText), (1...65535).contains(port)
            else {
                throw CLIError("address \"\(text)\": port \"\(portText)\" is not a number from 1 to 65535", code: ExitStatus.usage)
            }
            self.port = UInt16(port)
        } else {
            self.port = defaultPort
        }
    }

    init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Durations as operators type them: "30" (seconds), "30s", "5m", "1h",
/// "1h30m", "250ms", "2d".
enum DurationArgument {
    static let expectation = "seconds (30) or a duration such as 500ms, 30s, 5m, 1h, 1h30m or 2d"

    private static let units: [(name: String, milliseconds: Int64)] = [
        ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
    ]

    /// Milliseconds in `text`, or nil when it is not a duration.
    static func milliseconds(_ text: String) -> Int64? {
        let scalars = Array(text.unicodeScalars)
        guard !scalars.isEmpty else { return nil }
        if scalars.allSatisfy({ isDigit($0) }) {
            guard let seconds = Int64(text) else { return nil }
            let (ms, overflow) = seconds.multipliedReportingOverflow(by: 1000)
            return overflow ? nil : ms
        }
        var total: Int64 = 0
        var index = 0
        while index < scalars.count {
            var number: Int64 = 0
            let digitsStart = index
            while index < scalars.count, isDigit(scalars[index]) {
                let (times10, o1) = number.multipliedReportingOverflow(by: 10)
                let (next, o2) = times10.addingReportingOverflow(Int64(scalars[index].value - 0x30))
                if o1 || o2 { return nil }
                number = next
                index += 1
            }
            guard index > digitsStart else { return nil }
            let unitStart = index
            while index < scalars.count, !isDigit(scalars[index]) { index += 1 }
            let unit = String(String.UnicodeScalarView(scalars[unitStart..<index]))
            guard let size = units.first(where: { $0.name == unit })?.milliseconds else { return nil }
            let (part, o1) = number.multipliedReportingOverflow(by: size)
            let (sum, o2) = total.addingReportingOverflow(part)
            if o1 || o2 { return nil }
            total = sum
        }
        return total
    }

    /// For ArgumentParser's `transform:`: a positive duration, or an error
    /// that ArgumentParser prints after the option's name.
    static func positive(_ text: String) throws -> Int64 {
        guard let ms = milliseconds(text) else {
            throw DurationError("expected \(expectation)")
        }
        guard ms > 0 else { throw DurationError("it must be more than 0") }
        return ms
    }

    private static func isDigit(_ scalar: Unicode.Scalar) -> Bool { scalar.value >= 0x30 && scalar.value <= 0x39 }
}

struct DurationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Buffered writes to a file descriptor (standard output), flushed when
/// the buffer passes `flushThreshold` and whenever the caller asks, so a
/// long dump reaches its reader steadily and memory stays bounded.
final class OutputFile {
    let fd: Int32
    let buffer = WireBuffer(capacity: 1 << 16)
    let flushThreshold = 256 * 1024

    init(fd: Int32) { self.fd = fd }

    func flushIfFull() throws(CLIError) {
        if buffer.readableBytes >= flushThreshold { try flush() }
    }

    func flush() throws(CLIError) {
        while !buffer.isEmpty {
            let view = buffer.readableView
            let n = write(fd, view.baseAddress, view.count)
            if n < 0 {
                let error = errno
                if error == EINTR { continue }
                if error == EPIPE { throw CLIError("", code: ExitStatus.brokenPipe) }
                throw CLIError("cannot write to standard output: \(systemError(error))")
            }
            buffer.consume(n)
        }
    }

    var isTerminal: Bool { isatty(fd) == 1 }
}
