import CSupport
import Glibc

/// A reactor's one door to the kernel. Every system call the write-ahead
/// log makes while serving (open, pwrite, fdatasync, fsync, ftruncate,
/// rename, unlink, close, io_uring set-up, submission and completions) goes
/// through here, and so do its start-up writes (re-layout snapshot, layout
/// file, directory syncs) and its reading back at start (mmap, the truncate
/// of a torn tail). So do the reactor's socket calls (accept4, recv, send,
/// close, epoll_ctl: KernelDoor+Sockets.swift). Each call returns its result
/// with errors as negative errno values, as the C shim does. Not through
/// it: listing or creating directories at start, epoll_wait and the
/// eventfd/timerfd the loop sleeps on (nothing a peer or a disk can fail).
///
/// Why a door: a disk fault (EIO, ENOSPC, a failed fsync, an io_uring that
/// refuses a submission) or a socket fault (a reset, a short write, EMFILE)
/// is rare and must still be handled right, so tests, and later the
/// cluster simulator, inject them here with a `KernelFaultPlan`. Without a plan (production) each call costs one
/// predictable branch on a `let` optional over the plain system call: the
/// door is a concrete struct, inlined, no existential and no allocation.
///
/// How faults are injected (see `KernelFaultPlan` for the rules):
/// - a plain call (open, pwrite, fdatasync...) returns the error without
///   calling the kernel;
/// - an io_uring write or fdatasync is replaced by a timer through the same
///   ring (after the rule's delay, 0 by default) and its completion carries
///   the error, so it arrives and wakes the reactor as a real one would;
/// - a submission fails without calling io_uring_enter, which leaves the
///   entries queued, exactly as a real failed io_uring_enter does.
///
/// Confined to its reactor's thread (the reactor and its `WALWriter` share
/// one plan, whose rule counters are not synchronised).
struct KernelDoor {
    /// nil unless a test armed faults (`AEGISKV_WAL_FAULTS`).
    let faults: KernelFaultPlan?

    static var production: KernelDoor { KernelDoor(faults: nil) }

    /// The injected error for this call, or 0.
    @inline(__always)
    func injected(_ call: KernelCall, _ file: WALFileKind) -> Int32 {
        guard let faults else { return 0 }
        return faults.error(for: call, file)
    }

    @inline(__always)
    static func result(_ value: Int32) -> Int32 { value < 0 ? -errno : value }

    // MARK: - Files

