import AegisProtocol
import AegisStore
import AegisTLS

/// One client connection, owned by the reactor that accepted it for its
/// whole life. Buffers are allocated on first use and released when idle,
/// so ten thousand idle connections cost little more than their sockets.
///
/// Thread confinement: made on its reactor's thread (at accept) and touched
/// only there; debug builds check it where the reactor looks a connection
/// up and where replies are put or taken (OwnerThread.swift).
final class Connection {
    let fd: Int32
    let index: UInt32
    let generation: UInt32
    let clientID: Int
    let peer: String
    /// Who connected, as accept reported it (protected mode, failed AUTH counts).
    let address: ClientAddress
    /// Set when the connection is accepted only to be refused in its own
    /// protocol once its first bytes show which (Listener.refusals).
    var refusal: Refusal?
    /// The OpenSSL session when the port serves TLS (Reactor+TLS.swift);
    /// freed, and set to nil, when the connection closes.
    var tls: TLSSession?
    /// Holds one of its address's handshake slots (TLSService.admission)
    /// from accept until its handshake ends, whichever way it ends.
    var holdsHandshakeSlot = false

    enum Refusal {
        case atCapacity
        case protectedMode
    }

    /// Fixed by the first byte; RESP2 becomes RESP3 after `HELLO 3`.
    var wire: WireKind?
    var authenticated: Bool
    var name: String?
    /// What the client library announced with CLIENT SETINFO.
    var libraryName: String?
    var libraryVersion: String?

    /// Bytes received but not yet parsed (a partial request, or requests held
    /// back by output backpressure). Empty most of the time: complete
    /// requests are parsed straight out of the reactor's read scratch.
    let input = WireBuffer()
    let output = WireBuffer()
    let replies = ReplyQueue()
    /// How far the partial RESP request at the front of the unparsed bytes
    /// has been checked, so each read costs only its own bytes.
    var respResume = RESPResumePoint.start
    /// Length of the partial binary frame at the front of the unparsed
    /// bytes, once its length prefix has arrived (0 = none or not known).
    var binaryFrameNeeded = 0
    /// Bytes the partial request at the front of the unparsed bytes needs
    /// at least (0 = not known).
    var partialRequestNeeded: Int { wire == .binary ? binaryFrameNeeded : respResume.bytesNeeded }
    /// Buffer bytes (input, output, reply staging: their capacities) this
    /// connection has charged to its reactor's count of client buffers.
    var chargedBufferBytes = 0
    var chargedInputBytes = 0

    /// For CLIENT LIST/INFO: when it connected (monotonic ms) and its last command.
    let connectedMs: Int64
    var lastCommand = RESPCommand.unknown
    /// CLIENT NO-EVICT: recorded and shown (flag "e"); this node never
    /// closes clients to free memory, so it changes nothing else.
    var noEvict = false
    enum ReplyMode { case on, off, skipNext }
    /// CLIENT REPLY: `.off` drops every reply, `.skipNext` the next one.
    var replyMode = ReplyMode.on
    /// The reply slot of a RENAME/RENAMENX/COPY moving a value between
    /// reactors: until it has been sent, the connection's next requests
    /// wait, so that they run after the move (KeyMoves.swift). An AUTH
    /// answer held back after repeated failures (Reactor+Auth.swift) sets
    /// it too: a client cannot pipeline guesses behind a held answer.
    var moveSlot: UInt64?
    /// The shard and version of the last write this connection's reactor
    /// ran for it (-1: none), for WAIT.
    var lastWriteShard = -1
    var lastWriteVersion = EntryVersion.zero

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

    /// Claimed by the accepting thread in `init`.
    private var ownerThread = OwnerThread()

    init(fd: Int32, index: UInt32, generation: UInt32, clientID: Int, peer: String, address: ClientAddress = .unknown,
         nowMs: Int64, requiresAuth: Bool) {
        self.fd = fd
        self.address = address
        self.index = index
        self.generation = generation
        self.clientID = clientID
        self.peer = peer
        self.lastActivityMs = nowMs
        self.connectedMs = nowMs
        self.authenticated = !requiresAuth
        ownerThread.claim()
    }

    @inline(__always) func assertOwnedByCaller() {
        ownerThread.check("a client connection")
    }

    /// Where the next complete reply goes: straight to the output buffer
    /// when nothing earlier is outstanding, otherwise behind the queue.
    @inline(__always) var replyTarget: WireBuffer {
        assertOwnedByCaller()
        return replies.isEmpty ? output : replies.staging
    }

    /// Output bound: once the unsent replies, plus the replies expected
    /// from requests still on other reactors, reach it, the connection is
    /// not read until it drains. The bytes held are then at most this plus
    /// the one reply that crossed it (or, when a client switches from small
    /// values to large ones, the `maxForwardsInFlight` replies sent before
    /// the first large one came back).
    static let outputHighWater = 4 * 1024 * 1024
    /// Forwarded requests one connection may have in flight: enough to keep
    /// a pipeline of small requests flowing between reactors, few enough
    /// that a wrong guess of their reply size costs little.
    static let maxForwardsInFlight = 64

    /// Requests this connection has waiting on other reactors, and the size
    /// of reply expected for each (for the bound above).
    var forwardsInFlight = 0
    /// Jumps to any larger reply at once and comes down by an eighth per
    /// smaller one, so a few large replies are enough to slow the
    /// connection down while a run of small ones speeds it up again. Starts
    /// at a quarter of the bound: a first burst of GETs for large values
    /// then has at most four in flight, a pipeline of small values learns
    /// within a few dozen replies.
    var expectedReplyBytes = outputHighWater / 4

    /// True when the connection must not be read or parsed further: its
    /// unsent replies, with the replies still to come from other reactors,
    /// reach the bound.
    @inline(__always) var isBackpressured: Bool {
        output.readableBytes + replies.staging.readableBytes + forwardsInFlight &* expectedReplyBytes >= Self.outputHighWater
            || replies.outstanding > ReplyQueue.maxOutstanding
            || forwardsInFlight >= Self.maxForwardsInFlight
            || moveSlot != nil
    }

    @inline(__always) func noteForwardedReply(bytes: Int) {
        assertOwnedByCaller()
        forwardsInFlight -= 1
        expectedReplyBytes = max(bytes, (expectedReplyBytes * 7 + bytes) / 8, 1)
    }

    var respVersion: RESPVersion { wire == .resp3 ? .resp3 : .resp2 }
}
