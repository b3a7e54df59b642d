import AegisConfig
import AegisProtocol
import AegisStore
import CSupport
import Glibc
import Logging

/// One reactor's write-ahead log on disk: group commit through its own
/// io_uring, segment rotation, snapshot files, and disk-fault handling.
///
/// Confined to its reactor's thread, like everything the reactor owns.
///
/// Group commit, pipelined: records of the current loop iteration collect
/// in `filling`; `submit()` hands them to the kernel as one batch, a write
/// at the next offset of the segment, while the next records keep filling.
/// In `fsync` mode a batch into a prepared segment is only written (as in
/// `write` mode) and, once its write completed, becomes durable with the
/// node's next flush (`WALNodeFlusher`: one syncfs for every reactor); any
/// other batch (a segment's first, a plain segment's, one past the
/// prepared size) is followed by its own fdatasync. Up to
/// `maxBatchesInFlight` batches are in flight at once, so a client whose
/// write missed one batch waits for one fdatasync, not for the one in
/// progress and then its own. Batches are reported durable strictly in
/// submission order, each after its own write and sync (or node flush): so a reply held for
/// batch n goes only when n and everything before it is on disk. The
/// reactor never waits for the disk: completions arrive through an eventfd
/// in its epoll set.
///
/// Invariants (asserted where cheap):
/// - `inFlight` is in submission order, and their byte ranges follow each
///   other in the segment files without gaps.
/// - A failed batch and every batch after it are cut off their files
///   before anything else is written, so a segment never holds a hole or a
///   partial record except after a crash.
/// - A batch left to the node flush is handed to it only once its
///   write and every earlier such batch's completed
///   (`handedOverThrough` grows over a prefix), so a flush's verdict
///   "durable through n" holds for each of them; a failed flush's verdict
///   wins over a later success, and fails every batch submitted before it
///   was published (`applyNodeFlushVerdicts`).
/// - Segment numbers have no gaps (recovery refuses one as a removed file).
/// - A snapshot becomes the log only after every batch whose writes it may
///   hold is durable (`snapshotBarrier`).
/// - Every operation queued on the ring completes, or fails when the
///   kernel does not take it (`submitQueued`).
final class WALWriter {
    enum Event {
        /// The oldest batch in flight reached the disk (or the page cache in `write` mode).
        case batchDurable
        /// The oldest batch in flight failed (or follows one that failed); its writes must not be acknowledged.
        case batchFailed(String)
        /// The snapshot's next chunk may be written.
        case snapshotChunkWritten
        case snapshotFailed(String)
        /// The snapshot is durable and renamed; covered files were removed.
        case snapshotCompleted(entries: Int, removedBytes: Int)
    }

    /// One group commit on its way to the disk.
    private final class Batch {
        let sequence: UInt64
        let buffer: WireBuffer
        let fd: Int32
        let segment: UInt64
        let offset: UInt64
        let records: Int
        let submittedNs: Int64
        var pending = 0
        var failure: String?
        var directoryFD: Int32 = -1
        /// Durable only with a node flush (`WALNodeFlusher`) after its
        /// write; cleared by the flusher's verdict.
        var awaitsNodeFlush = false
        /// The node's failed flushes when this batch was submitted: one
        /// more by its verdict fails it (`applyNodeFlushVerdicts`).
        var nodeFlushFailuresAtSubmit: UInt64 = 0
        /// Synced with its own fdatasync (fsync mode, not the node flush).
        var syncsItself = false

        init(sequence: UInt64, buffer: WireBuffer, fd: Int32, segment: UInt64, offset: UInt64, records: Int) {
            self.sequence = sequence
            self.buffer = buffer
            self.fd = fd
            self.segment = segment
            self.offset = offset
            self.records = records
            self.submittedNs = aegis_monotonic_ns()
        }
    }

    /// Two batches in flight while the next fills. With plain (appending)
    /// segments a second one only made batches smaller: concurrent
    /// fdatasyncs of one file waited for each other's journal commit. Into
    /// a prepared segment there is no journal commit, and measured with one
    /// reactor (3 alternating runs, redis-benchmark -c 50 -d 32 -r 100000
    /// -t set) 2 in flight gave 55-67k SET/s against 47-58k with 1; 3 gave
    /// no more. With two reactors no difference either way.
    static let maxBatchesInFlight = 2

    let mode: WALMode
    let directory: WALDirectory
    let logger: Logger
    let eventFD: Int32
    /// Every system call of the log goes through here (fault injection in tests).
    let door: KernelDoor
    private let ring: OpaquePointer
    private let maxSegmentBytes: Int

    private(set) var filling = WireBuffer(capacity: 64 * 1024)
    /// Records in `filling` (for the records-per-flush figures).
    private var fillingRecords = 0
    private var inFlight: [Batch] = []
    private var spareBuffers: [WireBuffer] = []
    private var nextBatchSequence: UInt64 = 1
    /// Older segments' descriptors still used by batches in flight.
    private var retiringFDs: [Int32] = []

