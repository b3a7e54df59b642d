import CSupport
import Glibc

/// The write-ahead log's one door to the kernel: every system call the log
/// makes while serving (open, pwrite, fdatasync, fsync, ftruncate, rename,
/// unlink, close, io_uring set-up, submission and completions) goes through
/// here, and so do its start-up writes (re-layout snapshot, layout file,
/// directory syncs). Each call returns its result with errors as negative
/// errno values, as the C shim does. Not yet through it: reading the log
/// back at start (WALRecovery's mmap and its truncate of a torn tail) and
/// listing or creating directories.
///
/// Why a door: a disk fault (EIO, ENOSPC, a failed fsync, an io_uring that
/// refuses a submission) is rare on a real disk and must still be handled
/// right, so tests, and later the cluster simulator, inject them here with a
/// `KernelFaultPlan`. Without a plan (production) each call costs one
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
/// Confined to its reactor's thread, like the `WALWriter` that owns it.
struct KernelDoor {
    /// nil unless a test armed faults (`AEGISKV_WAL_FAULTS`).
    let faults: KernelFaultPlan?

    static var production: KernelDoor { KernelDoor(faults: nil) }

    /// The injected error for this call, or 0.
    @inline(__always)
    private func injected(_ call: KernelCall, _ file: WALFileKind) -> Int32 {
        guard let faults else { return 0 }
        return faults.error(for: call, file)
    }

    @inline(__always)
    private static func result(_ value: Int32) -> Int32 { value < 0 ? -errno : value }

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

/// The system calls a fault rule can name (`KernelFaultPlan`).
enum KernelCall: String, CaseIterable {
    case open, write, fdatasync, fsync, ftruncate, rename, unlink, submit
    case uringSetup = "uring_setup"
}

/// Which of the log's files a call is about, so a rule can fail the
/// segments' fdatasync and leave the prepared segment's alone.
enum WALFileKind: String, CaseIterable {
    case segment, prepared, snapshot, directory
    /// `<wal_dir>/layout` (start-up only).
    case layout
    /// Calls about no file of the log (io_uring set-up).
    case any
}

/// Faults a test asks the kernel door to inject, parsed from the
/// environment variable `AEGISKV_WAL_FAULTS` at start (read by every
/// reactor; each counts calls on its own). Rules are separated by `;`:
///
///     <call>[.<file>]=<ERRNO>[@<first>][x<count>][+<delay ms>]
///
/// - `call`: open, write (pwrite or an io_uring write), fdatasync (direct
///   or through io_uring), fsync, ftruncate, rename, unlink, submit
///   (io_uring_enter), uring_setup;
/// - `file`: segment, prepared, snapshot, directory, layout (default: any file);
/// - `ERRNO`: EIO, ENOSPC, EDQUOT, EROFS, EAGAIN, ENOMEM, EINTR, EBUSY, EBADF;
/// - `@first`: the first matching call that fails, counted from 1 (default 1);
/// - `xcount`: how many calls from there fail (default 1; x0: every one);
/// - `+delay`: for io_uring writes and fdatasyncs, the error arrives after
///   this many milliseconds (a slow, then failing disk).
///
/// Example: `fdatasync.segment=EIO@11+2000` fails the 11th fdatasync of a
/// segment, 2 s after it was submitted.
final class KernelFaultPlan {
    struct Rule {
        let call: KernelCall
        let file: WALFileKind?
        let error: Int32
        let first: Int
        let count: Int
        let delayMs: Int
        var seen = 0
    }

    static let environmentVariable = "AEGISKV_WAL_FAULTS"
    static let errorNames: [String: Int32] = [
        "EIO": EIO, "ENOSPC": ENOSPC, "EDQUOT": EDQUOT, "EROFS": EROFS, "EAGAIN": EAGAIN,
        "ENOMEM": ENOMEM, "EINTR": EINTR, "EBUSY": EBUSY, "EBADF": EBADF,
    ]

    private(set) var rules: [Rule]
    /// The source text, for the start-up warning.
    let specification: String
    /// io_uring operations replaced by a timer: their user data and the error their completion carries.
    private var failedCompletions: [(userData: UInt64, error: Int32)] = []
    /// Timer durations for queued replacements; the kernel reads them at
    /// submission, and no more than 64 entries are ever queued (the ring's size).
    private let timerSlots = UnsafeMutablePointer<Int64>.allocate(capacity: 2 * 64)
    private var nextTimerSlot = 0
    /// How many faults were injected (tests read it from the log).
    private(set) var injectedCount = 0

