import AegisProtocol
import AegisTLS
import CSupport
import Glibc

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One request waiting for its reply. Replies come back in request order on
/// every protocol used here, so a ring per connection matches them.
struct Pending {
    var op: Int
    var measured: Bool
    var keyIndex: Int
    /// Latency origin: the send time (closed loop) or the intended send time (open loop).
    var start: Int64
    /// When it was actually handed to the socket (for `--timeout`).
    var sent: Int64
    var requestID: UInt64
}

/// A client connection: its socket, reused buffers and the ring of requests
/// awaiting replies.
///
/// Invariants: `0 <= count <= capacity`; `ring[head ..< head+count mod capacity]`
/// are the outstanding requests, oldest first; `ring` holds `capacity` initialized
/// trivial values and is freed in `deinit`.
final class Connection {
    let fd: Int32
    let token: UInt64
    let input = WireBuffer(capacity: 64 * 1024)
    let output = WireBuffer(capacity: 64 * 1024)
    let ring: UnsafeMutablePointer<Pending>
    let capacity: Int
    var head = 0
    var count = 0
    var nextIntendedNs: Int64 = 0
    var nextRequestID: UInt64 = 1
    var wantsWrite = false
    var alive = true
    /// With --tls: every byte goes through it (freed before `fd` closes).
    var tls: TLSSession?

    init(fd: Int32, token: UInt64, capacity: Int) {
        self.fd = fd
        self.token = token
        self.capacity = capacity
        ring = .allocate(capacity: capacity)
        ring.initialize(
            repeating: Pending(op: 0, measured: false, keyIndex: 0, start: 0, sent: 0, requestID: 0), count: capacity)
    }

    deinit { ring.deallocate() }

    @inline(__always) func push(_ p: Pending) {
        assert(count < capacity)
        var slot = head + count
        if slot >= capacity { slot -= capacity }
        ring[slot] = p
        count += 1
    }

    @inline(__always) var front: Pending { ring[head] }

    @inline(__always) func pop() {
        assert(count > 0)
        head += 1
        if head == capacity { head = 0 }
        count -= 1
    }
}

enum Outcome { case ok, miss, error }

/// Opens a blocking TCP connection, then makes it non-blocking with TCP_NODELAY.
func connectTCP(host: String, port: String) throws(BenchError) -> Int32 {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, port, &hints, &list)
    guard rc == 0, let first = list else {
        throw BenchError("cannot resolve \(host):\(port): \(String(cString: gai_strerror(rc)))")
    }
    defer { freeaddrinfo(list) }
    var lastError: Int32 = 0
    var cursor: UnsafeMutablePointer<addrinfo>? = first
    while let entry = cursor {
        let fd = socket(entry.pointee.ai_family, entry.pointee.ai_socktype, entry.pointee.ai_protocol)
        if fd >= 0 {
            if connect(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen) == 0 {
                var one: Int32 = 1
                _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                let flags = fcntl(fd, F_GETFL)
                _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
                return fd
            }
            lastError = errno
            close(fd)
        } else {
            lastError = errno
        }
        cursor = entry.pointee.ai_next
    }
    throw BenchError("cannot connect to \(host):\(port): \(String(cString: strerror(lastError)))")
}

/// One load-generating thread: its own epoll set over its share of the connections.
final class Worker {
    let index: Int
    let config: BenchConfig
    let progress: Progress
    var connections: [Connection] = []
    let epfd: Int32
    var rng: FastRandom
    var result = WorkerResult()
    var interval = makeHistogram()
    var unpublishedCompleted = 0
    var unpublishedErrors = 0
    var unpublishedTimeouts = 0
    var pendingTotal = 0
    var liveConnections = 0