    func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0, file: WALFileKind) -> Int32 {
        let fault = injected(.open, file)
        if fault != 0 { return -fault }
        return Self.result(Glibc.open(path, flags, mode))
    }

    /// Bytes written, or -errno.
    @inline(__always)
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawPointer?, _ count: Int, _ offset: UInt64, file: WALFileKind) -> Int {
        let fault = injected(.write, file)
        if fault != 0 { return -Int(fault) }
        let written = Glibc.pwrite(fd, bytes, count, off_t(offset))
        return written < 0 ? -Int(errno) : written
    }

    func fdatasync(_ fd: Int32, file: WALFileKind) -> Int32 {
        let fault = injected(.fdatasync, file)
        if fault != 0 { return -fault }
        return Self.result(Glibc.fdatasync(fd))
    }

    func fsync(_ fd: Int32, file: WALFileKind) -> Int32 {
        let fault = injected(.fsync, file)
        if fault != 0 { return -fault }
        return Self.result(Glibc.fsync(fd))
    }

    func ftruncate(_ fd: Int32, _ length: UInt64, file: WALFileKind) -> Int32 {
        let fault = injected(.ftruncate, file)
        if fault != 0 { return -fault }
        return Self.result(Glibc.ftruncate(fd, off_t(length)))
    }

    func rename(_ from: String, _ to: String, file: WALFileKind) -> Int32 {
        let fault = injected(.rename, file)
        if fault != 0 { return -fault }
        return Self.result(Glibc.rename(from, to))
    }

    func unlink(_ path: String, file: WALFileKind) -> Int32 {
        let fault = injected(.unlink, file)
        if fault != 0 { return -fault }
        return Self.result(Glibc.unlink(path))
    }

    /// Never faulted: a failed close of a file already synced (or given up) changes nothing.
    func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// The size of a file, or 0 when it cannot be read.
    func fileSize(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    /// Truncates a file by name (the torn tail of the log at start).
    func truncate(_ path: String, _ length: UInt64, file: WALFileKind) -> Int32 {
        let fault = injected(.truncate, file)
        if fault != 0 { return -fault }
        return Self.result(Glibc.truncate(path, off_t(length)))
    }

    /// Maps `size` bytes of `fd` read-only (reading the log back at start).
    func mapReadOnly(_ fd: Int32, size: Int, file: WALFileKind) -> Result<UnsafeMutableRawPointer, SystemError> {
        let fault = injected(.mmap, file)
        if fault != 0 { return .failure(SystemError(operation: "mmap", code: fault)) }
        let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else { return .failure(SystemError(operation: "mmap", code: errno)) }
        return .success(mapped)
    }

    /// fsync of a directory makes the names created or removed in it durable.
    func syncDirectory(_ path: String) -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, file: .directory)
        if fd < 0 { return fd }
        defer { close(fd) }
        return fsync(fd, file: .directory)
    }

    // MARK: - io_uring

    /// The ring, or -errno.
    func uringCreate(entries: UInt32) -> Result<OpaquePointer, SystemError> {
        let fault = injected(.uringSetup, .any)
        if fault != 0 { return .failure(SystemError(operation: "io_uring_setup", code: fault)) }
        var error: Int32 = 0
        guard let ring = aegis_uring_create(entries, &error) else { return .failure(SystemError(operation: "io_uring_setup", code: -error)) }
        return .success(ring)
    }

    func uringDestroy(_ ring: OpaquePointer) { aegis_uring_destroy(ring) }

    /// The eventfd completions signal (non-blocking, close-on-exec), or -errno.
    func eventFDCreate() -> Int32 { aegis_eventfd_create() }

    /// Wakes the reactor as a completion would (for operations failed without one).
    func signal(_ eventFD: Int32) { _ = aegis_eventfd_signal(eventFD) }

    func uringRegisterEventFD(_ ring: OpaquePointer, _ eventFD: Int32) -> Int32 {
        aegis_uring_register_eventfd(ring, eventFD)
    }

    /// Queues a write; 0, or -EBUSY when the submission queue is full.
    @inline(__always)
    func prepareWrite(_ ring: OpaquePointer, _ fd: Int32, _ bytes: UnsafeRawPointer?, _ count: UInt32, _ offset: UInt64,
                      userData: UInt64, flags: UInt8, file: WALFileKind) -> Int32 {
        if let faults, case let (error, delay) = faults.completionFault(for: .write, file), error != 0 {
            return faults.prepareFailure(ring, error: error, delayMs: delay, userData: userData, flags: flags)
        }
        return aegis_uring_prep_write(ring, fd, bytes, count, offset, userData, flags)
    }

    /// Queues an fdatasync; 0, or -EBUSY when the submission queue is full.
    @inline(__always)
    func prepareFdatasync(_ ring: OpaquePointer, _ fd: Int32, userData: UInt64, flags: UInt8, file: WALFileKind) -> Int32 {
        if let faults, case let (error, delay) = faults.completionFault(for: .fdatasync, file), error != 0 {
            return faults.prepareFailure(ring, error: error, delayMs: delay, userData: userData, flags: flags)
        }
        return aegis_uring_prep_fdatasync(ring, fd, userData, flags)
    }

    /// The node-wide flush (WALNodeFlusher): a syncfs of the file system
    /// holding `fd`, on the flusher's own thread; 0 or -errno. A faulted
    /// one sleeps the rule's delay first, as a slow then failing disk
    /// would: that thread exists to block in this call.
    func nodeFlush(_ fd: Int32) -> Int32 {
        if let faults, case let (error, delay) = faults.completionFault(for: .syncfs, .flush), error != 0 {
            if delay > 0 { usleep(useconds_t(min(delay, 600_000)) * 1000) }
            return -error
        }
        return aegis_syncfs(fd)
    }

    /// Hands the queued entries to the kernel: the count taken, or -errno.
    /// `file` says what the queued entries write (for fault rules).
    @inline(__always)
    func submit(_ ring: OpaquePointer, file: WALFileKind) -> Int32 {
        let fault = injected(.submit, file)
        if fault != 0 { return -fault }
        return aegis_uring_submit(ring)
    }

    /// After a failed or partial submission: the user data of every entry
    /// the kernel did not take, each now a harmless no-op (see uring.c).
    /// Returns how many were withdrawn. Called after every submission: no
    /// allocation, and a scan of nothing when the kernel took everything.
    @inline(__always)
    func withdrawUnsubmitted(_ ring: OpaquePointer, into userData: inout [UInt64]) -> Int {
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 64) { scratch in
            let count = Int(aegis_uring_withdraw_unsubmitted(ring, scratch.baseAddress, Int32(scratch.count)))
            for index in 0..<min(count, scratch.count) {
                userData.append(scratch[index])
                faults?.forgetFailure(userData: scratch[index])
            }
            return count
        }
    }

    /// Pops one completion: true and its user data and result, or false when none is ready.
    @inline(__always)
    func popCompletion(_ ring: OpaquePointer, userData: inout UInt64, result: inout Int32) -> Bool {
        guard aegis_uring_pop_completion(ring, &userData, &result) == 1 else { return false }
        if let faults { faults.rewriteCompletion(userData: userData, result: &result) }
        return true
    }
}
