import AegisConfig
import AegisProtocol
import CSupport
import Glibc
import Logging

/// One reactor's write-ahead log on disk: group commit through its own
/// io_uring, segment rotation, snapshot files, and disk-fault handling.
///
/// Confined to its reactor's thread, like everything the reactor owns.
///
/// Group commit with double buffering: records of the current loop
/// iteration collect in `filling`; `submit()` hands them to the kernel as
/// one write (in `fsync` mode linked to an fdatasync) while the next
/// records keep filling the other buffer. At most one batch is in flight,
/// so batches complete in order and a reply held for batch n can go as
/// soon as batch n completes. The reactor never waits for the disk: the
/// ring's completions arrive through an eventfd in its epoll set.
///
/// Invariants (asserted):
/// - `inFlight` is non-empty exactly while a batch is in flight.
/// - Everything before `segmentOffset` in the current segment was written
///   by completed batches; a failed batch is cut off again, so a segment
///   never holds a hole or a partial record except after a crash.
final class WALWriter {
    enum Event {
        /// The batch in flight reached the disk (or the page cache in `write` mode).
        case batchDurable
        /// The batch in flight failed; its writes must not be acknowledged.
        case batchFailed(String)
        /// The snapshot's next chunk may be written.
        case snapshotChunkWritten
        case snapshotFailed(String)
        /// The snapshot is durable and renamed; covered files were removed.
        case snapshotCompleted(entries: Int, removedBytes: Int)
    }

    let mode: WALMode
    let directory: WALDirectory
    let logger: Logger
    let eventFD: Int32
    private let ring: OpaquePointer
    private let maxSegmentBytes: Int

    private(set) var filling = WireBuffer(capacity: 64 * 1024)
    private var inFlight = WireBuffer(capacity: 64 * 1024)
    private var pendingCompletions = 0
    private var batchFailure: String?
    private var batchOffset: UInt64 = 0

    private var segmentFD: Int32 = -1
    private(set) var segmentNumber: UInt64
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
    private enum SnapshotStage { case idle, writing, syncing, syncingDirectory }

    private enum Operation: UInt64 {
        case batchWrite = 1, batchSync, batchDirectorySync, snapshotWrite, snapshotSync, snapshotDirectorySync
    }

    init(mode: WALMode, directory: WALDirectory, maxSegmentBytes: Int, recovered: WALRecovery.Report, logger: Logger) throws(WALError) {
        precondition(mode != .off)
        self.mode = mode
        self.directory = directory
        self.logger = logger
        self.maxSegmentBytes = max(maxSegmentBytes, 64 * 1024)
        // The first batch opens segment `nextSegment`: a boot that never
        // writes leaves no empty file behind.
        self.segmentNumber = recovered.nextSegment - 1
        self.liveSegments = recovered.keptSegments
        self.newestSnapshot = recovered.snapshotNumber
        var error: Int32 = 0
        guard let ring = aegis_uring_create(64, &error) else { throw .system("io_uring_setup", directory.path, -error) }
        self.ring = ring
        let eventFD = aegis_eventfd_create()
        if eventFD < 0 {
            aegis_uring_destroy(ring)
            throw .system("eventfd", directory.path, -eventFD)
        }
        self.eventFD = eventFD
        let registered = aegis_uring_register_eventfd(ring, eventFD)
        if registered < 0 {
            aegis_uring_destroy(ring)
            _ = aegis_close(eventFD)
            throw .system("io_uring_register(eventfd)", directory.path, -registered)
        }
    }

    deinit {
        if segmentFD >= 0 { close(segmentFD) }
        if snapshotFD >= 0 { close(snapshotFD) }
        aegis_uring_destroy(ring)
        _ = aegis_close(eventFD)
    }

    var acceptsWrites: Bool { failure == nil }
    var isBatchInFlight: Bool { pendingCompletions > 0 }
    var isSnapshotting: Bool { snapshotStage != .idle }

    // MARK: - Appending