    let keyScratch = UnsafeMutableRawPointer.allocate(byteCount: KeyFormat.length, alignment: 8)
    let checkKeyScratch = UnsafeMutableRawPointer.allocate(byteCount: KeyFormat.length, alignment: 8)
    let valueScratch: UnsafeMutableRawPointer
    let ttlText: [UInt8]
    var versionCounter: UInt64 = 0
    var sequentialNext: Int
    var quota: Int?
    var measureStartNs: Int64 = 0
    var endNs: Int64 = .max
    var stopIssuing = false
    let openLoop: Bool
    let intervalNs: Int64
    let maxOutstanding: Int
    let opWeightTotal: Int

    init(index: Int, config: BenchConfig, progress: Progress) {
        self.index = index
        self.config = config
        self.progress = progress
        epfd = aegis_epoll_create()
        rng = FastRandom(seed: 0x5DEE_CE66_D1CE_4E5B &* UInt64(index + 1) ^ UInt64(bitPattern: aegis_monotonic_ns()))
        valueScratch = .allocate(byteCount: Swift.max(config.valueMax, 1), alignment: 8)
        valueScratch.initializeMemory(as: UInt8.self, repeating: UInt8(ascii: "x"), count: Swift.max(config.valueMax, 1))
        ttlText = Array(String(config.ttlSeconds).utf8)
        sequentialNext = config.keys * index / config.threads
        if let total = config.requests {
            quota = total / config.threads + (index < total % config.threads ? 1 : 0)
        }
        openLoop = config.rate != nil
        if let rate = config.rate {
            intervalNs = Int64((1e9 * Double(config.connections) / rate).rounded())
            maxOutstanding = Swift.max(config.pipeline, 256)
        } else {
            intervalNs = 0
            maxOutstanding = config.pipeline
        }
        opWeightTotal = config.getWeight + config.setWeight
    }

    deinit {
        keyScratch.deallocate()
        checkKeyScratch.deallocate()
        valueScratch.deallocate()
    }

    // MARK: - Run

    func run() {
        defer {
            for conn in connections where conn.alive {
                conn.tls?.free(notifyPeer: true)
                _ = aegis_close(conn.fd)
            }
            if epfd >= 0 { _ = aegis_close(epfd) }
            progress.publish(
                completed: unpublishedCompleted, errors: unpublishedErrors, timeouts: unpublishedTimeouts,
                interval: &interval)
            let finished = result
            progress.results.withLock { $0.append(finished) }
            progress.finishedWorkers.add(1, ordering: .releasing)
        }
        guard epfd >= 0 else {
            progress.reportFatal("epoll_create failed: \(String(cString: strerror(-epfd)))")
            return
        }
        for c in stride(from: index, to: config.connections, by: config.threads) {
            let address = config.addresses[c % config.addresses.count]
            let fd: Int32
            do { fd = try connectTCP(host: address.host, port: address.port) } catch {
                progress.reportFatal(error.description)
                return
            }
            let conn = Connection(fd: fd, token: UInt64(connections.count), capacity: maxOutstanding)
            if let context = config.tls {
                do {
                    conn.tls = try handshake(context, fd: fd, host: address.host)
                } catch {
                    _ = aegis_close(fd)
                    progress.reportFatal("TLS with \(address.host):\(address.port): \(error.message)")
                    return
                }
            }
            _ = aegis_epoll_add(epfd, fd, AEGIS_EPOLLIN, conn.token)
            connections.append(conn)
        }
        liveConnections = connections.count
        progress.connected.add(1, ordering: .releasing)
        // Wait until every thread is connected, so all start the load together.
        var startNs: Int64 = 0
        while true {
            startNs = progress.startNs.load(ordering: .acquiring)
            if startNs != 0 { break }
            usleep(200)
        }
        if startNs < 0 { return }
        measureStartNs = startNs + config.warmupNs
        if let duration = config.durationNs { endNs = measureStartNs + duration }
        loop(startNs: startNs)
    }

