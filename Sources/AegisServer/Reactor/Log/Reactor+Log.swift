import AegisCluster
import AegisProtocol
import AegisStore
import CSupport
import Glibc

/// The reactor's side of the write-ahead log: recovery at start, logging
/// each write's outcome, holding its reply until the batch holding its
/// record is durable, and driving snapshots.
///
/// A write is applied to memory first and logged as the key's resulting
/// state (SET with value, expiry and version, or DEL): whatever the command
/// (INCR, APPEND, EXPIRE, GETDEL...), replaying states is simpler and exact.
/// Its reply is not sent until the batch is durable; a later reply on the
/// same connection waits behind it (replies keep request order), but reads
/// on other connections never wait for the disk.
extension Reactor {
    /// Replays this reactor's log into its shards and opens the log for
    /// writing. Runs before the reactor's thread serves anything.
    func recoverLog() throws(WALError) -> (report: WALRecovery.Report, replayed: ReplayedShards) {
        let config = node.config
        let directory = WALDirectory(walDirectory: config.effectiveWALDir, reactor: index)
        shards.claim()  // the replay thread fills the stores until the reactor's own thread takes over
        let recovery = WALRecovery(directory: directory, logger: logger, door: door)
        let nowMs = aegis_now_ms_coarse()
        // Indexed by shard, not hashed: the replay touches both once per record.
        var copies = [ReplayedCopy](repeating: ReplayedCopy(), count: shards.count)
        var newest = [EntryVersion](repeating: .zero, count: shards.count)
        let report = try recovery.replay { record in
            applyReplayed(record, nowMs: nowMs)
            if record.shard < newest.count, record.version > newest[record.shard] { newest[record.shard] = record.version }
        } snapshotRead: { proof in
            for (shard, head) in proof.heads where shard < copies.count {
                copies[shard] = ReplayedCopy(provenThrough: head, heldTerm: proof.heldTerms[shard] ?? 0)
            }
        } logged: { record in
            if record.shard < copies.count { copies[record.shard].logged(record.version) }
        }
        let writer = try WALWriter(mode: config.walMode, directory: directory,
                                   maxSegmentBytes: config.walMaxSizeMB * 1024 * 1024, recovered: report, logger: logger,
                                   door: door, nodeFlusher: node.walFlusher, reactor: index)
        let added = poller.add(writer.eventFD, AEGIS_EPOLLIN | AEGIS_EPOLLET, token: EventPoller.walToken, .any)
        if added < 0 { throw .system("epoll_ctl(io_uring eventfd)", directory.path, -added) }
        log.wal = writer
        log.unloggedSinceSnapshot = Array(repeating: false, count: shards.count)
        log.chains = (0..<shards.count).map { shard in
            var chain = copies[shard]
            // Replayed data no chain accounts for, or newer than its head
            // (a snapshot walked records applied without being logged).
            if newest[shard] > .zero, !chain.isWhole || newest[shard] > chain.head { chain.breakChain() }
            return chain
        }
        return (report, replayedShards(newest))
    }

    /// What the replay left of each owned shard: the lease machine's view of
    /// this node's copies before it votes or campaigns. `newest`: the newest
    /// version replayed per shard (a snapshot's entries come in any order).
    private func replayedShards(_ newest: [EntryVersion]) -> ReplayedShards {
        var replayed = ReplayedShards()
        for shard in shards.ownedIndices {
            let chain = log.chains[shard]
            // A proven head above every entry is a DEL or FLUSHALL the copy holds.
            let version = max(newest[shard], chain.isWhole ? chain.head : .zero)
            if chain.isWhole { replayed.whole.insert(shard) }
            if version > .zero { replayed.versions[shard] = version }
        }
        return replayed
    }

    /// A change to `shard` that is not logged (a record applied as follower,
    /// a stream, a read repair, a failed batch undone): the log can no longer
    /// prove the copy whole.
    @inline(__always)
    func noteUnloggedChange(shard: Int) {
        if !log.chains.isEmpty {
            log.chains[shard].breakChain()
            log.unloggedSinceSnapshot[shard] = true
        }
    }

