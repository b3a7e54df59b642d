import CSupport
import Glibc

/// The reactor's socket and epoll calls. A fault rule for one of them
/// (`accept`, `read`, `send`, `close`, `epoll_ctl`) makes the call return
/// that error instead of reaching the kernel, except for close, which
/// still closes (Linux frees the descriptor even when close reports an
/// error, so skipping it would leak one). `SHORT` makes a read or send move
/// at most half the bytes asked for. Without a plan each call is the plain
/// C shim call behind one branch on a `let` optional.
extension KernelDoor {
    /// A new non-blocking client socket, or -errno.
    @inline(__always)
    func accept(_ listenFD: Int32, peer: inout ClientAddress) -> Int32 {
        if faults != nil {
            let fault = injected(.accept, .listener)
            if fault != 0 { return -fault }
        }
        var bytes: (UInt64, UInt64) = (0, 0)
        let fd = withUnsafeMutableBytes(of: &bytes) { aegis_tcp_accept_from(listenFD, $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        peer = ClientAddress(networkOrder: bytes)
        return fd
    }

    /// What a client read or send may move under the fault plan: `count`,
    /// half of it for a short transfer, or -errno for an injected error.
    private func faultedTransferCount(_ call: KernelCall, _ count: Int) -> Int {
        let fault = injected(call, .client)
        if fault == KernelFaultPlan.shortTransfer { return max(count / 2, 1) }
        return fault != 0 ? -Int(fault) : count
    }

    /// Bytes received (0 at end of stream), or -errno.
    @inline(__always)
    func receive(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
        let count = faults == nil ? count : faultedTransferCount(.read, count)
        return count < 0 ? count : aegis_socket_receive(fd, buffer, count)
    }

    /// Bytes sent, or -errno.
    @inline(__always)
    func send(_ fd: Int32, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int {
        let count = faults == nil ? count : faultedTransferCount(.send, count)
        return count < 0 ? count : aegis_socket_send(fd, bytes, count)
    }

    /// Closes a socket (or the reactor's own descriptors); 0 or -errno.
    @discardableResult
    func closeSocket(_ fd: Int32, _ target: WALFileKind) -> Int32 {
        let closed = aegis_close(fd)
        if faults != nil {
            let fault = injected(.close, target)
            if fault != 0 { return -fault }
        }
        return closed
    }

    @inline(__always)
    func epollAdd(_ epollFD: Int32, _ fd: Int32, _ events: UInt32, token: UInt64, _ target: WALFileKind) -> Int32 {
        if faults != nil {
            let fault = injected(.epollCtl, target)
            if fault != 0 { return -fault }
        }
        return aegis_epoll_add(epollFD, fd, events, token)
    }

    @inline(__always)
    func epollModify(_ epollFD: Int32, _ fd: Int32, _ events: UInt32, token: UInt64, _ target: WALFileKind) -> Int32 {
        if faults != nil {
            let fault = injected(.epollCtl, target)
            if fault != 0 { return -fault }
        }
        return aegis_epoll_modify(epollFD, fd, events, token)
    }

    @discardableResult
    @inline(__always)
    func epollRemove(_ epollFD: Int32, _ fd: Int32, _ target: WALFileKind) -> Int32 {
        if faults != nil {
            let fault = injected(.epollCtl, target)
            if fault != 0 { return -fault }
        }
        return aegis_epoll_remove(epollFD, fd)
    }
}
