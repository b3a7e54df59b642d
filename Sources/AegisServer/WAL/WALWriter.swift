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
/// (in `fsync` mode linked to an fdatasync) at the next offset of the
/// segment, while the next records keep filling. Up to
/// `maxBatchesInFlight` batches are in flight at once, so a client whose
/// write missed one batch waits for one fdatasync, not for the one in
/// progress and then its own. Batches are reported durable strictly in
/// submission order, each after its own write and sync: so a reply held for
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
        var pending = 0
        var failure: String?
        var directoryFD: Int32 = -1

        init(sequence: UInt64, buffer: WireBuffer, fd: Int32, segment: UInt64, offset: UInt64) {
            self.sequence = sequence
            self.buffer = buffer
            self.fd = fd
            self.segment = segment
            self.offset = offset
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
    private let ring: OpaquePointer
    private let maxSegmentBytes: Int

    private(set) var filling = WireBuffer(capacity: 64 * 1024)
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
    private enum SnapshotStage { case idle, writing, syncing, syncingDirectory }

    /// io_uring user data: the operation in the low byte, the batch's sequence above it.
    private enum Operation: UInt64 {
        case batchWrite = 1, batchSync, batchDirectorySync, snapshotWrite, snapshotSync, snapshotDirectorySync
        case preparedWrite, preparedSync
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
        advancePreparedSegment()
    }

    deinit {
        if preparedFD >= 0 { close(preparedFD) }
        if segmentFD >= 0 { close(segmentFD) }
        for fd in retiringFDs { close(fd) }
        if snapshotFD >= 0 { close(snapshotFD) }
        aegis_uring_destroy(ring)
        // After the ring, which cancels what is queued: a zero-fill write may
        // still read this buffer until then. (One that a worker already runs
        // can only spoil prepared-segment.tmp, which the next start deletes.)
        zeroChunk.deallocate()
        _ = aegis_close(eventFD)
    }

    var acceptsWrites: Bool { failure == nil }
    var isBatchInFlight: Bool { !inFlight.isEmpty }
    var batchesInFlight: Int { inFlight.count }
    var canSubmit: Bool { inFlight.count < Self.maxBatchesInFlight && failure == nil }
    var isSnapshotting: Bool { snapshotStage != .idle }

    // MARK: - Appending

    @inline(__always)
    func append(_ operation: WALRecord.Operation, shard: Int, version: EntryVersion, expiryMs: Int64,
                key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        assert(failure == nil, "records appended while the log refuses writes")
        WALRecord.append(to: filling, operation: operation, shard: shard, version: version, expiryMs: expiryMs, key: key, value: value)
    }

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
                filling.clear()
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
        filling.clear()
        let batch = Batch(sequence: nextBatchSequence, buffer: buffer, fd: segmentFD, segment: segmentNumber, offset: segmentOffset)
        nextBatchSequence &+= 1
        segmentOffset += UInt64(buffer.readableBytes)
        inFlight.append(batch)
        let view = buffer.readableView
        let durable = mode == .fsync
        let tag = batch.sequence << 8
        if view.count <= Self.inlineWriteLimit {
            // A small batch is copied into the page cache right here: that
            // costs less than handing it to an io_uring worker thread (ext4
            // cannot do buffered writes without blocking, so io_uring always
            // punts them to a worker) and waking up for its completion.
            // Measured in `write` mode: 0.71x the throughput of `off` through
            // io_uring, 0.94x this way. In `fsync` mode only the fdatasync
            // goes to the ring, and the reactor wakes once per batch, not twice.
            batch.pending = 1
            let written = pwrite(batch.fd, view.baseAddress, view.count, off_t(batch.offset))
            note(.batchWrite, of: batch, result: written < 0 ? -errno : Int32(written))
            if !durable || batch.failure != nil {
                settleBatches(into: &completedInline)
                return true
            }
        } else {
            batch.pending += prepare(aegis_uring_prep_write(ring, batch.fd, view.baseAddress, UInt32(view.count), batch.offset,
                                                            tag | Operation.batchWrite.rawValue, durable ? AEGIS_IOSQE_IO_LINK : 0))
        }
        if durable {
            let directoryFD = syncDirectory ? openDirectory() : nil
            batch.pending += prepare(aegis_uring_prep_fdatasync(ring, batch.fd, tag | Operation.batchSync.rawValue,
                                                                directoryFD != nil ? AEGIS_IOSQE_IO_LINK : 0))
            if let directoryFD {
                // The new segment's name must be durable too, not only its data.
                batch.pending += prepare(aegis_uring_prep_fdatasync(ring, directoryFD, tag | Operation.batchDirectorySync.rawValue, 0))
                batch.directoryFD = directoryFD
            }
        }
        let submitted = aegis_uring_submit(ring)
        if submitted < 0 {
            logger.error("io_uring submit failed", metadata: ["error": "\(SystemError(operation: "io_uring_enter", code: -submitted))"])
        }
        if preparedStage == .none { advancePreparedSegment() }
        return true
    }

    /// What completed inside `submit()` (an inline write); the caller handles and clears it.
    var completedInline: [Event] = []
    static let inlineWriteLimit = 256 * 1024

    private func prepare(_ result: Int32) -> Int {
        // 64 entries; in use at most 4 batches of 3, a snapshot's 2 and a
        // prepared segment's 2: a full queue is a bug.
        precondition(result == 0, "io_uring submission queue full")
        return 1
    }

    private func openDirectory() -> Int32? {
        let fd = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        return fd >= 0 ? fd : nil
    }

    /// Processes every completion that arrived; appends what happened, in order.
    func reap(into events: inout [Event]) {
        var userData: UInt64 = 0
        var result: Int32 = 0
        var batchesMoved = false
        while aegis_uring_pop_completion(ring, &userData, &result) == 1 {
            guard let operation = Operation(rawValue: userData & 0xFF) else { continue }
            switch operation {
            case .batchWrite, .batchSync, .batchDirectorySync:
                let sequence = userData >> 8
                guard let batch = inFlight.first(where: { $0.sequence == sequence }) else {
                    assertionFailure("completion for a batch not in flight")
                    continue
                }
                note(operation, of: batch, result: result)
                batchesMoved = true
            case .snapshotWrite, .snapshotSync, .snapshotDirectorySync:
                if let event = noteSnapshotCompletion(operation, result: result) { events.append(event) }
            case .preparedWrite, .preparedSync:
                notePreparedCompletion(operation, result: result, expected: Int(userData >> 8))
            }
        }
        if batchesMoved { settleBatches(into: &events) }
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
                inFlight.removeFirst()
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
            filling.clear()
        }
        closeRetiredSegments()
    }

    private func recycle(_ batch: Batch) {
        if batch.directoryFD >= 0 { close(batch.directoryFD) }
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
            if ftruncate(batch.fd, off_t(batch.offset)) != 0 {
                logger.error("cannot cut the failed batch off the segment", metadata: [
                    "file": "\(directory.segmentPath(batch.segment))", "offset": "\(batch.offset)",
                    "error": "\(SystemError(operation: "ftruncate", code: errno))",
                ])
            }
            if batch.offset == 0 {
                unlink(directory.segmentPath(batch.segment))
                liveSegments.removeAll { $0 == batch.segment }
            }
        }
        if segmentFD >= 0 {
            close(segmentFD)
            segmentFD = -1
        }
        for fd in retiringFDs { close(fd) }
        retiringFDs.removeAll()
    }

    private func refuseWrites(_ reason: String) {
        errorCount += 1
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
            close(fd)
            return true
        }
    }

    /// While failed: tries a new segment with a durable header. Called about once a second.
    func probeRecovery(now: Int64) {
        guard failure != nil, inFlight.isEmpty else { return }
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
        segmentIsPrepared = false
        if preparedStage == .ready {
            // Its name becomes durable with the directory fsync linked to
            // the first batch, as a new file's would.
            if rename(directory.preparedSegmentPath, path) == 0 {
                segmentFD = preparedFD
                preparedFD = -1
                preparedStage = .none
                segmentIsPrepared = true
                segmentNumber = number
                segmentOffset = 0
                liveSegments.append(number)
                return
            }
            abandonPreparedSegment("\(SystemError(operation: "rename", code: errno))")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        if fd < 0 { throw .system("open", path, errno) }
        segmentFD = fd
        segmentNumber = number
        segmentOffset = 0
        liveSegments.append(number)
    }

    private func rotate() throws(WALError) {
        preparedGaveUp = false
        if segmentFD >= 0 {
            // Batches still in flight write through this descriptor.
            if inFlight.contains(where: { $0.fd == segmentFD }) { retiringFDs.append(segmentFD) } else { close(segmentFD) }
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
            let fd = open(directory.preparedSegmentPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
            if fd < 0 {
                abandonPreparedSegment("\(SystemError(operation: "open", code: errno))")
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
            preparedOperationsInFlight += prepare(aegis_uring_prep_write(ring, preparedFD, zeroChunk, UInt32(length),
                                                                         UInt64(preparedBytesSubmitted), UInt64(length) << 8 | Operation.preparedWrite.rawValue, 0))
            preparedBytesSubmitted += length
            submitted = true
        }
        if preparedBytesSubmitted >= maxSegmentBytes && preparedOperationsInFlight == 0 {
            preparedOperationsInFlight += prepare(aegis_uring_prep_fdatasync(ring, preparedFD, Operation.preparedSync.rawValue, 0))
            preparedStage = .syncing
            submitted = true
        }
        if submitted { _ = aegis_uring_submit(ring) }
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
        if preparedFD >= 0 { close(preparedFD) }
        preparedFD = -1
        unlink(directory.preparedSegmentPath)
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
            WALRecord.appendSnapshotEnd(entries: snapshotEntries, to: snapshotChunk)
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
        if snapshotStage == .syncingDirectory {
            // Renamed already, but the files it covers are all still there:
            // without it the log is whole, as a failed snapshot promises.
            unlink(directory.snapshotPath(snapshotNumber))
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
            removed += removeFile(directory.segmentPath(number))
        }
        liveSegments.removeAll { covered.contains($0) }
        if let older = newestSnapshot, older != snapshotNumber { removed += removeFile(directory.snapshotPath(older)) }
        newestSnapshot = snapshotNumber
        return removed
    }

    private func removeFile(_ path: String) -> Int {
        var info = stat()
        let size = stat(path, &info) == 0 ? Int(info.st_size) : 0
        return unlink(path) == 0 ? size : 0
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
