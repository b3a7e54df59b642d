import CSupport
import Glibc

/// The system calls a fault rule can name (`KernelFaultPlan`).
enum KernelCall: String, CaseIterable {
    case open, write, fdatasync, fsync, ftruncate, rename, unlink, submit
    /// The node-wide flush (WALNodeFlusher), the only syncfs.
    case syncfs
    case uringSetup = "uring_setup"
    /// Mapping a log file to read it back at start (WALRecovery), and
    /// cutting off its torn tail.
    case mmap, truncate
    /// The reactor's socket calls: accept4 on its listener, recv and send
    /// on client connections, closing them, and changing their epoll interest.
    case accept, read, send, close
    case epollCtl = "epoll_ctl"
}

/// What a call is about, so a rule can fail the segments' fdatasync and
/// leave the prepared segment's alone, or fail client reads and not the
/// listener's accepts.
enum WALFileKind: String, CaseIterable {
    case segment, prepared, snapshot, directory
    /// `<wal_dir>/layout` (start-up only).
    case layout
    /// `<wal_dir>/flush`: the file of the node-wide syncfs (WALNodeFlusher).
    case flush
    /// A client connection's socket.
    case client
    /// The reactor's listening socket.
    case listener
    /// Calls about no file of the log (io_uring set-up).
    case any
}

/// Faults a test asks the kernel door to inject, parsed from the
/// environment variables `AEGISKV_KERNEL_FAULTS` and (its older name, for
/// the log's calls) `AEGISKV_WAL_FAULTS` at start; each reactor reads them
/// and counts calls on its own. Rules are separated by `;`:
///
///     <call>[.<file>]=<ERRNO>[@<first>][x<count>][+<delay ms>]
///
/// - `call`: open, write (pwrite or an io_uring write), fdatasync (direct
///   or through io_uring), syncfs (the node-wide flush: `syncfs.flush`),
///   fsync, ftruncate, rename, unlink, submit
///   (io_uring_enter), uring_setup, mmap and truncate (reading the log
///   back at start); accept, read, send, close, epoll_ctl (the reactor's
///   sockets);
/// - `file`: segment, prepared, snapshot, directory, layout, flush (the
///   node-wide flush, counted by the flusher thread on its own), client,
///   listener (default: any);
/// - `ERRNO`: EIO, ENOSPC, EDQUOT, EROFS, EAGAIN, ENOMEM, EINTR, EBUSY,
///   EBADF, ECONNRESET, EPIPE, EMFILE, ENFILE, ENOBUFS, ECONNABORTED, or
///   SHORT: a read or send that moves at most half the bytes asked for
///   (at least one), as a full socket buffer makes it;
/// - close still closes the descriptor when it reports an error, as
///   Linux's close does;
/// - `@first`: the first matching call that fails, counted from 1 (default 1);
/// - `xcount`: how many calls from there fail (default 1; x0: every one);
/// - `+delay`: for io_uring writes and fdatasyncs, and the node-wide
///   flush (whose thread sleeps), the error arrives after
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

    static let environmentVariable = "AEGISKV_KERNEL_FAULTS"
    static let walEnvironmentVariable = "AEGISKV_WAL_FAULTS"
    /// Not an errno (those are positive): a short transfer instead of an error.
    static let shortTransfer: Int32 = -1
    static let errorNames: [String: Int32] = [
        "EIO": EIO, "ENOSPC": ENOSPC, "EDQUOT": EDQUOT, "EROFS": EROFS, "EAGAIN": EAGAIN,
        "ENOMEM": ENOMEM, "EINTR": EINTR, "EBUSY": EBUSY, "EBADF": EBADF,
        "ECONNRESET": ECONNRESET, "EPIPE": EPIPE, "EMFILE": EMFILE, "ENFILE": ENFILE,
        "ENOBUFS": ENOBUFS, "ECONNABORTED": ECONNABORTED, "SHORT": shortTransfer,
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
        let texts = [environmentVariable, walEnvironmentVariable].compactMap { name -> String? in
            guard let raw = getenv(name), raw.pointee != 0 else { return nil }
            return String(cString: raw)
        }
        if texts.isEmpty { return nil }
        return try parse(texts.joined(separator: ";"))
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
        // Only a socket transfer can be short: every other call's result is an error or success.
        if error == shortTransfer && call != .read && call != .send { return nil }
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
