import CSupport
import Glibc
import Logging
import Synchronization

/// The one device cache flush of `wal_mode: fsync` for the whole node
/// (issue 18): reactors write their batches into prepared segments as in
/// `write` mode and hand them over once written; this thread issues one
/// syncfs that makes all of them durable, then tells each reactor which of
/// its batches are.
///
/// Why one syncfs covers every reactor's batches (docs/durability.md has
/// the details and the limits): syncfs writes back every page of the file
/// system that is dirty when it starts, waits for that write-back (and for
/// any already under way), then has the file system commit and flush the
/// device's volatile cache (ext4_sync_fs: the journal commit, or
/// blkdev_issue_flush when the commit sends none; xfs_fs_sync_fs: a log
/// force). A batch handed over before the syncfs began was already in the
/// page cache, so it is covered. It persists no metadata of ours beyond
/// what the file system commits anyway: valid only for prepared segments
/// (blocks allocated and written, size final), which a reactor checks for
/// each batch. Since Linux 5.8 syncfs reports write-back errors of the
/// whole file system since its last call on this descriptor (errseq), so a
/// failed write-back of a batch fails it.
///
/// The syncfs target is `<wal_dir>/flush`, a file this flusher opens and
/// owns: never a segment, which its reactor may close (rotation, a cut-off
/// after a failure) while a flush runs, and whose descriptor number could
/// then belong to another file (even on another file system).
///
/// A failed flush fails every batch handed over until it is published,
/// and reactors fail every batch submitted before then (`failedFlushes`):
/// its syncfs wrote back every dirty page, so the error it consumed may
/// have been any of theirs, and the next syncfs would not report it again.
///
/// Adaptive batching: the thread flushes as soon as some batch is written
/// and no flush is running, so at low load a write waits for one flush and
/// no timer, and under load every batch handed over while one flush runs
/// shares the next one (the natural group commit). A hand-over signals the
/// condition variable only when the thread sleeps on it: while it flushes,
/// a hand-over costs one uncontended lock and no system call.
///
/// Threads: reactors call `noteWritten`, `attach`/`detach` and
/// `noteOwnFlush`; readers (INFO, /metrics) call `stats`. All of that state
/// is under `lock`; each reactor reads its verdicts from its `Slot`'s
/// atomics without it. `@unchecked Sendable`: the pthread mutex and
/// condition variable guard everything mutable that is not an atomic.
final class WALNodeFlusher: @unchecked Sendable {
    /// What the flusher tells one reactor; sequences are the reactor's batch numbers.
    final class Slot: Sendable {
        /// Every batch up to this one that asked for a node flush is durable,
        /// unless `failedThrough` covers it.
        let durableThrough = Atomic<UInt64>(0)
        /// A node flush covering batches up to this one failed.
        let failedThrough = Atomic<UInt64>(0)
    }

    let slots: [Slot]
    /// Two or more reactors share each flush. With one there is no one to
    /// share it with, and a syncfs costs about twice what an fdatasync of a
    /// prepared segment does (durability.md, "The node flush as merged"),
    /// so that reactor syncs each batch itself and this only counts its flushes.
    let sharesFlushes: Bool
    /// Node flushes that failed so far; raised before the failure's verdicts
    /// and any later flush's are published (see the type's comment).
    let failedFlushes = Atomic<UInt64>(0)
    let path: String
    private let logger: Logger
    private let door: KernelDoor
    private let fd: Int32
    /// The device of the wal directory: only logs on it are covered by a flush of it.
    private let device: UInt64

    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let workArrived = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Under `lock`:
    private var handedOver: [UInt64]
    private var claimed: [UInt64]
    private var recordsWaiting: [Int]
    private var wakeFDs: [Int32]
    private var failureReasons: [String]
    private var stopping = false
    /// The thread waits on `workArrived`: only then does a hand-over signal it.
    private var sleeping = false
    private var published = WALFlushStats()
    private var thread: pthread_t?