    @inline(__always)
    func append(_ operation: WALRecord.Operation, shard: Int, version: UInt64, expiryMs: Int64,
                key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        assert(failure == nil, "records appended while the log refuses writes")
        WALRecord.append(to: filling, operation: operation, shard: shard, version: version, expiryMs: expiryMs, key: key, value: value)
    }

    // MARK: - Group commit

    /// Hands the filled batch to the kernel when none is in flight. Returns
    /// true when a batch was submitted.
    @discardableResult
    func submit() -> Bool {
        guard pendingCompletions == 0, !filling.isEmpty, failure == nil else { return false }
        assert(inFlight.isEmpty)
        var syncDirectory = false
        if segmentOffset >= UInt64(maxSegmentBytes) || segmentFD < 0 {
            do {
                try rotate()
            } catch {
                fail(batchFailure: "cannot start a new segment: \(error)")
                return false
            }
            syncDirectory = true
        } else if segmentOffset == 0 {
            syncDirectory = true
        }
        if segmentOffset == 0 {
            // A new segment's header travels with its first batch.
            WALFileHeader.append(to: inFlight, magic: WALFileHeader.segmentMagic, number: segmentNumber)
        }
        if inFlight.isEmpty {
            swap(&filling, &inFlight)
        } else {
            inFlight.append(filling.readableView)
            filling.clear()
        }
        batchOffset = segmentOffset
        batchFailure = nil
        let view = inFlight.readableView
        let durable = mode == .fsync
        if !durable && view.count <= Self.inlineWriteLimit {
            // `write` mode, small batch: copying it into the page cache
            // costs less than handing it to an io_uring worker thread
            // (ext4 cannot do buffered writes without blocking, so io_uring
            // always punts them to a worker) and waking up for its completion.
            pendingCompletions = 1
            let written = pwrite(segmentFD, view.baseAddress, view.count, off_t(batchOffset))
            noteBatchCompletion(.batchWrite, result: written < 0 ? -errno : Int32(written))
            completedInline = finishBatch()
            return true
        }
        var queued = 0
        queued += prepare(aegis_uring_prep_write(ring, segmentFD, view.baseAddress, UInt32(view.count), batchOffset,
                                                 Operation.batchWrite.rawValue, durable ? AEGIS_IOSQE_IO_LINK : 0))
        if durable {
            queued += prepare(aegis_uring_prep_fdatasync(ring, segmentFD, Operation.batchSync.rawValue,
                                                         syncDirectory ? AEGIS_IOSQE_IO_LINK : 0))
            if syncDirectory, let directoryFD = openDirectory() {
                queued += prepare(aegis_uring_prep_fdatasync(ring, directoryFD, Operation.batchDirectorySync.rawValue, 0))
                pendingDirectoryFD = directoryFD
            }
        }
        let submitted = aegis_uring_submit(ring)
        if submitted < 0 {
            logger.error("io_uring submit failed", metadata: ["error": "\(SystemError(operation: "io_uring_enter", code: -submitted))"])
        }
        pendingCompletions = queued
        return true
    }

    private var pendingDirectoryFD: Int32 = -1
    /// Set by `submit()` when the batch completed before it returned.
    var completedInline: Event?
    static let inlineWriteLimit = 256 * 1024

    private func prepare(_ result: Int32) -> Int {
        // 64 entries and at most 5 in use: a full queue is a bug.
        precondition(result == 0, "io_uring submission queue full")
        return 1
    }

    private func openDirectory() -> Int32? {
        let fd = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        return fd >= 0 ? fd : nil
    }

    /// Processes every completion that arrived; returns what happened, in order.
    func reap(into events: inout [Event]) {
        var userData: UInt64 = 0
        var result: Int32 = 0
        while aegis_uring_pop_completion(ring, &userData, &result) == 1 {
            guard let operation = Operation(rawValue: userData) else { continue }
            switch operation {
            case .batchWrite, .batchSync, .batchDirectorySync:
                noteBatchCompletion(operation, result: result)
                if pendingCompletions == 0 { events.append(finishBatch()) }
            case .snapshotWrite, .snapshotSync, .snapshotDirectorySync:
                if let event = noteSnapshotCompletion(operation, result: result) { events.append(event) }
            }
        }
    }

