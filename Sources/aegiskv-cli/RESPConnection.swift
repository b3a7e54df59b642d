import AegisProtocol
import AegisTLS
import Glibc

/// One RESP connection to a node, driven by poll(2).
///
/// Commands are queued with `queue` and sent by `exchange`, which writes
/// and reads at the same time until every expected reply has arrived: a
/// pipelined batch of large values could otherwise deadlock, the node
/// waiting for us to read its replies while we wait for it to read our
/// requests. Every wait is bounded by `timeoutMs`.
final class RESPConnection {
    let address: DialAddress
    let timeoutMs: Int32
    private let fd: Int32
    private let output = WireBuffer(capacity: 1 << 16)
    private let input = WireBuffer(capacity: 1 << 16)
    private var isClosed = false
    /// Set with --tls: every byte goes through it.
    private var tls: TLSSession?

    private init(fd: Int32, address: DialAddress, timeoutMs: Int32) {
        self.fd = fd
        self.address = address
        self.timeoutMs = timeoutMs
    }

    deinit { close() }

    func close() {
        if isClosed { return }
        isClosed = true
        tls?.free(notifyPeer: true)  // before the socket it writes on closes
        tls = nil
        _ = Glibc.close(fd)
    }

    /// Resolves and connects (each resolved address in turn), does the TLS
    /// handshake when asked, then authenticates when a token is given.
    static func open(_ address: DialAddress, timeoutMs: Int32, authToken: String?, tls: TLSOptions? = nil) throws(CLIError) -> RESPConnection {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address.host, String(address.port), &hints, &list)
        guard rc == 0, let first = list else {
            throw CLIError("cannot resolve \(address.host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastProblem = "no usable address"
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            cursor = entry.pointee.ai_next
            let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            let fd = socket(entry.pointee.ai_family, type, entry.pointee.ai_protocol)
            if fd < 0 { lastProblem = systemError(errno); continue }
            if let problem = connect(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen, timeoutMs: timeoutMs) {
                lastProblem = problem
                _ = Glibc.close(fd)
                continue
            }
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let connection = RESPConnection(fd: fd, address: address, timeoutMs: timeoutMs)
            if let tls { connection.tls = try tls.connect(fd: fd, address: address, timeoutMs: timeoutMs) }
            if let authToken { try connection.authenticate(authToken) }
            return connection
        }
        throw CLIError("cannot connect to \(address): \(lastProblem)")
    }

    /// Non-blocking connect bounded by the timeout; nil on success, else why not.
    private static func connect(_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t, timeoutMs: Int32) -> String? {
        if Glibc.connect(fd, address, length) == 0 { return nil }
        guard errno == EINPROGRESS else { return systemError(errno) }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        var ready: Int32
        repeat { ready = poll(&poller, 1, timeoutMs) } while ready < 0 && errno == EINTR
        if ready == 0 { return "no answer within \(formatMilliseconds(Int64(timeoutMs)))" }
        if ready < 0 { return systemError(errno) }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
        return error == 0 ? nil : systemError(error)
    }

    private func authenticate(_ token: String) throws(CLIError) {
        let reply = try call([Array("AUTH".utf8), Array(token.utf8)])
        if case .error(let message) = reply {
            throw CLIError("authentication with \(address) failed: \(message)")
        }
    }

    // MARK: - Requests and replies

    /// Adds one command to the next `exchange`.
    func queue(_ arguments: [[UInt8]]) {
        RESPRequestWriter.command(arguments, into: output)
    }

    var queuedBytes: Int { output.readableBytes }

    /// One command, one reply.
    func call(_ arguments: [[UInt8]]) throws(CLIError) -> RESPValue {
        queue(arguments)
        var result = RESPValue.null
        try exchange(replies: 1) { reply throws(CLIError) in result = reply }
        return result
    }