    private func loop(startNs: Int64) {
        let maxEvents = 256
        let events = UnsafeMutablePointer<aegis_epoll_event>.allocate(capacity: maxEvents)
        defer { events.deallocate() }
        if openLoop {
            let total = Int64(config.connections)
            for (i, conn) in connections.enumerated() {
                let global = Int64(index + i * config.threads)
                conn.nextIntendedNs = startNs + intervalNs * global / total
            }
        } else {
            for conn in connections {
                topUp(conn)
                flush(conn)
            }
        }
        var lastHousekeeping = startNs
        while liveConnections > 0 {
            let now = monotonicNs()
            if !stopIssuing && now >= endNs { stopIssuing = true }
            var nextDue = Int64.max
            if openLoop && !stopIssuing { nextDue = schedule(now: now) }
            if now - lastHousekeeping >= 100_000_000 {
                expireTimeouts(now: now)
                progress.publish(
                    completed: unpublishedCompleted, errors: unpublishedErrors, timeouts: unpublishedTimeouts,
                    interval: &interval)
                unpublishedCompleted = 0
                unpublishedErrors = 0
                unpublishedTimeouts = 0
                lastHousekeeping = now
            }
            if stopIssuing && pendingTotal == 0 { break }
            var timeoutMs: Int32 = 10
            if nextDue != .max {
                let wait = nextDue - now
                if wait >= 1_000_000 {
                    timeoutMs = Int32(Swift.min(wait / 1_000_000, 10))
                } else {
                    // epoll_wait sleeps in whole milliseconds; below that, sleep in select(2) with
                    // microseconds (woken early by replies). Spinning instead would take the CPU a
                    // server on the same machine needs. A late send is not hidden: latency still
                    // counts from the intended time.
                    if wait > 0 { sleepUntilReadable(microseconds: Int(wait / 1000)) }
                    timeoutMs = 0
                }
            }
            let n = Int(aegis_epoll_wait(epfd, events, Int32(maxEvents), timeoutMs))
            if n <= 0 { continue }
            for i in 0..<n {
                let event = events[i]
                let conn = connections[Int(event.token)]
                guard conn.alive else { continue }
                if event.events & (AEGIS_EPOLLIN | AEGIS_EPOLLERR | AEGIS_EPOLLHUP) != 0 { readReplies(conn) }
                if conn.alive && event.events & AEGIS_EPOLLOUT != 0 { flush(conn) }
                if conn.alive && !openLoop {
                    topUp(conn)
                    flush(conn)
                }
            }
        }
    }

    /// Waits up to `microseconds` for the epoll set to become readable.
    private func sleepUntilReadable(microseconds: Int) {
        guard epfd < FD_SETSIZE else { return }
        var set = fd_set()
        withUnsafeMutableBytes(of: &set) { raw in
            let words = raw.bindMemory(to: UInt.self)
            let bitsPerWord = UInt.bitWidth
            words[Int(epfd) / bitsPerWord] |= 1 << UInt(Int(epfd) % bitsPerWord)
        }
        var timeout = timeval(tv_sec: 0, tv_usec: Swift.max(microseconds, 1))
        _ = select(epfd + 1, &set, nil, nil, &timeout)
    }

    /// Open loop: send every request whose intended time has come; returns the next due time.
    private func schedule(now: Int64) -> Int64 {
        var nextDue = Int64.max
        for conn in connections where conn.alive {
            var wrote = false
            while conn.nextIntendedNs <= now && conn.count < maxOutstanding {
                guard issue(conn, start: conn.nextIntendedNs, sent: now) else { break }
                conn.nextIntendedNs += intervalNs
                wrote = true
            }
            if wrote { flush(conn) }
            if stopIssuing { return .max }
            if conn.alive && conn.count < maxOutstanding && conn.nextIntendedNs < nextDue {
                nextDue = conn.nextIntendedNs
            }
        }
        return nextDue
    }

    /// Closed loop: keep `--pipeline` requests outstanding.
    @inline(__always) private func topUp(_ conn: Connection) {
        guard !stopIssuing && conn.count < maxOutstanding else { return }
        let now = monotonicNs()
        if now >= endNs { stopIssuing = true; return }
        while conn.count < maxOutstanding {
            guard issue(conn, start: now, sent: now) else { return }
        }
    }