    init(rules: [Rule], specification: String) {
        self.rules = rules
        self.specification = specification
        timerSlots.initialize(repeating: 0, count: 2 * 64)
    }

    deinit { timerSlots.deallocate() }

    /// The plan in the environment, nil when none is set; a malformed one is an error.
    static func fromEnvironment() throws(WALError) -> KernelFaultPlan? {
        guard let raw = getenv(environmentVariable), raw.pointee != 0 else { return nil }
        return try parse(String(cString: raw))
    }

    static func parse(_ text: String) throws(WALError) -> KernelFaultPlan {
        var rules: [Rule] = []
        for part in text.split(separator: ";") {
            let rule = part.trimmingSpaces()
            if rule.isEmpty { continue }
            guard let parsed = parseRule(rule) else { throw .faultPlan(rule: rule) }
            rules.append(parsed)
        }
        return KernelFaultPlan(rules: rules, specification: text)
    }

    private static func parseRule(_ rule: String) -> Rule? {
        let sides = rule.split(separator: "=", maxSplits: 1).map(String.init)
        guard sides.count == 2 else { return nil }
        let target = sides[0].split(separator: ".", maxSplits: 1).map(String.init)
        guard let call = KernelCall(rawValue: target[0]) else { return nil }
        var file: WALFileKind?
        if target.count == 2 {
            guard let kind = WALFileKind(rawValue: target[1]), kind != .any else { return nil }
            file = kind
        }
        // ERRNO, then the optional @first, xcount and +delay in that order.
        var rest = Substring(sides[1])
        let name = rest.prefix { $0.isLetter }
        rest = rest.dropFirst(name.count)
        guard let error = errorNames[String(name)] else { return nil }
        func number(after marker: Character) -> Int?? {
            guard rest.first == marker else { return .some(nil) }
            rest = rest.dropFirst()
            let digits = rest.prefix { $0.isNumber }
            rest = rest.dropFirst(digits.count)
            guard let value = Int(digits) else { return nil }
            return .some(value)
        }
        guard let first = number(after: "@"), let count = number(after: "x"), let delay = number(after: "+"), rest.isEmpty else { return nil }
        guard (first ?? 1) >= 1, (count ?? 1) >= 0, (delay ?? 0) >= 0, (delay ?? 0) <= 600_000 else { return nil }
        return Rule(call: call, file: file, error: error, first: first ?? 1, count: count ?? 1, delayMs: delay ?? 0)
    }

    /// Counts the call against every rule that matches it; the error of the first rule that fires, or 0.
    func error(for call: KernelCall, _ file: WALFileKind) -> Int32 {
        completionFault(for: call, file).error
    }

    func completionFault(for call: KernelCall, _ file: WALFileKind) -> (error: Int32, delayMs: Int) {
        var fault: (error: Int32, delayMs: Int) = (0, 0)
        for index in rules.indices where rules[index].call == call && (rules[index].file == nil || rules[index].file == file) {
            rules[index].seen += 1
            let rule = rules[index]
            let fires = rule.seen >= rule.first && (rule.count == 0 || rule.seen < rule.first + rule.count)
            if fires && fault.error == 0 {
                fault = (rule.error, rule.delayMs)
                injectedCount += 1
            }
        }
        return fault
    }

    /// Queues a timer in place of the operation; its completion will carry `error`.
    func prepareFailure(_ ring: OpaquePointer, error: Int32, delayMs: Int, userData: UInt64, flags: UInt8) -> Int32 {
        let slot = timerSlots + 2 * nextTimerSlot
        nextTimerSlot = (nextTimerSlot + 1) % 64
        slot[0] = Int64(delayMs / 1000)
        slot[1] = Int64(delayMs % 1000) * 1_000_000
        let prepared = aegis_uring_prep_timeout(ring, slot, userData, flags)
        if prepared == 0 { failedCompletions.append((userData, error)) }
        return prepared
    }

    /// A replaced operation that was withdrawn before the kernel saw it completes never.
    func forgetFailure(userData: UInt64) {
        if let index = failedCompletions.firstIndex(where: { $0.userData == userData }) { failedCompletions.remove(at: index) }
    }

    func rewriteCompletion(userData: UInt64, result: inout Int32) {
        guard let index = failedCompletions.firstIndex(where: { $0.userData == userData }) else { return }
        result = -failedCompletions[index].error
        failedCompletions.remove(at: index)
    }
}

private extension Substring {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
