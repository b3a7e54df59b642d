import AegisStore
import Glibc
import Logging

/// Reads one reactor's log back at start: the newest snapshot, then every
/// segment after it in order. Records are applied in log order, and that
/// alone is correct even though snapshots are taken while writes go on: a
/// snapshot starts a new segment first, so every write that may or may not
/// have made it into the snapshot is also in a later segment, and replaying
/// it again lands on the same final state.
struct WALRecovery {
    struct Report {
        var records = 0
        var bytes = 0
        var segments = 0
        var snapshotEntries = 0
        /// The first segment number free for new writes.
        var nextSegment: UInt64 = 1
        /// Segment numbers a later snapshot must still cover (those kept).
        var keptSegments: [UInt64] = []
        var snapshotNumber: UInt64? = nil
        /// Files replayed that an older format wrote (converted as read).
        var olderFormatFiles = 0
        /// What the snapshot proves of its copies (`WALRecord.appendSnapshotEnd`).
        var snapshotProof = SnapshotProof()
    }

    let directory: WALDirectory
    let logger: Logger
    /// Reads and the torn-tail truncate go through the reactor's kernel door, so tests can fail them.
    var door: KernelDoor = .production

    /// Replays into `apply`; throws on damage that is not a torn tail.
    /// `snapshotRead` gets what the snapshot proves (nothing without one)
    /// before any segment is replayed; `logged` then sees each record of a
    /// segment after `apply`: the writes this node made, in their order.
    func replay(_ apply: (WALRecord) -> Void, snapshotRead: (SnapshotProof) -> Void = { _ in },
                logged: (WALRecord) -> Void = { _ in }) throws(WALError) -> Report {
        try WALDirectory.create(directory.path)
        let listing = try directory.list()
        var report = Report()
        for temporary in listing.temporaries {
            if temporary == directory.preparedSegmentPath {
                // Zeros written ahead of need; the next writer prepares its own.
                unlink(temporary)
                continue
            }
            // A snapshot that never reached its rename: the log it was meant
            // to replace is still complete.
            logger.notice("removing an unfinished snapshot", metadata: ["file": "\(temporary)"])
            unlink(temporary)
        }
        if let newest = listing.snapshots.last {
            try replaySnapshot(newest, into: &report, apply)
            report.snapshotNumber = newest
            for older in listing.snapshots.dropLast() { unlink(directory.snapshotPath(older)) }
        }
        let covered = report.snapshotNumber ?? 0
        for number in listing.segments where number < covered { unlink(directory.segmentPath(number)) }
        let live = listing.segments.filter { $0 >= covered }
        try checkContinuity(live, snapshot: report.snapshotNumber)
        snapshotRead(report.snapshotProof)
        for (position, number) in live.enumerated() {
            let isLast = position == live.count - 1
            let kept = try replaySegment(number, isLast: isLast, into: &report) { record in
                apply(record)
                logged(record)
            }
            if kept { report.keptSegments.append(number) }
        }
        // A newest segment removed above (cut off before its header) leaves
        // its number free: using it again keeps the numbers consecutive.
        report.nextSegment = max((report.keptSegments.last ?? 0) + 1, covered, 1)
        if report.olderFormatFiles > 0 {
            logger.notice("read a write-ahead log written in an older format; new records use the current one, and the next snapshot replaces the old files", metadata: [
                "directory": "\(directory.path)", "files": "\(report.olderFormatFiles)", "format": "\(WALFormat.current.rawValue)",
            ])
        }
        return report
    }

    /// Segments are numbered consecutively from the snapshot on (from 1
    /// without one): the writer starts a segment only after the one before
    /// it, and reuses a number whose file it removed. So a gap means a file
    /// was removed from outside, and replaying past it would drop every
    /// write it held without a word; the node refuses instead, naming it.
    private func checkContinuity(_ live: [UInt64], snapshot: UInt64?) throws(WALError) {
        var expected = snapshot ?? 1
        for number in live {
            if number != expected {
                let found = snapshot.map { "snapshot \(directory.snapshotPath($0)) covers segments below \($0)" }
                    ?? "there is no snapshot, so the log starts at segment 1"
                throw .missingSegment(file: directory.segmentPath(expected),
                                      reason: "\(found), and the next segment present is \(directory.segmentPath(number))")
            }
            expected += 1
        }
    }