    @inline(__always) private func nextKey() -> Int {
        let k = drawKey()
        guard let indices = config.keyIndices else { return k }
        return indices[k]
    }

    @inline(__always) private func drawKey() -> Int {
        switch config.keyPattern {
        case .uniform:
            return rng.below(config.keys)
        case .zipf:
            return config.zipf!.draw(rng.unit())
        case .sequential:
            let k = sequentialNext
            sequentialNext = k + 1 == config.keys ? 0 : k + 1
            return k
        }
    }

    /// Encodes one request into the connection's output buffer. False when the
    /// request quota is used up.
    private func issue(_ conn: Connection, start: Int64, sent: Int64) -> Bool {
        let measured = start >= measureStartNs
        if measured, let remaining = quota {
            if remaining == 0 { stopIssuing = true; return false }
            quota = remaining - 1
        }
        let op: Op = rng.below(opWeightTotal) < config.getWeight ? .get : .set
        let keyIndex = nextKey()
        KeyFormat.write(keyIndex, into: keyScratch)
        let key = UnsafeRawBufferPointer(start: keyScratch, count: KeyFormat.length)
        let requestID = conn.nextRequestID
        conn.nextRequestID &+= 1
        let out = conn.output
        switch op {
        case .get:
            switch config.protocolKind {
            case .aegis:
                BinaryRequestWriter.write(
                    command: BinaryCommand.get.rawValue, requestID: requestID, key: key,
                    value: UnsafeRawBufferPointer(start: valueScratch, count: 0), into: out)
            case .resp:
                RESPWriter.arrayHeader(2, into: out)
                RESPWriter.bulk(Self.literal("GET"), into: out)
                RESPWriter.bulk(key, into: out)
            case .memcache:
                MemcacheTextWriter.get(key: key, into: out)
            }
        case .set:
            let length = config.valueMin == config.valueMax
                ? config.valueMin : config.valueMin + rng.below(config.valueMax - config.valueMin + 1)
            if config.verify {
                versionCounter &+= 1
                CheckedValue.fill(valueScratch, length: length, key: key, version: UInt64(index) << 48 | versionCounter)
            }
            let value = UnsafeRawBufferPointer(start: valueScratch, count: length)
            switch config.protocolKind {
            case .aegis:
                BinaryRequestWriter.write(
                    command: BinaryCommand.set.rawValue, requestID: requestID, key: key, value: value,
                    ttlMs: Int64(config.ttlSeconds) * 1000, into: out)
            case .resp:
                RESPWriter.arrayHeader(config.ttlSeconds > 0 ? 5 : 3, into: out)
                RESPWriter.bulk(Self.literal("SET"), into: out)
                RESPWriter.bulk(key, into: out)
                RESPWriter.bulk(value, into: out)
                if config.ttlSeconds > 0 {
                    RESPWriter.bulk(Self.literal("EX"), into: out)
                    ttlText.withUnsafeBytes { RESPWriter.bulk($0, into: out) }
                }
            case .memcache:
                MemcacheTextWriter.set(key: key, value: value, exptime: config.ttlSeconds, into: out)
            }
        }
        conn.push(Pending(
            op: op.rawValue, measured: measured, keyIndex: keyIndex, start: start, sent: sent, requestID: requestID))
        pendingTotal += 1
        return true
    }

