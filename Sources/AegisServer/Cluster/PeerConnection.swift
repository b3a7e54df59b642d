import CSupport
import Glibc

/// One TCP connection between this node and a peer, owned by the cluster
/// loop's thread (never touched from another).
///
/// Connections are one-way for messages: the side that dialled writes (its
/// hello first, then frames on its lane), the side that accepted reads. Each
/// node dials its own connections to the peers it sends to, so there is no
/// tie to break when two nodes dial each other at the same moment.
///
/// Memory is bounded on both sides: inbound, the buffer never holds more
/// than one frame of the lane's maximum plus its prefix; outbound, the queue
/// refuses frames past the lane's limit.
final class PeerConnection {
    enum Role {
        /// Dialled by this node to `address`, for sending on `lane`.
        case dialled(address: String, lane: PeerLane)
        /// Accepted on the gossip port; the peer says who it is in its hello.
        case accepted
    }

    enum State: Equatable {
        case connecting
        /// TLS between nodes: the handshake runs before any frame moves.
        case handshaking
        case awaitingHello
        case open
    }

    enum Closure: Equatable {
        case endOfStream
        case failed(Int32)
        case refused(PeerRefusal)
        case outboundFull
        /// TLS did not authenticate both ends; `detail` is OpenSSL's reason.
        case tlsRefused(PeerTLSRefusal, detail: String)
        /// Forwarded requests on it went unanswered: closed abortively so
        /// that nothing still queued on it is delivered later.
        case abandoned
    }

    static let prefixBytes = 4
    /// Reads per readiness event: a peer that floods cannot keep the loop
    /// from serving the others (epoll is level-triggered; the rest is read
    /// on the next turn).
    static let readsPerEvent = 16
    /// An emptied inbound buffer keeps its storage up to this size (two
    /// reads' worth); a bigger one (a large frame went through) is freed.
    static let inboundCapacityKept = 128 * 1024

    let fd: Int32
    let token: UInt64
    let role: Role
    /// Plain TCP, or a TLS session every byte goes through (cluster_tls_*).
    let transport: PeerTransport
    var state: State
    /// The peer's IP address, for an accepted connection (its log lines before a hello names it).
    var remoteHost = ""
    /// Known once the hello was read (accepted) or from the start (dialled).
    private(set) var hello: PeerHello?
    /// An accepted control connection whose peer has neither announced its
    /// build nor sent a membership message yet: the first of the two tells
    /// whether it runs a release before leases (ClusterLoop.classifyLeases).
    var awaitingLeaseEvidence = false
    /// Whether epoll watches this connection for writability: only while
    /// it connects or has bytes the socket would not take. Level-triggered
    /// EPOLLOUT on an idle socket would wake the loop without end.
    var watchingWritable = false

    private var inbound: [UInt8] = []
    private var inboundStart = 0
    private var outbound: [[UInt8]] = []
    private var outboundHead = 0
    private var outboundOffset = 0
    private(set) var outboundBytes = 0
    /// Whether any byte of a queued frame went to the socket. Until then
    /// nothing queued here can have reached the peer (the hello goes
    /// first, and frames only once the link is open).
    private(set) var wroteFrames = false

    init(fd: Int32, token: UInt64, role: Role, state: State, transport: PeerTransport = .plain) {
        self.fd = fd
        self.token = token
        self.role = role
        self.state = state
        self.transport = transport
    }

    var lane: PeerLane? {
        switch role {
        case .dialled(_, let lane): return lane
        case .accepted: return hello?.lane
        }
    }

    /// The inbound frame limit in the connection's current state.
    private var inboundFrameLimit: Int {
        state == .awaitingHello ? PeerHello.maxBytes : (lane ?? .control).maxFrameBytes
    }

    /// Bytes this connection holds in memory now, both ways.
    var bufferedBytes: Int { inbound.count - inboundStart + outboundBytes }

    func connected() {
        precondition(state == .connecting, "connected() twice")
        if case .tls = transport { state = .handshaking } else { state = .open }
    }

    // MARK: - Reading

    struct Received {
        var frames: [[UInt8]] = []
        var bytes = 0
        var closure: Closure?
    }

