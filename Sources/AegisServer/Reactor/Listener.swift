/// The reactor's listening socket and what accepting on it involves: the
/// pause while descriptors are short, and the connections refused (at
/// max_conns, or off loopback in protected mode) that wait to hear which
/// protocol to refuse them in.
///
/// Invariants: `fd` is -1 once the reactor started draining (closed and
/// out of the epoll set); `refusals` holds at most
/// `maxRefusalsAwaitingFirstByte` connections, each counted in the node's
/// open connections until it closes.
struct Listener {
    var fd: Int32
    /// Whether accepting is paused for want of descriptors (AcceptPause.swift).
    var pause = AcceptPause()
    /// Connections refused (Connection.refusal says why) that have not sent
    /// their first byte yet: the refusal must be worded in their protocol. At most
    /// `maxRefusalsAwaitingFirstByte`, each for at most `refusalWaitMs`.
    var refusals: [Connection] = []

    static let maxRefusalsAwaitingFirstByte = 16
    static let refusalWaitMs: Int64 = 1000

    init(fd: Int32) {
        self.fd = fd
    }
}
