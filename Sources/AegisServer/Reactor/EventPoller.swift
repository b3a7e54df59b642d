import CSupport
import Glibc

/// The reactor's epoll set and the descriptors it sleeps on: the wake-up
/// eventfd other reactors write (Interconnect.swift) and the maintenance
/// timer. Interest changes go through the kernel door, so tests can fail them.
///
/// Tokens: a client connection's token is its slot in the low 32 bits and
/// its generation in the high 32 (ConnectionTable.swift); the reactor's own
/// descriptors take the top values, which no slot and generation reach.
///
/// Invariants: `events` holds `maxEvents` entries, valid from one `wait`
/// to the next; the descriptors are open from `init` until `close`.
struct EventPoller {
    static let listenerToken = UInt64.max
    static let wakeToken = UInt64.max - 1
    static let timerToken = UInt64.max - 2
    static let walToken = UInt64.max - 3
    static let maxEvents: Int32 = 256

    let epollFD: Int32
    let wakeFD: Int32
    /// Fires every maintenance interval, so epoll_wait can block without a
    /// timeout: a timeout would arm a kernel hrtimer on every sleep.
    let maintenanceTimerFD: Int32
    let events: UnsafeMutablePointer<aegis_epoll_event>
    private let door: KernelDoor

    init(wakeFD: Int32, listenFD: Int32, maintenanceIntervalMs: Int, door: KernelDoor) throws {
        let epollFD = aegis_epoll_create()
        if epollFD < 0 { throw SystemError(operation: "epoll_create1", code: -epollFD) }
        let timerFD = aegis_timerfd_create_periodic(Int32(maintenanceIntervalMs))
        if timerFD < 0 {
            _ = aegis_close(epollFD)
            throw SystemError(operation: "timerfd_create", code: -timerFD)
        }
        self.epollFD = epollFD
        self.wakeFD = wakeFD
        self.maintenanceTimerFD = timerFD
        self.door = door
        self.events = .allocate(capacity: Int(Self.maxEvents))
        try Self.check(door.epollAdd(epollFD, listenFD, AEGIS_EPOLLIN, token: Self.listenerToken, .listener), "epoll_ctl(listener)")
        try Self.check(door.epollAdd(epollFD, wakeFD, AEGIS_EPOLLIN | AEGIS_EPOLLET, token: Self.wakeToken, .any), "epoll_ctl(eventfd)")
        try Self.check(door.epollAdd(epollFD, timerFD, AEGIS_EPOLLIN, token: Self.timerToken, .any), "epoll_ctl(timerfd)")
    }

    private static func check(_ result: Int32, _ operation: String) throws {
        if result < 0 { throw SystemError(operation: operation, code: -result) }
    }

    /// Ready events in `events`; `timeoutMs` -1 blocks, 0 polls.
    @inline(__always) func wait(timeoutMs: Int32) -> Int32 {
        aegis_epoll_wait(epollFD, events, Self.maxEvents, timeoutMs)
    }

    /// Ready events in `events`, waiting at most `timeoutNs` (> 0): for the
    /// rests shorter than a millisecond that pace a shard stream's walk.
    @inline(__always) func wait(timeoutNs: Int64) -> Int32 {
        aegis_epoll_wait_ns(epollFD, events, Self.maxEvents, timeoutNs)
    }

    func acknowledgeTimer() {
        _ = aegis_timerfd_acknowledge(maintenanceTimerFD)
    }

    @inline(__always) func add(_ fd: Int32, _ interest: UInt32, token: UInt64, _ target: WALFileKind) -> Int32 {
        door.epollAdd(epollFD, fd, interest, token: token, target)
    }

    @inline(__always) func modify(_ fd: Int32, _ interest: UInt32, token: UInt64) -> Int32 {
        door.epollModify(epollFD, fd, interest, token: token, .client)
    }

    @discardableResult
    @inline(__always) func remove(_ fd: Int32, _ target: WALFileKind) -> Int32 {
        door.epollRemove(epollFD, fd, target)
    }

    /// At the reactor's exit; the poller is not used after.
    func close() {
        door.closeSocket(epollFD, .any)
        door.closeSocket(maintenanceTimerFD, .any)
        events.deallocate()
    }
}