    private var segmentFD: Int32 = -1
    private(set) var segmentNumber: UInt64
    /// Where the next batch goes: the end of everything submitted.
    private var segmentOffset: UInt64 = 0
    /// Segments written since the newest snapshot (the ones it does not cover yet).
    private(set) var liveSegments: [UInt64]
    private(set) var bytesSinceSnapshot = 0
    private var newestSnapshot: UInt64?

    /// Set after a failed write or fsync: writes are refused until a probe
    /// shows the disk takes data again.
    private(set) var failure: String?
    private(set) var errorCount = 0
    private var failedBatchBytes = 0
    private(set) var batchesCommitted = 0
    private(set) var bytesCommitted = 0

    // Snapshot file state.
    private var snapshotFD: Int32 = -1
    private var snapshotNumber: UInt64 = 0
    private var snapshotOffset: UInt64 = 0
    private var snapshotCompletions = 0
    private var snapshotFailure: String?
    private var snapshotStage = SnapshotStage.idle
    private var snapshotChunk = WireBuffer()
    private var snapshotEntries = 0
    private enum SnapshotStage { case idle, writing, syncing, awaitingBatches, syncingDirectory }
    /// The last batch whose writes the snapshot may hold: it holds what
    /// memory held when its last part was serialized, and a write is in
    /// memory before its batch is durable. It becomes the log (renamed, the
    /// files it covers deleted) only once that batch and every one before it
    /// is durable; if one fails, the snapshot is abandoned, so a failed
    /// write never comes back from a snapshot.
    private var snapshotBarrier: UInt64 = 0
    /// The newest batch reported durable (batches become durable in order).
    private var durableThrough: UInt64 = 0

    /// The node-wide flush (fsync mode); nil in write mode.
    private let nodeFlusher: WALNodeFlusher?
    private let reactorIndex: Int
    /// Batches into prepared segments are written and left to the node
    /// flush; false when this log is on another device than the flush file.
    private let usesNodeFlush: Bool
    /// The newest batch handed to the node flush (written, with every
    /// earlier batch that asked for it).
    private var handedOverThrough: UInt64 = 0

    /// io_uring user data: the operation in the low byte, the batch's sequence above it.
    private enum Operation: UInt64 {
        case batchWrite = 1, batchSync, batchDirectorySync, snapshotWrite, snapshotSync, snapshotDirectorySync
        case preparedWrite, preparedSync
    }

    init(mode: WALMode, directory: WALDirectory, maxSegmentBytes: Int, recovered: WALRecovery.Report, logger: Logger,
         door: KernelDoor = .production, nodeFlusher: WALNodeFlusher? = nil, reactor: Int = 0) throws(WALError) {
        precondition(mode != .off)
        self.door = door
        self.nodeFlusher = mode == .fsync ? nodeFlusher : nil
        self.reactorIndex = reactor
        self.mode = mode
        self.directory = directory
        self.logger = logger
        self.maxSegmentBytes = max(maxSegmentBytes, 64 * 1024)
        // The first batch opens segment `nextSegment`: a boot that never
        // writes leaves no empty file behind.
        self.segmentNumber = recovered.nextSegment - 1
        self.liveSegments = recovered.keptSegments
        self.newestSnapshot = recovered.snapshotNumber
        let ring: OpaquePointer
        switch door.uringCreate(entries: 64) {
        case .success(let created): ring = created
        case .failure(let error): throw .system(error.operation, directory.path, error.code)
        }
        self.ring = ring
        let eventFD = door.eventFDCreate()
        if eventFD < 0 {
            door.uringDestroy(ring)
            throw .system("eventfd", directory.path, -eventFD)
        }
        self.eventFD = eventFD
        let registered = door.uringRegisterEventFD(ring, eventFD)
        if registered < 0 {
            door.uringDestroy(ring)
            door.close(eventFD)
            throw .system("io_uring_register(eventfd)", directory.path, -registered)
        }
        usesNodeFlush = self.nodeFlusher?.attach(reactor: reactor, eventFD: eventFD, directoryPath: directory.path) ?? false
        if self.nodeFlusher?.sharesFlushes == true && !usesNodeFlush {
            logger.warning("write-ahead log directory is on another device than the node's flush file; its batches sync themselves", metadata: [
                "directory": "\(directory.path)",
            ])
        }
        advancePreparedSegment()
    }

    deinit {
        if preparedFD >= 0 { door.close(preparedFD) }
        if segmentFD >= 0 { door.close(segmentFD) }
        for fd in retiringFDs { door.close(fd) }
        if snapshotFD >= 0 { door.close(snapshotFD) }
        door.uringDestroy(ring)
        // After the ring, which cancels what is queued: a zero-fill write may
        // still read this buffer until then. (One that a worker already runs
        // can only spoil prepared-segment.tmp, which the next start deletes.)
        zeroChunk.deallocate()
        if usesNodeFlush { nodeFlusher?.detach(reactor: reactorIndex) }
        door.close(eventFD)
    }

    var acceptsWrites: Bool { failure == nil }
    var isBatchInFlight: Bool { !inFlight.isEmpty }
    var batchesInFlight: Int { inFlight.count }
    var canSubmit: Bool { inFlight.count < Self.maxBatchesInFlight && failure == nil }
    var isSnapshotting: Bool { snapshotStage != .idle }