    private func replaySnapshot(_ number: UInt64, into report: inout Report, _ apply: (WALRecord) -> Void) throws(WALError) {
        let path = directory.snapshotPath(number)
        let file = try MappedFile(path: path, door: door, file: .snapshot)
        let bytes = file.bytes
        let format = try Self.format(of: bytes, kind: WALFileHeader.snapshotKind, number: number, path: path, report: &report)
        var offset = WALFileHeader.size
        var entries = 0
        while true {
            switch WALRecord.decode(UnsafeRawBufferPointer(rebasing: bytes[offset...]), format: format) {
            case .truncated:
                throw .corruption(file: path, offset: offset, reason: "the snapshot ends before its end marker")
            case .corrupt(let reason):
                throw .corruption(file: path, offset: offset, reason: reason)
            case .record(let record, let length):
                if record.operation == .snapshotEnd {
                    if record.version.seq != UInt64(entries) {
                        throw .corruption(file: path, offset: offset, reason: "end marker counts \(record.version.seq) entries, found \(entries)")
                    }
                    if offset + length != bytes.count {
                        throw .corruption(file: path, offset: offset + length, reason: "bytes after the end marker")
                    }
                    guard let proof = WALRecord.proof(ofSnapshotEnd: record) else {
                        throw .corruption(file: path, offset: offset, reason: "the end marker's proven heads are malformed")
                    }
                    report.snapshotProof = proof
                    report.snapshotEntries = entries
                    report.bytes += bytes.count
                    return
                }
                guard record.operation == .set else {
                    throw .corruption(file: path, offset: offset, reason: "a snapshot holds only SET records")
                }
                apply(record)
                entries += 1
                offset += length
            }
        }
    }

    /// Returns false when the segment held nothing and was removed.
    private func replaySegment(_ number: UInt64, isLast: Bool, into report: inout Report,
                               _ apply: (WALRecord) -> Void) throws(WALError) -> Bool {
        let path = directory.segmentPath(number)
        let file = try MappedFile(path: path, door: door, file: .segment)
        let bytes = file.bytes
        if (bytes.count < WALFileHeader.size && isLast) || Self.isAllZero(bytes) {
            // Created (or renamed from a prepared segment), then the process
            // died before its first batch reached the disk: nothing was
            // acknowledged from it.
            logger.warning("removing a segment cut off before its header", metadata: ["file": "\(path)", "bytes": "\(bytes.count)"])
            unlink(path)
            return false
        }
        let format = try Self.format(of: bytes, kind: WALFileHeader.segmentKind, number: number, path: path, report: &report)
        report.segments += 1
        var offset = WALFileHeader.size
        while offset < bytes.count {
            let problem: String
            switch WALRecord.decode(UnsafeRawBufferPointer(rebasing: bytes[offset...]), format: format) {
            case .record(let record, let length):
                if record.operation == .snapshotEnd {
                    throw .corruption(file: path, offset: offset, reason: "a snapshot end marker inside a segment")
                }
                apply(record)
                report.records += 1
                offset += length
                continue
            case .truncated:
                problem = "a record cut short"
            case .corrupt(let reason):
                problem = reason
            }
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            if Self.isAllZero(UnsafeRawBufferPointer(rebasing: rest.prefix(format.recordHeaderSize))) {
                // Zeros where a record should start: the unwritten part of a
                // prepared segment (written with zeros ahead of need), the
                // end of the records. In an older segment only zeros may
                // follow: it was synced whole before the next one began.
                // In the newest, a batch cut by a crash may have reached the
                // disk page by page in any order, so written pages may follow
                // an unwritten one; none of that batch was acknowledged.
                let writtenAfter = !Self.isAllZero(rest)
                if writtenAfter && !isLast {
                    throw .corruption(file: path, offset: offset, reason: "zeros where a record should start, with data after them (not in the newest segment)")
                }
                if isLast {
                    if writtenAfter {
                        logger.warning("cutting off the write-ahead log at an unwritten gap in its newest segment", metadata: [
                            "file": "\(path)", "offset": "\(offset)", "bytes_dropped": "\(bytes.count - offset)",
                        ])
                    }
                    let truncated = door.truncate(path, UInt64(offset), file: .segment)
                    if truncated != 0 { throw .system("truncate", path, -truncated) }
                }
                report.bytes += offset
                return true
            }
            // A torn tail is the last write of a crash: only the last segment
            // may have one, and nothing valid may follow it.
            if !isLast {
                throw .corruption(file: path, offset: offset, reason: problem + " (not in the newest segment, so not a torn tail)")
            }
            if let later = Self.findValidRecord(in: bytes, after: offset, format: format) {
                throw .corruption(file: path, offset: offset, reason: problem + "; a valid record follows at offset \(later), so this is damage, not a torn tail")
            }
            logger.warning("cutting off a torn tail of the write-ahead log", metadata: [
                "file": "\(path)", "offset": "\(offset)", "bytes_dropped": "\(bytes.count - offset)", "reason": "\(problem)",
            ])
            let truncated = door.truncate(path, UInt64(offset), file: .segment)
            if truncated != 0 { throw .system("truncate", path, -truncated) }
            report.bytes += offset
            return true
        }
        report.bytes += bytes.count
        return true
    }