    /// Sends everything queued and hands the next `count` replies to
    /// `handle` in order, as they arrive.
    func exchange(replies count: Int, _ handle: (RESPValue) throws(CLIError) -> Void) throws(CLIError) {
        var remaining = count
        while true {
            // Records OpenSSL already decrypted are not seen by poll.
            if remaining > 0, let tls, tls.bufferedBytes > 0 { try readSome(waitingFor: remaining) }
            while remaining > 0, let (reply, consumed) = try parseReply() {
                input.consume(consumed)
                remaining -= 1
                try handle(reply)
            }
            if remaining == 0 && output.isEmpty { return }
            var events: Int16 = 0
            if remaining > 0 { events |= Int16(POLLIN) }
            if !output.isEmpty { events |= Int16(POLLOUT) }
            var poller = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&poller, 1, timeoutMs)
            if ready < 0 {
                if errno == EINTR { continue }
                throw CLIError("waiting for \(address): \(systemError(errno))")
            }
            if ready == 0 {
                throw CLIError("\(address) did not answer within \(formatMilliseconds(Int64(timeoutMs))) (see --timeout)")
            }
            if poller.revents & Int16(POLLOUT) != 0 || (!output.isEmpty && poller.revents & Int16(POLLERR) != 0) {
                try writeSome()
            }
            if remaining > 0 && poller.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                try readSome(waitingFor: remaining)
            }
        }
    }

    /// Sends `groups` of commands pipelined and hands each group's replies
    /// to `handle` (with the group's index) as soon as they are all in,
    /// sending again every group a reply of which was a rate-limit refusal
    /// (`isRateLimitRefusal`): the node asks to retry later, and a dump or
    /// restore during an incident with a rate limit set should slow down,
    /// not fail. A group goes again whole, so that its replies belong
    /// together (a dump's GET and PTTL of one key); only the replies of the
    /// group being read are held, so memory stays one group's. The pause
    /// before each round doubles from 10 ms to 1 s while nothing gets
    /// through, and resets when something does; after `giveUpAfterMs`
    /// without any group answered, the refusals go to `handle` as they are.
    /// Returns how many groups were sent again.
    @discardableResult
    func exchangeRetryingRateLimit(_ groups: [[[[UInt8]]]], giveUpAfterMs: Int64 = 60_000,
                                   _ handle: (Int, [RESPValue]) throws(CLIError) -> Void) throws(CLIError) -> Int {
        var waiting = Array(groups.indices)
        var resent = 0
        var pauseMs: Int64 = 10
        var lastProgressMs = monotonicMs()
        while !waiting.isEmpty {
            for group in waiting { for command in groups[group] { queue(command) } }
            let expected = waiting.reduce(0) { $0 + groups[$1].count }
            let givingUp = monotonicMs() - lastProgressMs >= giveUpAfterMs
            var refused: [Int] = []
            var position = 0
            var groupReplies: [RESPValue] = []
            try exchange(replies: expected) { reply throws(CLIError) in
                let group = waiting[position]
                groupReplies.append(reply)
                guard groupReplies.count == groups[group].count else { return }
                if !givingUp && groupReplies.contains(where: Self.isRateLimitRefusal) {
                    refused.append(group)
                } else {
                    try handle(group, groupReplies)
                }
                groupReplies.removeAll(keepingCapacity: true)
                position += 1
            }
            if refused.count < waiting.count {
                lastProgressMs = monotonicMs()
                pauseMs = 10
            } else {
                pauseMs = min(pauseMs * 2, 1_000)
            }
            resent += refused.count
            waiting = refused
            if !waiting.isEmpty { usleep(UInt32(pauseMs * 1_000)) }
        }
        return resent
    }

    /// The node's answer when its rate limit (`rate_limit`, or the runbook's
    /// `POST /admin/rate-limit`) refused a command: "ERR rate limit exceeded ...; retry later".
    static func isRateLimitRefusal(_ reply: RESPValue) -> Bool {
        guard case .error(let message) = reply else { return false }
        return message.hasPrefix("ERR rate limit exceeded")
    }

    private func parseReply() throws(CLIError) -> (RESPValue, Int)? {
        do {
            return try RESPReplyParser.parse(input.readableView)
        } catch {
            throw CLIError("\(address) sent a reply that is not valid RESP: \((error as? RESPReplyError)?.message ?? "\(error)")")
        }
    }

    private func writeSome() throws(CLIError) {
        let view = output.readableView
        if let tls {
            let (n, step) = tls.write(view.baseAddress, view.count)
            switch step {
            case .done: output.consume(n)
            case .wantRead, .wantWrite: break
            case .closed: throw CLIError("connection to \(address) lost: the node closed it")
            case .failed: throw CLIError("connection to \(address) lost: \(TLSSession.lastError())")
            }
            return
        }
        let n = send(fd, view.baseAddress, view.count, Int32(MSG_NOSIGNAL))
        if n < 0 {
            let error = errno
            if error == EAGAIN || error == EINTR { return }
            throw CLIError("connection to \(address) lost: \(systemError(error))")
        }
        output.consume(n)
    }

    private func readSome(waitingFor remaining: Int) throws(CLIError) {
        let space = input.writableSpace(minimum: 64 * 1024)
        var n: Int
        if let tls {
            let (count, step) = tls.read(space.baseAddress, space.count)
            switch step {
            case .done: n = count
            case .wantRead, .wantWrite: return
            case .closed: n = 0
            case .failed: throw CLIError("connection to \(address) lost: \(TLSSession.lastError())")
            }
        } else {
            n = read(fd, space.baseAddress, space.count)
        }
        if n < 0 {
            let error = errno
            if error == EAGAIN || error == EINTR { return }
            throw CLIError("connection to \(address) lost: \(systemError(error))")
        }
        if n == 0 {
            throw CLIError("\(address) closed the connection with \(remaining) repl\(remaining == 1 ? "y" : "ies") still due")
        }
        input.commitWrite(n)
    }
}

/// "10s", "1.5s", "250ms" for messages.
func formatMilliseconds(_ ms: Int64) -> String {
    if ms % 1000 == 0 { return "\(ms / 1000)s" }
    if ms > 1000 { return "\(Double(ms) / 1000)s" }
    return "\(ms)ms"
}

extension RESPValue {
    /// A reply's text for messages (bulk bytes decoded leniently).
    var summary: String {
        switch self {
        case .simple(let s), .error(let s), .verbatim(let s), .bigNumber(let s): return s
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .integer(let n): return String(n)
        case .null: return "(nil)"
        default: return String(describing: self)
        }
    }
}