    func applyReplayed(_ record: WALRecord, nowMs: Int64) {
        switch record.operation {
        case .set:
            let hash = KeyHash.hash(record.key)
            guard let store = shards[KeyHash.shard(of: hash, shardCount: shards.count)] else { return }
            if record.expiryMs != 0 && record.expiryMs <= nowMs {
                // Expired while the node was down.
                store.restoreDeletion(record.key, hash: hash, nowMs: nowMs, version: record.version)
            } else {
                store.restore(record.key, hash: hash, value: record.value, expiryMs: record.expiryMs, nowMs: nowMs,
                              version: record.version)
            }
        case .delete:
            let hash = KeyHash.hash(record.key)
            shards[KeyHash.shard(of: hash, shardCount: shards.count)]?
                .restoreDeletion(record.key, hash: hash, nowMs: nowMs, version: record.version)
        case .flushShard:
            if record.shard < shards.count { shards[record.shard]?.restoreFlush(version: record.version) }
        case .snapshotEnd:
            break
        }
    }

    /// Writes this reactor's whole state as snapshot `number` in `directory`
    /// and syncs it, blocking; only for start-up (WALRelayout), before the
    /// reactor serves. Returns the entries written.
    func writeSnapshotNow(to directory: WALDirectory, number: UInt64, nowMs: Int64,
                          door: KernelDoor = .production) throws(WALError) -> Int {
        let temporary = directory.snapshotTemporaryPath(number)
        let fd = door.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640, file: .snapshot)
        if fd < 0 { throw .system("open", temporary, -fd) }
        defer { door.close(fd) }
        let buffer = WireBuffer()
        var failure: WALError?
        var offset: UInt64 = 0
        func drain() {
            while !buffer.isEmpty && failure == nil {
                let view = buffer.readableView
                let written = door.pwrite(fd, view.baseAddress, view.count, offset, file: .snapshot)
                if written > 0 {
                    buffer.consume(written)
                    offset += UInt64(written)
                } else if written != -Int(EINTR) {
                    failure = .system("write", temporary, written < 0 ? Int32(-written) : EIO)
                }
            }
        }
        WALFileHeader.append(to: buffer, magic: WALFileHeader.snapshotMagic, number: number)
        var entries = 0
        for shard in shards.ownedIndices {
            var cursor: UInt64 = 0
            repeat {
                cursor = shards[shard]!.scan(cursor: cursor, count: 256, nowMs: nowMs) { entry in
                    WALRecord.appendEntry(entry, shard: shard, to: buffer)
                    entries += 1
                }
                if buffer.readableBytes >= 1 << 20 { drain() }
                if let failure { throw failure }
            } while cursor != 0
        }
        WALRecord.appendSnapshotEnd(entries: entries, to: buffer)
        drain()
        if let failure { throw failure }
        let synced = door.fdatasync(fd, file: .snapshot)
        if synced != 0 { throw .system("fdatasync", temporary, -synced) }
        let renamed = door.rename(temporary, directory.snapshotPath(number), file: .snapshot)
        if renamed != 0 { throw .system("rename", temporary, -renamed) }
        return entries
    }

    // MARK: - Logging writes

    static let walRefusalRESP = "ERR write-ahead log unavailable: writes are refused until the disk accepts data again (reads still served)"
    static let walRefusalBinary = "write-ahead log unavailable: writes are refused until the disk accepts data again (reads still served)"

    /// Runs `write` on `key` and, when it changed the key, records the
    /// change: the key's new state goes to the log (its previous state kept
    /// to undo a failed batch) and the same record bytes to the shard's
    /// followers. Every write of a key by a command takes this one path, so
    /// none is logged but not replicated, and no record is encoded twice.
    /// Returns whether the key changed.
    @inline(__always) @discardableResult
    func recordedWrite(_ key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore, _ write: () -> Void) -> Bool {
        let previous = store.lastWriteVersion
        let stamp = store.mutationStamp
        let undoMark = log.holding.undo.readableBytes
        if log.wal != nil { keepPreviousState(key, hash: hash, store: store) }
        write()
        guard store.mutationStamp != stamp else {
            log.holding.undo.truncate(toReadable: undoMark)
            return false
        }
        let shard = KeyHash.shard(of: hash, shardCount: shards.count)
        replica.justWroteShard = shard
        replica.justWroteVersion = store.lastWriteVersion
        if quorum.writeQuorum >= 2 { awaitQuorum(shard: shard, version: store.lastWriteVersion) }
        if let wal = log.wal {
            logOwnWrite(wal, shard: shard, version: store.lastWriteVersion, previous: previous) { filling in
                appendKeyState(key, hash: hash, store: store, to: filling)
            }
        } else {
            replicateKeyState(key, hash: hash, store: store, previous: previous)
        }
        return true
    }

    @inline(__always)
    func appendKeyState(_ key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore, to buffer: WireBuffer) {
        WALRecord.appendState(of: key, store.get(key, hash: hash, nowMs: now), deletedAt: store.lastWriteVersion,
                              shard: KeyHash.shard(of: hash, shardCount: shards.count), to: buffer)
    }

    /// Keeps the state `key` has before a write, so that the write can be
    /// undone if its batch fails (see `undoFailedWrites`).
    @inline(__always)
    func keepPreviousState(_ key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore) {
        appendKeyState(key, hash: hash, store: store, to: log.holding.undo)
    }

    /// Puts back what the writes of failed batches replaced, newest first,
    /// so memory matches the log again: a client told its write failed can
    /// retry it (an INCR is not applied twice). FLUSHALL is the exception:
    /// the flushed keys are not kept, so a failed FLUSHALL stays applied.
    func undoFailedWrites() {
        var undone = 0
        for hold in [log.holding] + log.holdsInFlight.reversed() {
            var records: [WALRecord] = []
            var rest = hold.undo.readableView
            while case .record(let record, let length) = WALRecord.decode(rest) {
                records.append(record)
                rest = UnsafeRawBufferPointer(rebasing: rest[length...])
            }
            for record in records.reversed() {
                guard record.shard < shards.count, let store = shards[record.shard] else { continue }
                noteUnloggedChange(shard: record.shard)
                let hash = KeyHash.hash(record.key)
                if record.operation == .set {
                    store.restore(record.key, hash: hash, value: record.value, expiryMs: record.expiryMs, nowMs: now,
                                  version: record.version)
                } else {
                    store.delete(record.key, hash: hash, nowMs: now)
                }
                undone += 1
            }
            hold.undo.clear()
        }
        if undone > 0 {
            logger.warning("undid the writes of failed write-ahead log batches in memory", metadata: [
                "reactor": "\(index)", "writes": "\(undone)",
            ])
        }
    }

    /// Records a FLUSHALL of `shard` (its own version: FLUSHALL is a write
    /// like any other) in the log and, with the same bytes, for its followers.
    func recordFlush(shard: Int, previous: EntryVersion) {
        if quorum.writeQuorum >= 2 { awaitQuorum(shard: shard, version: shards[shard]?.lastWriteVersion ?? .zero) }
        guard let wal = log.wal else {
            replicateFlush(shard: shard, previous: previous)
            return
        }
        let version = shards[shard]?.lastWriteVersion ?? .zero
        logOwnWrite(wal, shard: shard, version: version, previous: previous) { filling in
            WALRecord.append(to: filling, operation: .flushShard, shard: shard, version: version, expiryMs: 0,
                             key: WALRecord.noBytes, value: WALRecord.noBytes)
        }
    }

    /// Every write this node makes as holder goes to the log the same way:
    /// `encode` puts its one record into the batch filling; the shard's
    /// chain takes its version (`ReplayedCopy`), the reply waits for the
    /// batch, and followers get the same bytes. One place, so no write path
    /// can log without extending the chain.
    @inline(__always)
    func logOwnWrite(_ wal: WALWriter, shard: Int, version: EntryVersion, previous: EntryVersion,
                     _ encode: (WireBuffer) -> Void) {
        assert(wal.acceptsWrites, "records appended while the log refuses writes")
        let start = wal.filling.readableBytes
        encode(wal.filling)
        wal.noteRecordAppended()
        log.chains[shard].logged(version)
        log.replyAwaitsLog = true
        replicateLogged(from: start, shard: shard, previous: previous)
    }

    // MARK: - Holding replies

    /// Held reply layout in `BatchHold.replies`: [u8 kind][u8 wire][u16 source]
    /// [u32 connection index][u32 generation][u32 length][u64 slot sequence]
    /// [u16 origin node][u16 origin reactor][u32 shard][u64 ticket] (a reply
    /// bound for another node keeps its route), then the reply bytes.
    /// A `quorumTicket` has no bytes: its slot sequence is the ticket of a
    /// reply held for a write quorum too (ReactorQuorum.swift), told here
    /// when the batch is durable or failed.
    private static let heldHeaderSize = 40
    enum HeldKind: UInt8 { case localSlot = 1, forwardedReply = 2, quorumTicket = 3 }

    /// A reply produced in `bytes` for a local connection: straight to the
    /// client, or held when the command wrote a log record.
    @inline(__always)
    func deliverLocal(_ connection: Connection, _ bytes: WireBuffer) {
        if replica.justWroteShard >= 0 { noteLastWrite(connection) }
        if log.replyAwaitsLog {
            log.replyAwaitsLog = false
            let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
            hold(.localSlot, wire: connection.wire ?? .resp2, source: index, connectionIndex: connection.index,
                 generation: connection.generation, sequence: sequence, bytes.readableView)
        } else {
            withReply(connection) { $0.append(bytes.readableView) }
        }
    }

    /// A part's reply for an open slot of a local connection.
    @inline(__always)
    func fillLocal(_ connection: Connection, sequence: UInt64, _ bytes: UnsafeRawBufferPointer) {
        if replica.justWroteShard >= 0 { noteLastWrite(connection) }
        if log.replyAwaitsLog {
            log.replyAwaitsLog = false
            hold(.localSlot, wire: connection.wire ?? .resp2, source: index, connectionIndex: connection.index,
                 generation: connection.generation, sequence: sequence, bytes)
        } else {
            connection.replies.fill(sequence: sequence, with: bytes)
        }
    }

    /// The reply to a request another reactor forwarded.
    @inline(__always)
    func answerForwarded(_ reply: ForwardHeader, to source: Int, _ bytes: UnsafeRawBufferPointer) {
        replica.justWroteShard = -1  // the connection lives elsewhere: WAIT there does not see it
        if log.replyAwaitsLog {
            log.replyAwaitsLog = false
            hold(.forwardedReply, wire: reply.wire, source: source, connectionIndex: reply.connectionIndex,
                 generation: reply.connectionGeneration, sequence: reply.slotSequence, bytes, route: reply.route)
        } else {
            sendRecord(to: source, header: reply, payload: bytes)
        }
    }

    /// Holds a reply until what its command wrote is durable (the log) and
    /// at its write quorum (`quorum`), whichever of the two it waits for.
    /// Whether a write's reply may have to be held: for the log, or for
    /// the write quorum. When not, a command's reply is written in place.
    @inline(__always) var repliesMayBeHeld: Bool { log.wal != nil || quorum.writeQuorum >= 2 }

    @inline(__always)
    func noteLastWrite(_ connection: Connection) {
        connection.lastWriteShard = replica.justWroteShard
        connection.lastWriteVersion = replica.justWroteVersion
        replica.justWroteShard = -1
    }

    private func hold(_ kind: HeldKind, wire: WireKind, source: Int, connectionIndex: UInt32, generation: UInt32,
                      sequence: UInt64, _ bytes: UnsafeRawBufferPointer, route: ForwardRoute = .local) {
        if quorum.awaitsQuorum {
            holdForQuorum(HeldReply(kind: kind, wire: wire, source: source, connectionIndex: connectionIndex,
                                    generation: generation, sequence: sequence, route: route, bytes: [UInt8](bytes)))
        } else if let read = readQuorum.pending {
            readQuorum.pending = nil
            holdForReadQuorum(HeldReply(kind: kind, wire: wire, source: source, connectionIndex: connectionIndex,
                                        generation: generation, sequence: sequence, route: route, bytes: [UInt8](bytes)), read)
        } else {
            holdForLog(kind, wire: wire, source: source, connectionIndex: connectionIndex, generation: generation,
                       sequence: sequence, bytes, route: route)
        }
    }

    func holdForLog(_ kind: HeldKind, wire: WireKind, source: Int, connectionIndex: UInt32, generation: UInt32,
                    sequence: UInt64, _ bytes: UnsafeRawBufferPointer, route: ForwardRoute = .local) {
        let buffer = log.holding.replies
        let space = buffer.writableSpace(minimum: Self.heldHeaderSize + bytes.count)
        let base = space.baseAddress!
        base.storeBytes(of: kind.rawValue, toByteOffset: 0, as: UInt8.self)
        base.storeBytes(of: wire.rawValue, toByteOffset: 1, as: UInt8.self)
        base.storeBytes(of: UInt16(source), toByteOffset: 2, as: UInt16.self)
        base.storeBytes(of: connectionIndex, toByteOffset: 4, as: UInt32.self)
        base.storeBytes(of: generation, toByteOffset: 8, as: UInt32.self)
        base.storeBytes(of: UInt32(bytes.count), toByteOffset: 12, as: UInt32.self)
        base.storeBytes(of: sequence, toByteOffset: 16, as: UInt64.self)
        base.storeBytes(of: route.originNode, toByteOffset: 24, as: UInt16.self)
        base.storeBytes(of: route.originReactor, toByteOffset: 26, as: UInt16.self)
        base.storeBytes(of: route.shard, toByteOffset: 28, as: UInt32.self)
        base.storeBytes(of: route.ticket, toByteOffset: 32, as: UInt64.self)
        if bytes.count > 0 { (base + Self.heldHeaderSize).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        buffer.commitWrite(Self.heldHeaderSize + bytes.count)
    }

    /// Sends (or, after a failure, answers with an error) every reply in `buffer`.
    private func release(_ buffer: WireBuffer, failure: String?) {
        while !buffer.isEmpty {
            let view = buffer.readableView
            let base = view.baseAddress!
            let kind = HeldKind(rawValue: base.loadUnaligned(fromByteOffset: 0, as: UInt8.self))!
            let wire = WireKind(rawValue: base.loadUnaligned(fromByteOffset: 1, as: UInt8.self))!
            let source = Int(base.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            let connectionIndex = base.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            let generation = base.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            let length = Int(base.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
            let sequence = base.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
            var reply = UnsafeRawBufferPointer(start: base + Self.heldHeaderSize, count: length)
            if kind == .quorumTicket {
                logSettled(quorumTicket: sequence, failure: failure)
                buffer.consume(Self.heldHeaderSize + length)
                continue
            }
            if let failure {
                scratch.part.clear()
                writeHeldError(code: "ERR", Self.logFailureText(failure), wire: wire, originalReply: reply, into: scratch.part)
                reply = scratch.part.readableView
            }
            let route = ForwardRoute(originNode: base.loadUnaligned(fromByteOffset: 24, as: UInt16.self),
                                     originReactor: base.loadUnaligned(fromByteOffset: 26, as: UInt16.self),
                                     shard: base.loadUnaligned(fromByteOffset: 28, as: UInt32.self),
                                     ticket: base.loadUnaligned(fromByteOffset: 32, as: UInt64.self))
            deliverHeld(kind, wire: wire, source: source, connectionIndex: connectionIndex, generation: generation,
                        sequence: sequence, route: route, reply)
            buffer.consume(Self.heldHeaderSize + length)
        }
        buffer.clear()
        buffer.releaseIfIdle(keep: 1 << 20)
    }

    /// A held reply, finally due: into its connection's slot, or back to
    /// the reactor (and node) its request came from.
    func deliverHeld(_ kind: HeldKind, wire: WireKind, source: Int, connectionIndex: UInt32, generation: UInt32,
                     sequence: UInt64, route: ForwardRoute, _ reply: UnsafeRawBufferPointer) {
        switch kind {
        case .localSlot:
            let slot = Int(connectionIndex)
            if let connection = table.connection(slot: slot, generation: generation), !connection.isClosed {
                connection.replies.fill(sequence: sequence, with: reply)
                markDirty(connection)
            }
        case .forwardedReply:
            let header = ForwardHeader(kind: .reply, wire: wire, connectionIndex: connectionIndex,
                                       connectionGeneration: generation, slotSequence: sequence, payloadLength: reply.count,
                                       route: route)
            sendRecord(to: source, header: header, payload: reply)
        case .quorumTicket:
            assertionFailure("a quorum ticket carries no reply")
        }
    }

    static func logFailureText(_ reason: String) -> String {
        "write-ahead log write failed, the write is not durable and must be retried: " + reason.replacingNewlines()
    }

    /// An error in place of a held reply: RESP gets `code text`; a binary
    /// client gets an ERROR frame for the request's id with the same line,
    /// except that the generic code ERR is left out (the status says it).
    func writeHeldError(code: String, _ text: String, wire: WireKind, originalReply: UnsafeRawBufferPointer,
                        into out: WireBuffer) {
        switch wire {
        case .binary:
            // The request id sits at bytes 7..<15 of every binary response.
            let requestID = originalReply.count >= 15 ? UInt64(bigEndian: originalReply.loadUnaligned(fromByteOffset: 7, as: UInt64.self)) : 0
            BinaryResponseWriter.write(status: .error, requestID: requestID, errorText: code == "ERR" ? text : code + " " + text,
                                       into: out)
        case .resp2, .resp3:
            RESPWriter.error(string: code + " " + text, into: out)
        }
    }

    // MARK: - The loop's log steps

    /// End of an iteration: hand the records of this iteration to the kernel
    /// as one batch; its replies wait in `holdsInFlight` until it is durable.
    @inline(__always)
    func submitLogBatch() {
        guard let wal = log.wal else { return }
        // A snapshot starts its segment at a batch boundary; this is one.
        if log.snapshot.wanted { startSnapshot() }
        guard !wal.filling.isEmpty, wal.canSubmit || !wal.acceptsWrites else { return }
        if wal.submit() {
            log.holdsInFlight.append(log.holding)
            log.holding = log.spareHolds.popLast() ?? BatchHold()
            if !wal.completedInline.isEmpty {
                let events = wal.completedInline
                wal.completedInline.removeAll(keepingCapacity: true)
                for event in events { handle(logEvent: event) }
            }
        } else if !wal.acceptsWrites {
            // The log failed before the batch could go: its writes are not durable.
            undoFailedWrites()
            release(log.holding.replies, failure: wal.failure ?? "write-ahead log unavailable")
        }
    }

    /// Replies of the oldest batch in flight: sent, or answered with an error.
    private func releaseOldestBatch(failure: String?) {
        guard !log.holdsInFlight.isEmpty else {
            assertionFailure("a batch completed with no replies held for it")
            return
        }
        let hold = log.holdsInFlight.removeFirst()
        release(hold.replies, failure: failure)
        // Durable, or already undone: what its writes replaced is not needed.
        hold.undo.clear()
        hold.undo.releaseIfIdle(keep: 1 << 20)
        if log.spareHolds.count < WALWriter.maxBatchesInFlight { log.spareHolds.append(hold) }
    }

    /// The io_uring eventfd fired: process what completed.
    func handleLogCompletions() {
        guard let wal = log.wal else { return }
        log.events.removeAll(keepingCapacity: true)
        wal.reap(into: &log.events)
        for event in log.events { handle(logEvent: event) }
    }

    private func handle(logEvent event: WALWriter.Event) {
        guard let wal = log.wal else { return }
        switch event {
        case .batchDurable:
            releaseOldestBatch(failure: nil)
        case .batchFailed(let reason):
            counters.walErrors &+= 1
            log.nextProbeMs = monotonicMs + 1000
            // Every batch in flight and the one filling failed together;
            // the first of their events undoes them all.
            undoFailedWrites()
            releaseOldestBatch(failure: reason)
            // The log dropped the records filled meanwhile, too.
            release(log.holding.replies, failure: reason)
            if wal.isSnapshotting { wal.cancelSnapshot(reason: "the log failed") }
        case .snapshotChunkWritten:
            continueSnapshot()
        case .snapshotFailed:
            counters.walErrors &+= 1
            log.snapshot.nextAttemptMs = monotonicMs + 10_000
            // Retried after the pause above; a stop gives up on it rather
            // than wait on a failing disk until systemd kills the process.
            if log.snapshot.runningForWins && node.state != .draining { log.snapshot.owedForWins = true }
            log.snapshot.runningForWins = false
        case .snapshotCompleted(let entries, let removedBytes):
            counters.walSnapshots &+= 1
            log.snapshot.runningForWins = false
            counters.walTruncateServed = log.snapshot.servesRequest
            logger.info("snapshot written; covered log segments removed", metadata: [
                "reactor": "\(index)", "entries": "\(entries)", "bytes_removed": "\(removedBytes)",
            ])
        }
    }

    /// True when the log cannot give the copy back whole after a restart:
    /// it changed in ways the log does not hold (part of a stream, records
    /// applied as a follower) since the last snapshot, or the chain of
    /// logged writes that would prove it whole is broken or proves nothing
    /// yet (`ReplayedCopy`: a shard no write reached is proven whole only
    /// by a snapshot taken while this node holds it).
    func logLacksCopy(of shard: Int) -> Bool {
        guard log.wal != nil, log.unloggedSinceSnapshot.indices.contains(shard) else { return false }
        return log.unloggedSinceSnapshot[shard] || !log.chains[shard].isWhole
    }

    /// True while the log neither proves the copy whole nor knows it to have
    /// a hole: nothing logged since the shard's first write, no snapshot
    /// head (a shard no write reached, until a snapshot while held).
    func logProvesNothing(of shard: Int) -> Bool {
        guard log.wal != nil, log.chains.indices.contains(shard) else { return false }
        return !log.chains[shard].isWhole && !log.chains[shard].isBroken
    }

    /// This node now holds `won`, whose copies its log does not hold. After
    /// a full cluster recovery the newest claim wins each shard, and that is
    /// its last holder's: if its log held only its own writes, the writes
    /// acknowledged under an earlier holder (logged there alone) would be
    /// streamed away. A snapshot writes the copy as it stands, with every
    /// such write; the writes made from here on are logged as they come.
    /// A snapshot running now started before the win, so the next one is
    /// asked for. Until it is written, a full recovery can still lose them.
    func snapshotAfterWinning(_ won: [Int]) {
        guard let wal = log.wal, wal.acceptsWrites else { return }
        log.snapshot.wanted = true
        log.snapshot.owedForWins = true
        logger.info("write-ahead log: snapshot asked for: this node won shards whose copy its log does not hold", metadata: [
            "reactor": "\(index)", "shards": "\(won.count)", "first": "\(won.prefix(8).map(String.init).joined(separator: ","))",
        ])
    }

    /// Maintenance: retry a failed disk, and start a snapshot when the log
    /// since the last one has grown past what replay should have to read,
    /// or when an operator asked for one.
    func logMaintenance() {
        guard let wal = log.wal else { return }
        if !wal.acceptsWrites {
            if monotonicMs >= log.nextProbeMs {
                log.nextProbeMs = monotonicMs + 1000
                wal.probeRecovery(now: monotonicMs)
            }
            return
        }
        let requested = node.walTruncateRequests.load(ordering: .acquiring)
        if requested > log.snapshot.requestsSeen {
            // A snapshot already running started before the request: the
            // request is served by the next one, which starts after it.
            log.snapshot.requestsSeen = requested
            log.snapshot.wanted = true
        }
        let threshold = max(4 * node.config.walMaxSizeMB * 1024 * 1024, 2 * shards.ledger.usedBytes)
        if wal.bytesSinceSnapshot > threshold && monotonicMs >= log.snapshot.nextAttemptMs && !wal.isSnapshotting {
            log.snapshot.wanted = true
        }
        if log.snapshot.owedForWins && monotonicMs >= log.snapshot.nextAttemptMs { log.snapshot.wanted = true }
        if log.snapshot.wanted { startSnapshot() }
    }

    private func startSnapshot() {
        guard let wal = log.wal, !wal.isSnapshotting else { return }
        guard wal.beginSnapshot() else {
            if !wal.acceptsWrites { log.snapshot.wanted = false }
            return
        }
        log.snapshot.wanted = false
        // The segment this snapshot starts takes every write from here on
        // (the batch being filled included): the heads as of now are what
        // the replay continues from.
        var proof = SnapshotProof()
        for shard in shards.ownedIndices {
            guard let store = shards[shard] else { continue }
            if leases.enforced && leases.allowsWrite(shard, nowMs: monotonicMs) {
                // The holder's copy is the shard's: the lease machine treats
                // a winner's copy as whole, and the snapshot writes all of it,
                // so the log proves it whole through its newest write, and
                // missing no write of a term up to the one held. Not whole
                // through a version at the held term: that would be the claim
                // after a restart, which no write carries, and the followers
                // would stay behind it until a new write. Its own next write,
                // at the held term, continues the chain.
                // A copy with no version at all is proven whole through
                // nothing if no write ever reached it: not after an unlogged
                // change (a stream begun into the copy leaves it without a
                // version until it completes).
                let neverWritten = store.lastWriteVersion == .zero && store.count == 0 && !log.chains[shard].isBroken
                if store.lastWriteVersion > .zero || neverWritten {
                    let held = shard < leases.terms.count ? leases.terms[shard] : 0
                    log.chains[shard] = ReplayedCopy(provenThrough: store.lastWriteVersion, heldTerm: held)
                }
            }
            let chain = log.chains[shard]
            guard chain.isWhole, store.lastWriteVersion <= chain.head else { continue }
            proof.heads[shard] = chain.head
            if chain.wholeThroughTerm > chain.head.term { proof.heldTerms[shard] = chain.wholeThroughTerm }
        }
        wal.snapshotProof = proof
        // Every copy is walked from here, each change the log lacks so far included.
        for shard in shards.ownedIndices where shard < log.unloggedSinceSnapshot.count { log.unloggedSinceSnapshot[shard] = false }
        log.snapshot.runningForWins = log.snapshot.owedForWins
        log.snapshot.owedForWins = false
        log.snapshot.servesRequest = log.snapshot.requestsSeen
        log.snapshot.shardPosition = 0
        log.snapshot.cursor = 0
        continueSnapshot()
    }

    /// Serializes the next chunk of entries (about 1 MiB) and writes it.
    /// Entries are copied out at once, so later writes never see a torn
    /// value; a key written after the scan passed it is in the new segment.
    func continueSnapshot() {
        guard let wal = log.wal, wal.isSnapshotting, !wal.snapshotChunkInFlight else { return }
        let buffer = wal.snapshotBuffer
        let owned = shards.ownedIndices
        while buffer.readableBytes < (1 << 20) && log.snapshot.shardPosition < owned.count {
            let shard = owned[log.snapshot.shardPosition]
            log.snapshot.cursor = shards[shard]!.scan(cursor: log.snapshot.cursor, count: 256, nowMs: now) { entry in
                WALRecord.appendEntry(entry, shard: shard, to: buffer)
                wal.noteSnapshotEntry()
            }
            if log.snapshot.cursor == 0 { log.snapshot.shardPosition += 1 }
        }
        wal.writeSnapshotChunk(last: log.snapshot.shardPosition == owned.count)
    }

    /// Said once per stop that waits for the snapshot owed for wins, so
    /// that a slower stop has its reason in the journal.
    func noteSnapshotOwedAtStop() {
        guard owesSnapshotForWins, !log.snapshot.toldStopWaits else { return }
        log.snapshot.toldStopWaits = true
        logger.notice("stopping: writing the snapshot owed for shards this node won before the process exits", metadata: [
            "reactor": "\(index)", "bytes": "\(shards.ledger.usedBytes)",
        ])
    }

    /// A snapshot is owed for shards won (`SnapshotProgress.owedForWins`),
    /// or is being written, while the disk takes writes.
    var owesSnapshotForWins: Bool {
        guard let wal = log.wal, wal.acceptsWrites else { return false }
        return log.snapshot.owedForWins || (wal.isSnapshotting && log.snapshot.runningForWins)
    }

    /// Nothing owed to the log: no batch on its way, and no snapshot owed
    /// for shards won; a stop waits for it (logMaintenance starts it).
    var logIsSettled: Bool {
        guard let wal = log.wal else { return true }
        return !wal.isBatchInFlight && wal.filling.isEmpty && log.holding.replies.isEmpty && log.holdsInFlight.isEmpty
            && !owesSnapshotForWins
    }
}

extension String {
    func replacingNewlines() -> String {
        String(map { $0 == "\r" || $0 == "\n" ? " " : $0 })
    }
}

/// What the log replay left of a reactor's shards (or, merged, a node's),
/// told to the lease machine before it votes or campaigns.
struct ReplayedShards {
    /// Per shard with a replayed write, the newest version the replay left:
    /// what the node holds for the election restriction.
    var versions: [Int: EntryVersion] = [:]
    /// The shards whose copy the replay proved whole (`ReplayedCopy`).
    var whole: Set<Int> = []

    mutating func merge(_ other: ReplayedShards) {
        versions.merge(other.versions) { max($0, $1) }
        whole.formUnion(other.whole)
    }
}