    // MARK: - Appending

    /// A record was encoded into `filling` (Reactor.logOwnWrite).
    @inline(__always)
    func noteRecordAppended() { fillingRecords += 1 }

    // MARK: - Group commit

    /// Hands the filled records to the kernel as one batch when fewer than
    /// `maxBatchesInFlight` are in flight. Returns true when a batch was
    /// submitted (it may already be complete: see `completedInline`).
    @discardableResult
    func submit() -> Bool {
        guard canSubmit, !filling.isEmpty else { return false }
        var syncDirectory = false
        if segmentOffset >= UInt64(maxSegmentBytes) || segmentFD < 0 || (preparedStage == .ready && !segmentIsPrepared) {
            // A new segment starts only once the batches in flight are done:
            // recovery relies on every segment but the newest being whole
            // (a crash can cut only the newest, and only at its end).
            if !inFlight.isEmpty { return false }
            do {
                try rotate()
            } catch {
                failedBatchBytes = filling.readableBytes
                refuseWrites("cannot start a new segment: \(error)")
                clearFilling()
                return false
            }
            syncDirectory = true
        }
        let buffer = spareBuffers.popLast() ?? WireBuffer(capacity: 64 * 1024)
        if segmentOffset == 0 {
            // A new segment's header travels with its first batch.
            WALFileHeader.append(to: buffer, magic: WALFileHeader.segmentMagic, number: segmentNumber)
        }
        buffer.append(filling.readableView)
        let batch = Batch(sequence: nextBatchSequence, buffer: buffer, fd: segmentFD, segment: segmentNumber, offset: segmentOffset,
                          records: fillingRecords)
        clearFilling()
        nextBatchSequence &+= 1
        segmentOffset += UInt64(buffer.readableBytes)
        inFlight.append(batch)
        let view = buffer.readableView
        let durable = mode == .fsync
        // Only into a prepared segment, within the size it was prepared
        // to: the node flush persists no metadata of ours, so the blocks
        // must be allocated and written and the size must not change. A
        // segment's first batch syncs itself, with the directory (the new name).
        batch.awaitsNodeFlush = durable && usesNodeFlush && segmentIsPrepared && !syncDirectory
            && batch.offset + UInt64(view.count) <= UInt64(maxSegmentBytes)
        batch.syncsItself = durable && !batch.awaitsNodeFlush
        if batch.awaitsNodeFlush, let nodeFlusher {
            batch.nodeFlushFailuresAtSubmit = nodeFlusher.failedFlushes.load(ordering: .acquiring)
        }
        let tag = batch.sequence << 8
        if view.count <= Self.inlineWriteLimit {
            // A small batch is copied into the page cache right here: that
            // costs less than handing it to an io_uring worker thread (ext4
            // cannot do buffered writes without blocking, so io_uring always
            // punts them to a worker) and waking up for its completion.
            // Measured in `write` mode: 0.71x the throughput of `off` through
            // io_uring, 0.94x this way. In `fsync` mode only the fdatasync
            // goes to the ring, and the reactor wakes once per batch, not
            // twice; a batch left to the node flush goes to the flusher at
            // once, with no ring operation and no wake-up of its own.
            batch.pending = 1
            let written = door.pwrite(batch.fd, view.baseAddress, view.count, batch.offset, file: .segment)
            note(.batchWrite, of: batch, result: Int32(clamping: written))
            if !durable || batch.failure != nil {
                settleBatches(into: &completedInline)
                return true
            }
            if batch.awaitsNodeFlush {
                askForNodeFlush()
                if preparedStage == .none { advancePreparedSegment() }
                return true
            }
        } else {
            let writeData = tag | Operation.batchWrite.rawValue
            let linked = durable && !batch.awaitsNodeFlush
            batch.pending += prepare(door.prepareWrite(ring, batch.fd, view.baseAddress, UInt32(view.count), batch.offset, userData: writeData,
                                                       flags: linked ? AEGIS_IOSQE_IO_LINK : 0, file: .segment), userData: writeData)
        }
        if durable && !batch.awaitsNodeFlush {
            let directoryFD = syncDirectory ? openDirectory() : nil
            let syncData = tag | Operation.batchSync.rawValue
            batch.pending += prepare(door.prepareFdatasync(ring, batch.fd, userData: syncData,
                                                           flags: directoryFD != nil ? AEGIS_IOSQE_IO_LINK : 0, file: .segment), userData: syncData)
            if let directoryFD {
                // The new segment's name must be durable too, not only its data.
                let directoryData = tag | Operation.batchDirectorySync.rawValue
                batch.pending += prepare(door.prepareFdatasync(ring, directoryFD, userData: directoryData, flags: 0, file: .directory),
                                         userData: directoryData)
                batch.directoryFD = directoryFD
            }
        }
        submitQueued(.segment)
        if preparedStage == .none { advancePreparedSegment() }
        return true
    }

    /// What completed inside `submit()` (an inline write); the caller handles and clears it.
    var completedInline: [Event] = []
    static let inlineWriteLimit = 256 * 1024