    /// Opens (creating) `<walDirectory>/flush`; the thread starts with `start()`.
    init(walDirectory: String, reactorCount: Int, logger: Logger, door: KernelDoor) throws(WALError) {
        path = walDirectory + "/flush"
        self.logger = logger
        self.door = door
        let fd = door.open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0o640, file: .flush)
        if fd < 0 { throw .system("open", path, -fd) }
        var info = stat()
        if fstat(fd, &info) != 0 {
            let code = errno
            door.close(fd)
            throw .system("fstat", path, code)
        }
        self.fd = fd
        device = UInt64(info.st_dev)
        slots = (0..<reactorCount).map { _ in Slot() }
        sharesFlushes = reactorCount >= 2
        handedOver = Array(repeating: 0, count: reactorCount)
        claimed = Array(repeating: 0, count: reactorCount)
        recordsWaiting = Array(repeating: 0, count: reactorCount)
        wakeFDs = Array(repeating: -1, count: reactorCount)
        failureReasons = Array(repeating: "", count: reactorCount)
        pthread_mutex_init(lock, nil)
        pthread_cond_init(workArrived, nil)
    }

    deinit {
        stop()
        door.close(fd)
        pthread_cond_destroy(workArrived)
        pthread_mutex_destroy(lock)
        workArrived.deallocate()
        lock.deallocate()
    }

    func start() throws {
        guard sharesFlushes else { return }
        thread = try Node.startThread { [self] in
            _ = aegis_set_current_thread_name("aegis-wal-flush")
            run()
        }
    }

    /// Finishes the flushes asked for, then ends the thread. After the
    /// reactors have stopped: a drain waits for their batches' flushes.
    func stop() {
        guard let thread else { return }
        withLock {
            stopping = true
            pthread_cond_signal(workArrived)
        }
        pthread_join(thread, nil)
        self.thread = nil
    }

    /// A reactor's log joins: its eventfd is woken after each flush that
    /// covers its batches. False when the node has one reactor, or when the
    /// directory is on another device, which a flush of this one would not
    /// cover (that log then syncs each batch itself).
    func attach(reactor: Int, eventFD: Int32, directoryPath: String) -> Bool {
        guard sharesFlushes else { return false }
        var info = stat()
        guard stat(directoryPath, &info) == 0, UInt64(info.st_dev) == device else { return false }
        withLock { wakeFDs[reactor] = eventFD }
        return true
    }

    /// Before the reactor closes its eventfd: a flush must not write to a
    /// descriptor number that may belong to another file by then.
    func detach(reactor: Int) {
        withLock { wakeFDs[reactor] = -1 }
    }

    /// The reactor's batches up to `through` are written (in the page
    /// cache), in order (every earlier one asking for a flush is too);
    /// `records` are the log records of the batches newly covered.
    func noteWritten(reactor: Int, through: UInt64, records: Int) {
        withLock {
            guard through > handedOver[reactor] else { return }
            handedOver[reactor] = through
            recordsWaiting[reactor] += records
            if sleeping { pthread_cond_signal(workArrived) }
        }
    }

    /// A batch that synced itself (a segment that is not prepared, or its
    /// first batch, or a log on another device): one device flush too.
    func noteOwnFlush(records: Int, latencyNs: Int64) {
        withLock {
            published.note(records: records, latencyNs: latencyNs, failed: false)
            published.ownFlushes += 1
        }
    }

    /// Why the flush that covered the reactor's failed batches failed.
    func failureReason(reactor: Int) -> String {
        withLock { failureReasons[reactor] }
    }

    func stats() -> WALFlushStats {
        withLock { published.asOf(nowNs: aegis_monotonic_ns()) }
    }

    private func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return body()
    }

    private var hasWork: Bool { handedOver != claimed }

    private func run() {
        pthread_mutex_lock(lock)
        while true {
            while !stopping && !hasWork {
                sleeping = true
                pthread_cond_wait(workArrived, lock)
                sleeping = false
            }
            if !hasWork { break }
            let targets = handedOver
            let previous = claimed
            let records = recordsWaiting.reduce(0, +)
            claimed = targets
            for index in recordsWaiting.indices { recordsWaiting[index] = 0 }
            pthread_mutex_unlock(lock)
            let started = aegis_monotonic_ns()
            let result = door.nodeFlush(fd)
            let elapsed = aegis_monotonic_ns() - started
            let reason = result == 0 ? "" : "syncfs of \(path) (the node's flush for every reactor's log) failed: \(SystemError(operation: "syncfs", code: -result))"
            pthread_mutex_lock(lock)
            // Counted before any reactor can see the verdict, so a reply
            // that went out is already in the figures INFO reads.
            published.note(records: records, latencyNs: elapsed, failed: result != 0)
            if result == 0 {
                for reactor in slots.indices where targets[reactor] > previous[reactor] {
                    slots[reactor].durableThrough.store(targets[reactor], ordering: .releasing)
                    if wakeFDs[reactor] >= 0 { _ = aegis_eventfd_signal(wakeFDs[reactor]) }
                }
            } else {
                // Every batch handed over by now fails, not only the ones
                // this flush covered, and every reactor hears of it: each
                // may hold batches submitted before it (see the type's comment).
                failedFlushes.add(1, ordering: .releasing)
                let failedReactors = slots.indices.filter { handedOver[$0] > previous[$0] }
                let failedRecords = records + recordsWaiting.reduce(0, +)
                claimed = handedOver
                for index in recordsWaiting.indices { recordsWaiting[index] = 0 }
                for reactor in slots.indices {
                    failureReasons[reactor] = reason
                    slots[reactor].failedThrough.store(handedOver[reactor], ordering: .releasing)
                    if wakeFDs[reactor] >= 0 { _ = aegis_eventfd_signal(wakeFDs[reactor]) }
                }
                // Outside the lock: reactors handing over batches must not wait for the log output.
                pthread_mutex_unlock(lock)
                logger.error("write-ahead log flush failed: every batch handed over until now fails, on every reactor", metadata: [
                    "file": "\(path)", "error": "\(SystemError(operation: "syncfs", code: -result))",
                    "reactors": "\(failedReactors.map(String.init).joined(separator: ","))", "records": "\(failedRecords)",
                ])
                pthread_mutex_lock(lock)
            }
        }
        pthread_mutex_unlock(lock)
    }
}