    /// Reads what the socket has (bounded per call) and splits it into
    /// whole frames, length prefix included (the membership codec reads them
    /// that way). The hello of an accepted connection is checked here and
    /// never returned as a frame.
    func readFrames(scratch: UnsafeMutableRawBufferPointer, authenticator: GossipAuthenticator) -> Received {
        var received = Received()
        for _ in 0..<Self.readsPerEvent {
            let count = transport.receive(fd, scratch.baseAddress, scratch.count)
            if count == 0 { received.closure = .endOfStream; return received }
            if count < 0 {
                if count == -Int(EAGAIN) || count == -Int(EINTR) { break }
                received.closure = .failed(Int32(-count))
                return received
            }
            received.bytes += count
            inbound.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
            if let closure = splitFrames(into: &received.frames, authenticator) {
                received.closure = closure
                return received
            }
            // A TLS read returns one record (16 KiB at most) however much
            // waits, so only a plain short read says the socket is empty.
            if count < scratch.count && transport.isPlain { break }
        }
        return received
    }

    private func splitFrames(into frames: inout [[UInt8]], _ authenticator: GossipAuthenticator) -> Closure? {
        while inbound.count - inboundStart >= Self.prefixBytes {
            if state == .awaitingHello, inbound.count - inboundStart >= Self.prefixBytes + 4,
               !inbound[(inboundStart + Self.prefixBytes)..<(inboundStart + Self.prefixBytes + 4)].elementsEqual(PeerHello.magic) {
                // Not our protocol (an HTTP request, a scanner's probe): refuse
                // at once rather than wait for a frame that never ends.
                return .refused(.malformed)
            }
            let length = inbound[inboundStart..<inboundStart + 4].reduce(0) { $0 << 8 | Int($1) }
            // Checked on the prefix alone: a claim of 2^31 bytes is refused
            // before any of them is waited for or buffered.
            if length > inboundFrameLimit { return .refused(state == .awaitingHello ? .malformed : .oversize) }
            let end = inboundStart + Self.prefixBytes + length
            guard inbound.count >= end else { break }
            let frameStart = inboundStart
            let payload = inbound[(inboundStart + Self.prefixBytes)..<end]
            inboundStart = end
            if state == .awaitingHello {
                switch PeerHello.decode(payload, authenticator) {
                case .failure(let refusal): return .refused(refusal)
                case .success(let peer):
                    hello = peer
                    state = .open
                }
            } else {
                frames.append(Array(inbound[frameStart..<end]))
            }
        }
        if inboundStart > 0 && inboundStart == inbound.count {
            // Every frame taken: the buffer keeps its storage. Emptied with
            // removeFirst, it was freed and allocated again on every read,
            // and a frame over glibc's mmap threshold cost an mmap, page
            // faults and an munmap each time (seen in a forwarding profile).
            inbound.removeAll(keepingCapacity: inbound.capacity <= Self.inboundCapacityKept)
            inboundStart = 0
        } else if inboundStart > 64 * 1024 {
            inbound.removeFirst(inboundStart)
            inboundStart = 0
        }
        return nil
    }

    // MARK: - Writing

    /// Queues one whole frame, its length prefix included. False when the
    /// lane's outbound limit would be passed: the caller closes the link.
    func enqueue(frame: [UInt8]) -> Bool {
        assert(frame.count >= Self.prefixBytes
            && frame.prefix(Self.prefixBytes).reduce(0, { $0 << 8 | Int($1) }) == frame.count - Self.prefixBytes,
            "a frame's prefix gives the length of the rest")
        let limit = lane?.outboundLimitBytes ?? PeerLane.control.outboundLimitBytes
        guard outboundBytes + frame.count <= limit else { return false }
        outbound.append(frame)
        outboundBytes += frame.count
        return true
    }

    enum Flush: Equatable {
        case drained(written: Int)
        case blocked(written: Int)
        case failed(Int32)
    }

    /// Writes queued frames until done or the socket is full.
    func flush() -> Flush {
        guard state == .open else { return .blocked(written: 0) }
        var written = 0
        while outboundHead < outbound.count {
            let sent = outbound[outboundHead].withUnsafeBytes { frame in
                transport.send(fd, frame.baseAddress! + outboundOffset, frame.count - outboundOffset)
            }
            if sent < 0 {
                if sent == -Int(EAGAIN) || sent == -Int(EINTR) { return .blocked(written: written) }
                return .failed(Int32(-sent))
            }
            written += sent
            if sent > 0 { wroteFrames = true }
            outboundBytes -= sent
            outboundOffset += sent
            if outboundOffset == outbound[outboundHead].count {
                outboundHead += 1
                outboundOffset = 0
            }
        }
        outbound.removeAll(keepingCapacity: outbound.capacity <= 64)
        outboundHead = 0
        return .drained(written: written)
    }

    var hasQueuedOutput: Bool { outboundBytes > 0 }
}