    private func noteBatchCompletion(_ operation: Operation, result: Int32) {
        pendingCompletions -= 1
        assert(pendingCompletions >= 0)
        guard batchFailure == nil else { return }
        switch operation {
        case .batchWrite:
            if result < 0 {
                batchFailure = "write to \(directory.segmentPath(segmentNumber)) failed: \(SystemError(operation: "write", code: -result))"
            } else if Int(result) != inFlight.readableBytes {
                batchFailure = "short write to \(directory.segmentPath(segmentNumber)): \(result) of \(inFlight.readableBytes) bytes (disk full?)"
            }
        case .batchSync:
            if result < 0 {
                batchFailure = "fdatasync of \(directory.segmentPath(segmentNumber)) failed: \(SystemError(operation: "fdatasync", code: -result))"
            }
        default:
            if result < 0 {
                batchFailure = "fsync of \(directory.path) failed: \(SystemError(operation: "fsync", code: -result))"
            }
        }
    }

    private func finishBatch() -> Event {
        if pendingDirectoryFD >= 0 {
            close(pendingDirectoryFD)
            pendingDirectoryFD = -1
        }
        let length = inFlight.readableBytes
        inFlight.clear()
        inFlight.releaseIfIdle(keep: 1 << 20)
        if let failure = batchFailure {
            failedBatchBytes = length
            fail(batchFailure: failure)
            return .batchFailed(failure)
        }
        segmentOffset = batchOffset + UInt64(length)
        bytesSinceSnapshot += length
        batchesCommitted += 1
        bytesCommitted += length
        return .batchDurable
    }

    /// After a failed write or fsync the pages of that batch are in an
    /// unknown state, and a second fsync would report success for data the
    /// disk may not have: so the batch is cut off the file, the segment is
    /// closed and never written again, and the next write opens a new one.
    private func fail(batchFailure reason: String) {
        errorCount += 1
        failedBatchBytes = max(failedBatchBytes, inFlight.readableBytes, filling.readableBytes)
        if failure == nil {
            logger.error("write-ahead log write failed: refusing writes until the disk accepts data again", metadata: [
                "reason": "\(reason)", "directory": "\(directory.path)",
            ])
        }
        failure = reason
        if segmentFD >= 0 {
            if ftruncate(segmentFD, off_t(batchOffset)) != 0 {
                logger.error("cannot cut the failed batch off the segment", metadata: [
                    "file": "\(directory.segmentPath(segmentNumber))", "offset": "\(batchOffset)",
                    "error": "\(SystemError(operation: "ftruncate", code: errno))",
                ])
            }
            close(segmentFD)
            segmentFD = -1
            if batchOffset == 0 { unlink(directory.segmentPath(segmentNumber)); liveSegments.removeAll { $0 == segmentNumber } }
        }
        filling.clear()
    }

    /// While failed: tries a new segment with a durable header. Called about once a second.
    func probeRecovery(now: Int64) {
        guard failure != nil, pendingCompletions == 0 else { return }
        let number = segmentNumber + 1
        let path = directory.segmentPath(number)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        if fd < 0 { return }
        // The probe must take as much as the batch that failed (a header
        // alone fits in the last free block of a full disk); the room it
        // proved is given back right away.
        let header = WireBuffer()
        WALFileHeader.append(to: header, magic: WALFileHeader.segmentMagic, number: number)
        let probeBytes = max(64 * 1024, failedBatchBytes)
        header.append([UInt8](repeating: 0, count: probeBytes))
        let view = header.readableView
        let written = pwrite(fd, view.baseAddress, view.count, 0)
        if written != view.count || fdatasync(fd) != 0 || ftruncate(fd, off_t(WALFileHeader.size)) != 0
            || (mode == .fsync && (fdatasync(fd) != 0 || (try? WALDirectory.syncDirectory(directory.path)) == nil)) {
            close(fd)
            unlink(path)
            return
        }
        segmentFD = fd
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
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        if fd < 0 { throw .system("open", path, errno) }
        segmentFD = fd
        segmentNumber = number
        segmentOffset = 0
        liveSegments.append(number)
    }