    /// Counts a queued operation. 64 entries; in use at most 2 batches of
    /// 3, a snapshot's 2 and a prepared segment's 2, so a full queue means
    /// the kernel has stopped taking entries (the no-ops of withdrawn ones
    /// stay queued until a submission succeeds): the operation fails at the
    /// next `reap` as a withdrawn one does, instead of stopping the node.
    private func prepare(_ result: Int32, userData: UInt64) -> Int {
        if result != 0 {
            withdrawn.append((userData, result))
            door.signal(eventFD)
        }
        return 1
    }

    private func openDirectory() -> Int32? {
        let fd = door.open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, file: .directory)
        return fd >= 0 ? fd : nil
    }

    /// Operations the kernel never took, with the error they complete with at the next `reap`.
    private var withdrawn: [(userData: UInt64, result: Int32)] = []
    private var withdrawnScratch: [UInt64] = []

    /// Hands what is queued to the kernel. An entry it did not take (a
    /// failed io_uring_enter leaves its entries queued; one can also take
    /// only part of them) would never complete: a held reply would wait
    /// forever and a drain would never end, and a later submission could
    /// still run it after its batch was given up. So each is withdrawn (made
    /// a no-op) and completes at the next `reap` with the submission's
    /// error, woken through the eventfd like a real completion: its batch
    /// fails as a failed write does.
    private func submitQueued(_ file: WALFileKind) {
        let submitted = door.submit(ring, file: file)
        withdrawnScratch.removeAll(keepingCapacity: true)
        guard door.withdrawUnsubmitted(ring, into: &withdrawnScratch) > 0 else { return }
        let code = submitted < 0 ? -submitted : EAGAIN
        logger.error("io_uring did not take the log's operations; failing them", metadata: [
            "directory": "\(directory.path)", "operations": "\(withdrawnScratch.count)",
            "error": "\(SystemError(operation: "io_uring_enter", code: code))",
        ])
        for userData in withdrawnScratch { withdrawn.append((userData, -code)) }
        door.signal(eventFD)
    }

    /// Processes every completion that arrived; appends what happened, in order.
    func reap(into events: inout [Event]) {
        var batchesMoved = false
        if !withdrawn.isEmpty {
            let failed = withdrawn
            withdrawn.removeAll(keepingCapacity: true)
            for (userData, result) in failed { batchesMoved = complete(userData: userData, result: result, into: &events) || batchesMoved }
        }
        var userData: UInt64 = 0
        var result: Int32 = 0
        while door.popCompletion(ring, userData: &userData, result: &result) {
            batchesMoved = complete(userData: userData, result: result, into: &events) || batchesMoved
        }
        batchesMoved = applyNodeFlushVerdicts() || batchesMoved
        if batchesMoved { settleBatches(into: &events) }
        askForNodeFlush()
    }

    /// Batches whose written prefix grew go to the node flush.
    private func askForNodeFlush() {
        guard usesNodeFlush, let nodeFlusher else { return }
        var through = handedOverThrough
        var records = 0
        for batch in inFlight where batch.awaitsNodeFlush {
            // In order: a flush vouches for every batch up to `through`.
            guard batch.pending == 0, batch.failure == nil else { break }
            if batch.sequence > through {
                through = batch.sequence
                records += batch.records
            }
        }
        guard through > handedOverThrough else { return }
        handedOverThrough = through
        nodeFlusher.noteWritten(reactor: reactorIndex, through: through, records: records)
    }

    /// What the node flusher decided for the batches waiting for it;
    /// true when one of them moved on. A failed flush is checked first:
    /// a batch at or below the end of one never counts as durable (at
    /// worst a batch that a flush before it made durable is failed too,
    /// which costs its client a retry, never a lost write).
    ///
    /// Nor does any batch submitted before a failed flush was published,
    /// even one a later flush covers: that syncfs wrote back every dirty
    /// page of the file system, so a write-back error it reported (and
    /// consumed: the next syncfs will not report it again) may have hit
    /// this batch's pages too, though it was handed over after the flush
    /// began.
    private func applyNodeFlushVerdicts() -> Bool {
        guard usesNodeFlush, let nodeFlusher, inFlight.contains(where: { $0.awaitsNodeFlush }) else { return false }
        let slot = nodeFlusher.slots[reactorIndex]
        // Durable first: the flusher publishes flushes in order, so every
        // failure before the flush that set this value is visible in the
        // failed value read after it (read the other way round, a failure
        // and a later success could both land between the two reads).
        let durableThrough = slot.durableThrough.load(ordering: .acquiring)
        let failedThrough = slot.failedThrough.load(ordering: .acquiring)
        let failedFlushes = nodeFlusher.failedFlushes.load(ordering: .acquiring)
        var moved = false
        for batch in inFlight where batch.awaitsNodeFlush && batch.pending == 0 {
            if batch.sequence <= failedThrough || batch.nodeFlushFailuresAtSubmit != failedFlushes {
                batch.failure = batch.failure ?? nodeFlusher.failureReason(reactor: reactorIndex)
            } else if batch.sequence > durableThrough {
                continue
            }
            batch.awaitsNodeFlush = false
            moved = true
        }
        return moved
    }

    /// One operation finished; returns true when it was a batch's.
    private func complete(userData: UInt64, result: Int32, into events: inout [Event]) -> Bool {
        guard let operation = Operation(rawValue: userData & 0xFF) else { return false }
        switch operation {
        case .batchWrite, .batchSync, .batchDirectorySync:
            let sequence = userData >> 8
            guard let batch = inFlight.first(where: { $0.sequence == sequence }) else {
                assertionFailure("completion for a batch not in flight")
                return false
            }
            note(operation, of: batch, result: result)
            return true
        case .snapshotWrite, .snapshotSync, .snapshotDirectorySync:
            if let event = noteSnapshotCompletion(operation, result: result) { events.append(event) }
        case .preparedWrite, .preparedSync:
            notePreparedCompletion(operation, result: result, expected: Int(userData >> 8))
        }
        return false
    }

    private func note(_ operation: Operation, of batch: Batch, result: Int32) {
        batch.pending -= 1
        assert(batch.pending >= 0)
        guard batch.failure == nil else { return }
        let segmentPath = directory.segmentPath(batch.segment)
        switch operation {
        case .batchWrite:
            if result < 0 {
                batch.failure = "write to \(segmentPath) failed: \(SystemError(operation: "write", code: -result))"
            } else if Int(result) != batch.buffer.readableBytes {
                batch.failure = "short write to \(segmentPath): \(result) of \(batch.buffer.readableBytes) bytes (disk full?)"
            }
        case .batchSync:
            if result < 0 {
                batch.failure = "fdatasync of \(segmentPath) failed: \(SystemError(operation: "fdatasync", code: -result))"
            }
        default:
            if result < 0 {
                batch.failure = "fsync of \(directory.path) failed: \(SystemError(operation: "fsync", code: -result))"
            }
        }
    }

    /// Reports finished batches from the oldest on. A failure waits until
    /// every batch in flight has finished: the writes after it may still
    /// land, and all of them must be cut off together.
    private func settleBatches(into events: inout [Event]) {
        while let oldest = inFlight.first, oldest.pending == 0 {
            if oldest.failure == nil {
                // In the device, not yet flushed: a later batch that failed
                // waits behind it, so cut-offs still go oldest first.
                if oldest.awaitsNodeFlush { break }
                inFlight.removeFirst()
                if oldest.syncsItself {
                    nodeFlusher?.noteOwnFlush(records: oldest.records, latencyNs: aegis_monotonic_ns() - oldest.submittedNs)
                }
                durableThrough = oldest.sequence
                let length = oldest.buffer.readableBytes
                bytesSinceSnapshot += length
                batchesCommitted += 1
                bytesCommitted += length
                recycle(oldest)
                events.append(.batchDurable)
                continue
            }
            guard inFlight.allSatisfy({ $0.pending == 0 }) else { break }
            let reason = oldest.failure!
            failedBatchBytes = inFlight.map { $0.buffer.readableBytes }.max() ?? 0
            cutOff(from: oldest)
            refuseWrites(reason)
            for batch in inFlight {
                recycle(batch)
                events.append(.batchFailed(batch.failure ?? reason))
            }
            inFlight.removeAll()
            clearFilling()
        }
        closeRetiredSegments()
        if snapshotStage == .awaitingBatches && durableThrough >= snapshotBarrier, let event = commitSnapshot() {
            events.append(event)
        }
    }

    private func clearFilling() {
        filling.clear()
        fillingRecords = 0
    }

    private func recycle(_ batch: Batch) {
        if batch.directoryFD >= 0 { door.close(batch.directoryFD) }
        batch.buffer.clear()
        batch.buffer.releaseIfIdle(keep: 1 << 20)
        if spareBuffers.count < Self.maxBatchesInFlight { spareBuffers.append(batch.buffer) }
    }

    /// After a failed write or fsync the pages of those batches are in an
    /// unknown state, and a second fsync would report success for data the
    /// disk may not have: so the failed batch and everything after it are
    /// cut off their files, the segments are closed and never written
    /// again, and the next write opens a new one.
    private func cutOff(from first: Batch) {
        var truncated = Set<Int32>()
        for batch in inFlight where !truncated.contains(batch.fd) {
            truncated.insert(batch.fd)
            let truncated = door.ftruncate(batch.fd, batch.offset, file: .segment)
            if truncated < 0 {
                logger.error("cannot cut the failed batch off the segment", metadata: [
                    "file": "\(directory.segmentPath(batch.segment))", "offset": "\(batch.offset)",
                    "error": "\(SystemError(operation: "ftruncate", code: -truncated))",
                ])
            }
            if batch.offset == 0 && door.unlink(directory.segmentPath(batch.segment), file: .segment) == 0 {
                liveSegments.removeAll { $0 == batch.segment }
                // The next segment takes this number again: recovery
                // refuses a gap in the numbers as a removed file.
                segmentNumber = batch.segment - 1
            }
        }
        if segmentFD >= 0 {
            door.close(segmentFD)
            segmentFD = -1
        }
        for fd in retiringFDs { door.close(fd) }
        retiringFDs.removeAll()
    }

    private func refuseWrites(_ reason: String) {
        errorCount += 1
        // Whatever failed may be in the snapshot being written (see `snapshotBarrier`).
        cancelSnapshot(reason: "the log failed: \(reason)")
        if failure == nil {
            logger.error("write-ahead log write failed: refusing writes until the disk accepts data again", metadata: [
                "reason": "\(reason)", "directory": "\(directory.path)",
            ])
        }
        failure = reason
    }

    private func closeRetiredSegments() {
        guard !retiringFDs.isEmpty else { return }
        retiringFDs.removeAll { fd in
            if inFlight.contains(where: { $0.fd == fd }) { return false }
            door.close(fd)
            return true
        }
    }

    /// While failed: tries a new segment with a durable header. Called about once a second.
    func probeRecovery(now: Int64) {
        guard failure != nil, inFlight.isEmpty else { return }
        let number = segmentNumber + 1
        let path = directory.segmentPath(number)
        let fd = door.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640, file: .segment)
        if fd < 0 { return }
        // The probe must take as much as the batch that failed (a header
        // alone fits in the last free block of a full disk); the room it
        // proved is given back right away.
        let header = WireBuffer()
        WALFileHeader.append(to: header, magic: WALFileHeader.segmentMagic, number: number)
        let probeBytes = max(64 * 1024, failedBatchBytes)
        header.append([UInt8](repeating: 0, count: probeBytes))
        let view = header.readableView
        let written = door.pwrite(fd, view.baseAddress, view.count, 0, file: .segment)
        if written != view.count || door.fdatasync(fd, file: .segment) != 0 || door.ftruncate(fd, UInt64(WALFileHeader.size), file: .segment) != 0
            || (mode == .fsync && (door.fdatasync(fd, file: .segment) != 0 || door.syncDirectory(directory.path) != 0)) {
            door.close(fd)
            _ = door.unlink(path, file: .segment)
            return
        }
        segmentFD = fd
        // A plain file: its batches extend it, so each must sync itself
        // (the node flush would leave the size they add undurable).
        segmentIsPrepared = false
        segmentNumber = number
        segmentOffset = UInt64(WALFileHeader.size)
        failedBatchBytes = 0
        liveSegments.append(number)
        logger.notice("write-ahead log writable again; accepting writes", metadata: [
            "file": "\(path)", "after": "\(failure!)",
        ])
        failure = nil
    }

    // MARK: - Segments

    private func openSegment(_ number: UInt64) throws(WALError) {
        let path = directory.segmentPath(number)
        segmentIsPrepared = false
        if preparedStage == .ready {
            // Its name becomes durable with the directory fsync linked to
            // the first batch, as a new file's would.
            let renamed = door.rename(directory.preparedSegmentPath, path, file: .prepared)
            if renamed == 0 {
                segmentFD = preparedFD
                preparedFD = -1
                preparedStage = .none
                segmentIsPrepared = true
                segmentNumber = number
                segmentOffset = 0
                liveSegments.append(number)
                return
            }
            abandonPreparedSegment("\(SystemError(operation: "rename", code: -renamed))")
        }
        let fd = door.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640, file: .segment)
        if fd < 0 { throw .system("open", path, -fd) }
        segmentFD = fd
        segmentNumber = number
        segmentOffset = 0
        liveSegments.append(number)
    }

    private func rotate() throws(WALError) {
        preparedGaveUp = false
        if segmentFD >= 0 {
            // Batches still in flight write through this descriptor.
            if inFlight.contains(where: { $0.fd == segmentFD }) { retiringFDs.append(segmentFD) } else { door.close(segmentFD) }
            segmentFD = -1
        }
        try openSegment(segmentNumber + 1)
    }

    /// The next batch goes to a new segment; returns that segment's number.
    private func rotateAtNextBatch() -> UInt64 {
        if segmentFD < 0 { return segmentNumber + 1 }  // the next batch opens one anyway
        if segmentOffset == 0 { return segmentNumber }  // opened, nothing written yet
        segmentOffset = UInt64(maxSegmentBytes)  // forces rotate() in submit()
        return segmentNumber + 1
    }

    // MARK: - Prepared segments (fsync mode)

    /// In `fsync` mode the next segment is written full of zeros and synced
    /// in the background, before it is needed. An fdatasync of a file whose
    /// blocks are all written and whose size does not change needs no ext4
    /// journal commit (no journal thread to wake, no journal blocks to
    /// write), only the data and a cache flush. Measured with
    /// perf/wal-compare: see docs/durability.md. The price is writing each
    /// segment twice (zeros, then records) and one segment of extra disk per
    /// reactor. A plain segment in use is left for the prepared one as soon
    /// as that is ready; recovery reads a zero tail as the end of a segment.
    private enum PreparedStage { case none, zeroing, syncing, ready }
    private var preparedStage = PreparedStage.none
    private var preparedFD: Int32 = -1
    private var preparedBytesSubmitted = 0
    private var preparedOperationsInFlight = 0
    private var segmentIsPrepared = false
    /// Set when preparing failed; the next rotation tries again.
    private var preparedGaveUp = false
    private let zeroChunk: UnsafeMutableRawPointer = {
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: WALWriter.zeroChunkBytes, alignment: 4096)
        memset(chunk, 0, WALWriter.zeroChunkBytes)
        return chunk
    }()
    private static let zeroChunkBytes = 1 << 20
    private static let preparedWritesInFlight = 2

    /// Starts or continues preparing the next segment.
    private func advancePreparedSegment() {
        guard mode == .fsync, failure == nil, !preparedGaveUp else { return }
        if preparedStage == .none {
            let fd = door.open(directory.preparedSegmentPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640, file: .prepared)
            if fd < 0 {
                abandonPreparedSegment("\(SystemError(operation: "open", code: -fd))")
                return
            }
            preparedFD = fd
            preparedBytesSubmitted = 0
            preparedStage = .zeroing
        }
        guard preparedStage == .zeroing else { return }
        var submitted = false
        while preparedOperationsInFlight < Self.preparedWritesInFlight && preparedBytesSubmitted < maxSegmentBytes {
            let length = min(Self.zeroChunkBytes, maxSegmentBytes - preparedBytesSubmitted)
            let writeData = UInt64(length) << 8 | Operation.preparedWrite.rawValue
            preparedOperationsInFlight += prepare(door.prepareWrite(ring, preparedFD, zeroChunk, UInt32(length), UInt64(preparedBytesSubmitted),
                                                                    userData: writeData, flags: 0, file: .prepared), userData: writeData)
            preparedBytesSubmitted += length
            submitted = true
        }
        if preparedBytesSubmitted >= maxSegmentBytes && preparedOperationsInFlight == 0 {
            let syncData = Operation.preparedSync.rawValue
            preparedOperationsInFlight += prepare(door.prepareFdatasync(ring, preparedFD, userData: syncData, flags: 0, file: .prepared),
                                                  userData: syncData)
            preparedStage = .syncing
            submitted = true
        }
        if submitted { submitQueued(.prepared) }
    }

    private func notePreparedCompletion(_ operation: Operation, result: Int32, expected: Int) {
        preparedOperationsInFlight -= 1
        if preparedStage == .none { return }  // already abandoned; this was its last operation
        if result < 0 {
            abandonPreparedSegment("\(SystemError(operation: operation == .preparedSync ? "fdatasync" : "write", code: -result))")
        } else if operation == .preparedWrite && Int(result) != expected {
            abandonPreparedSegment("short write: \(result) of \(expected) bytes (disk full?)")
        } else if operation == .preparedSync {
            preparedStage = .ready
        } else {
            advancePreparedSegment()
        }
    }

    /// Gives the prepared segment up (the log goes on with plain segments)
    /// until the next rotation.
    private func abandonPreparedSegment(_ reason: String) {
        logger.warning("cannot prepare the next write-ahead log segment; using a plain one", metadata: [
            "file": "\(directory.preparedSegmentPath)", "reason": "\(reason)",
        ])
        if preparedFD >= 0 { door.close(preparedFD) }
        preparedFD = -1
        _ = door.unlink(directory.preparedSegmentPath, file: .prepared)
        preparedStage = .none
        preparedGaveUp = true
    }

    // MARK: - Snapshots

    /// Starts a snapshot file; writes from now on go to segments it does not
    /// cover. Returns false when one cannot start now.
    func beginSnapshot() -> Bool {
        guard snapshotStage == .idle, failure == nil else { return false }
        let covers = rotateAtNextBatch()
        let path = directory.snapshotTemporaryPath(covers)
        let fd = door.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640, file: .snapshot)
        if fd < 0 {
            logger.error("cannot start a snapshot", metadata: ["file": "\(path)", "error": "\(SystemError(operation: "open", code: -fd))"])
            errorCount += 1
            return false
        }
        snapshotFD = fd
        snapshotNumber = covers
        snapshotOffset = 0
        snapshotEntries = 0
        snapshotFailure = nil
        snapshotStage = .writing
        snapshotChunk.clear()
        WALFileHeader.append(to: snapshotChunk, magic: WALFileHeader.snapshotMagic, number: covers)
        bytesSinceSnapshot = 0
        return true
    }

    /// Where the reactor serializes entries for the next chunk.
    var snapshotBuffer: WireBuffer { snapshotChunk }
    var snapshotChunkInFlight: Bool { snapshotCompletions > 0 }

    func noteSnapshotEntry() { snapshotEntries += 1 }

    /// Written into the running snapshot's end marker (`WALRecord.appendSnapshotEnd`).
    var snapshotProof = SnapshotProof()

    /// Writes the serialized chunk; with `last`, appends the end marker and syncs.
    func writeSnapshotChunk(last: Bool) {
        precondition(snapshotStage == .writing && snapshotCompletions == 0)
        if last {
            WALRecord.appendSnapshotEnd(entries: snapshotEntries, proof: snapshotProof, to: snapshotChunk)
            // The records filling now go out as batch `nextBatchSequence`.
            snapshotBarrier = filling.isEmpty ? nextBatchSequence - 1 : nextBatchSequence
        }
        let view = snapshotChunk.readableView
        let writeData = Operation.snapshotWrite.rawValue
        snapshotCompletions += prepare(door.prepareWrite(ring, snapshotFD, view.baseAddress, UInt32(view.count), snapshotOffset, userData: writeData,
                                                         flags: last ? AEGIS_IOSQE_IO_LINK : 0, file: .snapshot), userData: writeData)
        if last {
            let syncData = Operation.snapshotSync.rawValue
            snapshotCompletions += prepare(door.prepareFdatasync(ring, snapshotFD, userData: syncData, flags: 0, file: .snapshot),
                                           userData: syncData)
            snapshotStage = .syncing
        }
        submitQueued(.snapshot)
    }

    private func noteSnapshotCompletion(_ operation: Operation, result: Int32) -> Event? {
        snapshotCompletions -= 1
        switch operation {
        case .snapshotWrite:
            if result < 0 || Int(result) != snapshotChunk.readableBytes {
                snapshotFailure = snapshotFailure ?? (result < 0 ? "\(SystemError(operation: "write", code: -result))" : "short write (disk full?)")
            } else {
                snapshotOffset += UInt64(result)
            }
            snapshotChunk.clear()
        case .snapshotSync, .snapshotDirectorySync:
            if result < 0 { snapshotFailure = snapshotFailure ?? "\(SystemError(operation: "fsync", code: -result))" }
        default:
            break
        }
        if snapshotCompletions > 0 { return nil }
        if let reason = snapshotFailure { return abortSnapshot(reason) }
        switch snapshotStage {
        case .writing:
            return .snapshotChunkWritten
        case .syncing:
            door.close(snapshotFD)
            snapshotFD = -1
            if durableThrough < snapshotBarrier {
                snapshotStage = .awaitingBatches
                return nil
            }
            return commitSnapshot()
        case .awaitingBatches:
            return nil
        case .syncingDirectory:
            door.close(pendingSnapshotDirectoryFD)
            pendingSnapshotDirectoryFD = -1
            snapshotStage = .idle
            return .snapshotCompleted(entries: snapshotEntries, removedBytes: removeCoveredFiles())
        case .idle:
            return nil
        }
    }

    /// Renames the synced snapshot into place and syncs the directory; nil
    /// while that sync is in flight, or the failure.
    private func commitSnapshot() -> Event? {
        let finalPath = directory.snapshotPath(snapshotNumber)
        let renamed = door.rename(directory.snapshotTemporaryPath(snapshotNumber), finalPath, file: .snapshot)
        if renamed != 0 {
            return abortSnapshot("\(SystemError(operation: "rename", code: -renamed))")
        }
        guard let directoryFD = openDirectory() else { return abortSnapshot("cannot open \(directory.path)") }
        pendingSnapshotDirectoryFD = directoryFD
        let syncData = Operation.snapshotDirectorySync.rawValue
        snapshotCompletions += prepare(door.prepareFdatasync(ring, directoryFD, userData: syncData, flags: 0, file: .directory),
                                       userData: syncData)
        snapshotStage = .syncingDirectory
        submitQueued(.snapshot)
        return nil
    }

    private var pendingSnapshotDirectoryFD: Int32 = -1

    private func abortSnapshot(_ reason: String) -> Event {
        errorCount += 1
        if snapshotFD >= 0 { door.close(snapshotFD); snapshotFD = -1 }
        if pendingSnapshotDirectoryFD >= 0 { door.close(pendingSnapshotDirectoryFD); pendingSnapshotDirectoryFD = -1 }
        _ = door.unlink(directory.snapshotTemporaryPath(snapshotNumber), file: .snapshot)
        if snapshotStage == .syncingDirectory {
            // Renamed already, but the files it covers are all still there:
            // without it the log is whole, as a failed snapshot promises.
            _ = door.unlink(directory.snapshotPath(snapshotNumber), file: .snapshot)
        }
        snapshotStage = .idle
        snapshotChunk.clear()
        logger.error("snapshot failed; the log is kept whole and the snapshot will be retried", metadata: [
            "directory": "\(directory.path)", "reason": "\(reason)",
        ])
        return .snapshotFailed(reason)
    }

    /// Deletes the segments and the older snapshot the new snapshot covers.
    private func removeCoveredFiles() -> Int {
        var removed = 0
        // A segment a batch is still being written to stays until the next
        // snapshot (or the next start, which removes covered segments).
        let covered = liveSegments.filter { number in number < snapshotNumber && !inFlight.contains { $0.segment == number } }
        for number in covered {
            removed += removeFile(directory.segmentPath(number), file: .segment)
        }
        liveSegments.removeAll { covered.contains($0) }
        if let older = newestSnapshot, older != snapshotNumber { removed += removeFile(directory.snapshotPath(older), file: .snapshot) }
        newestSnapshot = snapshotNumber
        return removed
    }

    private func removeFile(_ path: String, file: WALFileKind) -> Int {
        let size = door.fileSize(path)
        return door.unlink(path, file: file) == 0 ? size : 0
    }

    /// Abandons a running snapshot (the log stays whole): at once, or when
    /// its operations in flight complete. After a failed batch the snapshot
    /// may already hold writes that are being undone; it must not be kept.
    func cancelSnapshot(reason: String) {
        guard snapshotStage != .idle else { return }
        if snapshotCompletions > 0 {
            snapshotFailure = snapshotFailure ?? reason
            return
        }
        _ = abortSnapshot(reason)
    }
}