    /// The format of a segment or snapshot, from its header; throws when the
    /// header is not this kind's, names another number, or names a format
    /// this build does not read (saying what to do).
    private static func format(of bytes: UnsafeRawBufferPointer, kind: [UInt8], number: UInt64, path: String,
                               report: inout Report) throws(WALError) -> WALFormat {
        let what = kind == WALFileHeader.segmentKind ? "segment" : "snapshot"
        switch WALFileHeader.parse(bytes, kind: kind) {
        case .file(number, let format):
            if format != .current { report.olderFormatFiles += 1 }
            return format
        case .file(let other, _):
            throw .corruption(file: path, offset: 8, reason: "the \(what) header names number \(other), not \(number)")
        case .unknownFormat(let format):
            throw .unsupportedFormat(file: path, format: format)
        case .foreign:
            throw .corruption(file: path, offset: 0, reason: "not a \(what) file (its header has no \(what) magic)")
        }
    }

    /// True when every byte is zero (an empty buffer included).
    static func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var position = 0
        // Word at a time: a prepared segment's tail is up to wal_max_size_mb.
        while position + 8 <= bytes.count {
            if base.loadUnaligned(fromByteOffset: position, as: UInt64.self) != 0 { return false }
            position += 8
        }
        while position < bytes.count {
            if bytes[position] != 0 { return false }
            position += 1
        }
        return true
    }

    /// Looks for any checksum-valid record starting after `offset`; only
    /// used on the damaged path, so a byte-by-byte search is fine.
    static func findValidRecord(in bytes: UnsafeRawBufferPointer, after offset: Int, format: WALFormat = .current) -> Int? {
        var position = offset + 1
        while position + format.recordHeaderSize <= bytes.count {
            if case .record(let record, _) = WALRecord.decode(UnsafeRawBufferPointer(rebasing: bytes[position...]), format: format),
               record.operation != .snapshotEnd {
                return position
            }
            position += 1
        }
        return nil
    }
}

/// A whole file mapped read-only for replay; unmapped on deinit.
final class MappedFile {
    let bytes: UnsafeRawBufferPointer
    private let base: UnsafeMutableRawPointer?

    init(path: String, door: KernelDoor, file: WALFileKind) throws(WALError) {
        let fd = door.open(path, O_RDONLY | O_CLOEXEC, file: file)
        if fd < 0 { throw .system("open", path, -fd) }
        defer { door.close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw .system("fstat", path, errno) }
        let size = Int(info.st_size)
        if size == 0 {
            base = nil
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let mapped: UnsafeMutableRawPointer
        switch door.mapReadOnly(fd, size: size, file: file) {
        case .success(let address): mapped = address
        case .failure(let error): throw .system("mmap", path, error.code)
        }
        _ = madvise(mapped, size, MADV_SEQUENTIAL)
        base = mapped
        bytes = UnsafeRawBufferPointer(start: mapped, count: size)
    }

    deinit {
        if let base { munmap(base, bytes.count) }
    }
}