    private func rotate() throws(WALError) {
        if segmentFD >= 0 {
            close(segmentFD)
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

    // MARK: - Snapshots

    /// Starts a snapshot file; writes from now on go to segments it does not
    /// cover. Returns false when one cannot start now.
    func beginSnapshot() -> Bool {
        guard snapshotStage == .idle, failure == nil, pendingCompletions == 0 else { return false }
        let covers = rotateAtNextBatch()
        let path = directory.snapshotTemporaryPath(covers)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        if fd < 0 {
            logger.error("cannot start a snapshot", metadata: ["file": "\(path)", "error": "\(SystemError(operation: "open", code: errno))"])
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

    /// Writes the serialized chunk; with `last`, appends the end marker and syncs.
    func writeSnapshotChunk(last: Bool) {
        precondition(snapshotStage == .writing && snapshotCompletions == 0)
        if last {
            WALRecord.append(to: snapshotChunk, operation: .snapshotEnd, shard: 0, version: UInt64(snapshotEntries),
                             expiryMs: 0, key: UnsafeRawBufferPointer(start: nil, count: 0), value: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        let view = snapshotChunk.readableView
        snapshotCompletions += prepare(aegis_uring_prep_write(ring, snapshotFD, view.baseAddress, UInt32(view.count), snapshotOffset,
                                                              Operation.snapshotWrite.rawValue, last ? AEGIS_IOSQE_IO_LINK : 0))
        if last {
            snapshotCompletions += prepare(aegis_uring_prep_fdatasync(ring, snapshotFD, Operation.snapshotSync.rawValue, 0))
            snapshotStage = .syncing
        }
        _ = aegis_uring_submit(ring)
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
            close(snapshotFD)
            snapshotFD = -1
            let finalPath = directory.snapshotPath(snapshotNumber)
            if rename(directory.snapshotTemporaryPath(snapshotNumber), finalPath) != 0 {
                return abortSnapshot("\(SystemError(operation: "rename", code: errno))")
            }
            guard let directoryFD = openDirectory() else { return abortSnapshot("cannot open \(directory.path)") }
            pendingSnapshotDirectoryFD = directoryFD
            snapshotCompletions += prepare(aegis_uring_prep_fdatasync(ring, directoryFD, Operation.snapshotDirectorySync.rawValue, 0))
            _ = aegis_uring_submit(ring)
            snapshotStage = .syncingDirectory
            return nil
        case .syncingDirectory:
            close(pendingSnapshotDirectoryFD)
            pendingSnapshotDirectoryFD = -1
            snapshotStage = .idle
            return .snapshotCompleted(entries: snapshotEntries, removedBytes: removeCoveredFiles())
        case .idle:
            return nil
        }
    }

    private var pendingSnapshotDirectoryFD: Int32 = -1

    private func abortSnapshot(_ reason: String) -> Event {
        errorCount += 1
        if snapshotFD >= 0 { close(snapshotFD); snapshotFD = -1 }
        if pendingSnapshotDirectoryFD >= 0 { close(pendingSnapshotDirectoryFD); pendingSnapshotDirectoryFD = -1 }
        unlink(directory.snapshotTemporaryPath(snapshotNumber))
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
        let covered = liveSegments.filter { $0 < snapshotNumber }
        for number in covered {
            removed += removeFile(directory.segmentPath(number))
        }
        liveSegments.removeAll { $0 < snapshotNumber }
        if let older = newestSnapshot, older != snapshotNumber { removed += removeFile(directory.snapshotPath(older)) }
        newestSnapshot = snapshotNumber
        return removed
    }

    private func removeFile(_ path: String) -> Int {
        var info = stat()
        let size = stat(path, &info) == 0 ? Int(info.st_size) : 0
        return unlink(path) == 0 ? size : 0
    }

    /// Abandons a running snapshot (the log stays whole).
    func cancelSnapshot(reason: String) {
        guard snapshotStage != .idle, snapshotCompletions == 0 else { return }
        _ = abortSnapshot(reason)
    }
}
