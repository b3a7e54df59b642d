import AegisProtocol

/// One client connection, owned by the reactor that accepted it for its
/// whole life. Buffers are allocated on first use and released when idle,
/// so ten thousand idle connections cost little more than their sockets.
final class Connection {
    let fd: Int32
    let index: UInt32
    let generation: UInt32
    let clientID: Int
    let peer: String

    /// Fixed by the first byte; RESP2 becomes RESP3 after `HELLO 3`.
    var wire: WireKind?
    var authenticated: Bool
    var name: String?

    /// Bytes received but not yet parsed (a partial request, or requests held
    /// back by output backpressure). Empty most of the time: complete
    /// requests are parsed straight out of the reactor's read scratch.
    let input = WireBuffer()
    let output = WireBuffer()
    let replies = ReplyQueue()

    var closeAfterFlush = false
    /// Complete requests left unparsed because the output was over its bound.
    var inputHeldBack = false
    var isClosed = false
    /// Registered epoll interest, to skip needless epoll_ctl calls.
    var interest: UInt32 = 0
    var isDirty = false

    // Monotonic ms (Reactor.monotonicMs), so a wall-clock step moves no timeout.
    var lastActivityMs: Int64
    var partialSinceMs: Int64 = 0       // when `input` last became non-empty
    var writeBlockedSinceMs: Int64 = 0  // when a write last left bytes unsent

    init(fd: Int32, index: UInt32, generation: UInt32, clientID: Int, peer: String, nowMs: Int64, requiresAuth: Bool) {
        self.fd = fd
        self.index = index
        self.generation = generation
        self.clientID = clientID
        self.peer = peer
        self.lastActivityMs = nowMs
        self.authenticated = !requiresAuth
    }

    /// Where the next complete reply goes: straight to the output buffer
    /// when nothing earlier is outstanding, otherwise behind the queue.
    @inline(__always) var replyTarget: WireBuffer {
        replies.isEmpty ? output : replies.staging
    }

    /// Output bound: past it the connection is not read until it drains.
    static let outputHighWater = 4 * 1024 * 1024

    /// Requests this connection has waiting on other reactors, and the
    /// running average size of the replies it gets (for the bound below).
    var forwardsInFlight = 0
    /// Starts pessimistic (16 requests in flight) and learns within a few
    /// dozen replies; starting small would let a first burst of GETs for
    /// large values all be in flight at once.
    var averageReplyBytes = 256 * 1024

    /// True when the connection must not be read or parsed further: its
    /// unsent replies are over the bound, or the replies still to come from
    /// other reactors would likely take it over (a pipeline of GETs for a
    /// 1 MiB value may have only a few in flight; one of small values, many).
    @inline(__always) var isBackpressured: Bool {
        output.readableBytes + replies.staging.readableBytes > Self.outputHighWater
            || replies.outstanding > ReplyQueue.maxOutstanding
            || forwardsInFlight >= max(4, Self.outputHighWater / averageReplyBytes)
    }

    @inline(__always) func noteForwardedReply(bytes: Int) {
        forwardsInFlight -= 1
        averageReplyBytes = max(1, (averageReplyBytes * 7 + bytes) / 8)
    }

    var respVersion: RESPVersion { wire == .resp3 ? .resp3 : .resp2 }
}