    @inline(__always) private static func literal(_ s: StaticString) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)
    }

    // MARK: - I/O

    /// A client session on a connected socket, its handshake done before the load starts.
    private func handshake(_ context: TLSContext, fd: Int32, host: String) throws(TLSSetupError) -> TLSSession {
        guard let session = TLSSession(context: context, fd: fd, isServer: false, host: host) else {
            throw TLSSetupError(message: "cannot create a session: \(TLSSession.lastError())")
        }
        try session.completeHandshake(fd: fd, timeoutMs: Int32(clamping: config.timeoutNs / 1_000_000))
        return session
    }

    /// aegis_write / aegis_read, through TLS when the connection has it.
    @inline(__always) private func send(_ conn: Connection, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int {
        guard let session = conn.tls else { return aegis_write(conn.fd, bytes, count) }
        let (n, step) = session.write(bytes, count)
        switch step {
        case .done: return n
        case .wantRead, .wantWrite: return -Int(EAGAIN)
        case .closed, .failed: return -Int(EPIPE)
        }
    }

    @inline(__always) private func receive(_ conn: Connection, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
        guard let session = conn.tls else { return aegis_read(conn.fd, buffer, count) }
        let (n, step) = session.read(buffer, count)
        switch step {
        case .done: return n
        case .wantRead, .wantWrite: return -Int(EAGAIN)
        case .closed: return 0
        case .failed: return -Int(EPROTO)
        }
    }

    private func flush(_ conn: Connection) {
        while !conn.output.isEmpty {
            let view = conn.output.readableView
            let n = send(conn, view.baseAddress, view.count)
            if n > 0 { conn.output.consume(n); continue }
            if n == -Int(EAGAIN) {
                if !conn.wantsWrite {
                    conn.wantsWrite = true
                    _ = aegis_epoll_modify(epfd, conn.fd, AEGIS_EPOLLIN | AEGIS_EPOLLOUT, conn.token)
                }
                return
            }
            if n == -Int(EINTR) { continue }
            fail(conn, reason: "write failed: \(String(cString: strerror(Int32(-n))))", asTimeouts: false)
            return
        }
        if conn.wantsWrite {
            conn.wantsWrite = false
            _ = aegis_epoll_modify(epfd, conn.fd, AEGIS_EPOLLIN, conn.token)
        }
    }

    private func readReplies(_ conn: Connection) {
        while conn.alive {
            let space = conn.input.writableSpace(minimum: 16 * 1024)
            let n = receive(conn, space.baseAddress, space.count)
            if n > 0 {
                conn.input.commitWrite(n)
                parseReplies(conn, now: monotonicNs())
                // A TLS read returns one record at most: read on until the
                // session holds nothing and the socket says EAGAIN.
                if n < space.count && conn.tls == nil { return }
                continue
            }
            if n == 0 { fail(conn, reason: "server closed the connection", asTimeouts: false); return }
            if n == -Int(EAGAIN) { return }
            if n == -Int(EINTR) { continue }
            fail(conn, reason: "read failed: \(String(cString: strerror(Int32(-n))))", asTimeouts: false)
            return
        }
    }

    private func parseReplies(_ conn: Connection, now: Int64) {
        while !conn.input.isEmpty {
            guard conn.count > 0 else {
                fail(conn, reason: "reply without a request", asTimeouts: false)
                return
            }
            let view = conn.input.readableView
            let pending = conn.front
            let outcome: Outcome
            let consumed: Int
            do {
                switch config.protocolKind {
                case .resp:
                    guard let (value, used) = try RESPReplyParser.parse(view) else { return }
                    consumed = used
                    outcome = classify(resp: value, pending)
                case .aegis:
                    guard let response = try BinaryResponseParser.parse(view) else { return }
                    consumed = response.frameLength
                    outcome = classify(aegis: response, pending)
                case .memcache:
                    guard let (reply, used) = try MemcacheReplyParser.parse(view) else { return }
                    consumed = used
                    outcome = classify(memcache: reply, pending)
                }
            } catch {
                fail(conn, reason: "protocol error: \(error)", asTimeouts: false)
                return
            }
            conn.input.consume(consumed)
            conn.pop()
            pendingTotal -= 1
            complete(pending, outcome, now: now)
        }
    }

    @inline(__always) private func verified(_ value: UnsafeRawBufferPointer, _ p: Pending) -> Outcome {
        guard config.verify else { return .ok }
        KeyFormat.write(p.keyIndex, into: checkKeyScratch)
        let key = UnsafeRawBufferPointer(start: checkKeyScratch, count: KeyFormat.length)
        if CheckedValue.check(value, key: key) { return .ok }
        noteError("GET \(String(decoding: key, as: UTF8.self)) returned a value that fails its checksum")
        return .error
    }

    private func classify(resp value: RESPValue, _ p: Pending) -> Outcome {
        if p.op == Op.get.rawValue {
            switch value {
            case .bulk(let bytes): return bytes.withUnsafeBytes { verified($0, p) }
            case .null: return .miss
            default: noteError("GET: unexpected reply \(value)"); return .error
            }
        }
        if case .simple(let text) = value, text == "OK" { return .ok }
        noteError("SET: unexpected reply \(value)")
        return .error
    }

    private func classify(aegis response: BinaryResponse, _ p: Pending) -> Outcome {
        guard response.requestID == p.requestID else {
            noteError("reply for request \(response.requestID), expected \(p.requestID)")
            return .error
        }
        switch response.knownStatus {
        case .ok:
            if p.op == Op.get.rawValue { return response.value.withUnsafeBytes { verified($0, p) } }
            return .ok
        case .notFound where p.op == Op.get.rawValue:
            return .miss
        default:
            noteError("\(Op(rawValue: p.op)!.name): status \(response.status) \(response.error)")
            return .error
        }
    }

    private func classify(memcache reply: MemcacheReply, _ p: Pending) -> Outcome {
        if p.op == Op.get.rawValue {
            if case .values(let items) = reply {
                if items.isEmpty { return .miss }
                if items.count == 1 { return items[0].value.withUnsafeBytes { verified($0, p) } }
            }
            noteError("get: unexpected reply \(reply)")
            return .error
        }
        if reply == .stored { return .ok }
        noteError("set: unexpected reply \(reply)")
        return .error
    }

    private func noteError(_ message: @autoclosure () -> String) {
        let text = message()
        if result.firstError == nil { result.firstError = text }
        let kind = String(String(text.map { $0.isNumber ? "N" : $0 }).prefix(120))
        result.errorKinds[kind, default: 0] += 1
    }

    @inline(__always) private func complete(_ p: Pending, _ outcome: Outcome, now: Int64) {
        result.allReplies += 1
        unpublishedCompleted += 1  // progress lines show warm-up throughput too
        guard p.measured else { return }
        let latency = now - p.start
        result.perOp[p.op].ops += 1
        recordNs(latency, into: &result.perOp[p.op].histogram)
        recordNs(latency, into: &interval)
        switch outcome {
        case .ok: break
        case .miss: result.perOp[p.op].misses += 1
        case .error:
            result.perOp[p.op].errors += 1
            unpublishedErrors += 1
        }
        if now > result.lastReplyNs { result.lastReplyNs = now }
    }

    /// Requests unanswered for longer than `--timeout` count as timeouts and
    /// their connection is closed (a late reply could no longer be matched).
    private func expireTimeouts(now: Int64) {
        for conn in connections where conn.alive && conn.count > 0 {
            if now - conn.front.sent > config.timeoutNs {
                fail(conn, reason: "no reply within the timeout", asTimeouts: true)
            }
        }
    }

    private func fail(_ conn: Connection, reason: String, asTimeouts: Bool) {
        noteError(reason)
        while conn.count > 0 {
            let p = conn.front
            conn.pop()
            pendingTotal -= 1
            if p.measured {
                if asTimeouts {
                    result.perOp[p.op].timeouts += 1
                    unpublishedTimeouts += 1
                } else {
                    result.perOp[p.op].errors += 1
                    unpublishedErrors += 1
                }
            }
        }
        _ = aegis_epoll_remove(epfd, conn.fd)
        conn.tls?.free(notifyPeer: false)
        conn.tls = nil
        _ = aegis_close(conn.fd)
        conn.alive = false
        liveConnections -= 1
        result.connectionsLost += 1
    }
}