/// The node's device flushes in `fsync` mode (INFO persistence, /metrics):
/// the node flushes and the batches that synced themselves.
public struct WALFlushStats: Sendable, Equatable {
    /// Upper bounds of the records-per-flush buckets (a last, +Inf bucket follows).
    public static let recordBounds: [Int] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024]
    /// Latency buckets: the bounds the command latency histograms use.
    public static var latencyBoundsNs: [Int64] { CommandMetricsLayout.bucketBoundsNs }

    public var flushes = 0
    /// Of `flushes`, the batches' own fdatasyncs (not the node flush).
    public var ownFlushes = 0
    public var failures = 0
    public var records = 0
    /// Not cumulative; one more than the bounds.
    public var recordBuckets = [Int](repeating: 0, count: WALFlushStats.recordBounds.count + 1)
    public var latencyBuckets = [Int](repeating: 0, count: CommandMetricsLayout.bucketCount)
    public var latencySumNs: Int64 = 0
    /// Flushes, and the time flushes ran, in the last whole second: at
    /// about 100% busy the disk bounds durable writes, well below it the
    /// CPU does. Flushes in flight together (a reactor's own, two batches
    /// deep, or one beside a node flush) each count their whole time, so
    /// the sum can pass a second; readers cap it.
    public var flushesLastSecond = 0
    public var flushBusyNsLastSecond: Int64 = 0

    public init() {}

    private var second: Int64 = 0
    private var flushesThisSecond = 0
    private var busyNsThisSecond: Int64 = 0

    mutating func note(records: Int, latencyNs: Int64, failed: Bool) {
        moveToSecond(aegis_monotonic_ns() / 1_000_000_000)
        flushesThisSecond += 1
        busyNsThisSecond += latencyNs
        flushes += 1
        if failed { failures += 1 }
        self.records += records
        recordBuckets[Self.recordBounds.firstIndex { records <= $0 } ?? Self.recordBounds.count] += 1
        latencyBuckets[Self.latencyBoundsNs.firstIndex { latencyNs <= $0 } ?? Self.latencyBoundsNs.count] += 1
        latencySumNs += latencyNs
    }

    private mutating func moveToSecond(_ now: Int64) {
        guard now != second else { return }
        let finished = now == second + 1
        flushesLastSecond = finished ? flushesThisSecond : 0
        flushBusyNsLastSecond = finished ? busyNsThisSecond : 0
        second = now
        flushesThisSecond = 0
        busyNsThisSecond = 0
    }

    /// The figures as of now: the last-second ones move on when no flush
    /// came to move them.
    func asOf(nowNs: Int64) -> WALFlushStats {
        var copy = self
        copy.moveToSecond(nowNs / 1_000_000_000)
        return copy
    }
}
