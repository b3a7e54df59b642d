import AegisStore
import CSupport

/// The loop's periodic work, once per maintenance interval: resuming
/// accepts, closing silent refusals, the expiry sweep, the log's
/// maintenance, connection timeouts; and publishing this reactor's
/// counters for INFO and metrics (schedule in LoopSchedule.swift).
extension Reactor {
    func maintenance() {
        let interval = max(Int64(node.config.maintenanceInterval.milliseconds), 10)
        // The first tick has no due time to be late against.
        if schedule.nextMaintenanceMs > 0 {
            node.reactorLag[index].record(lagMs: max(0, monotonicMs - schedule.nextMaintenanceMs))
        }
        schedule.maintenanceDue = false
        schedule.nextMaintenanceMs = monotonicMs + interval
        resumeAcceptingIfPaused()
        closeSilentRefusals()
        sweepExpired()
        dropTombstonesNobodyNeeds()
        logMaintenance()
        publishCommandStats()
        answerDueWaits()
        answerDueAuth()
        if monotonicMs >= schedule.nextTimeoutCheckMs {
            schedule.nextTimeoutCheckMs = monotonicMs + 1000
            enforceTimeouts()
        }
    }

    /// Redis-style active expiry: a bounded slice of the table per tick, in
    /// rotation over this reactor's shards.
    private func sweepExpired() {
        let owned = shards.ownedIndices
        guard !owned.isEmpty else { return }
        var budget = 8192
        var visited = 0
        while budget > 0 && visited < owned.count {
            let shard = shards[owned[schedule.sweepShardCursor]]!
            counters.expired &+= shard.expireSweep(nowMs: now, maxSlots: 256)
            budget -= 256
            visited += 1
            schedule.sweepShardCursor = (schedule.sweepShardCursor + 1) % owned.count
        }
    }

    private func enforceTimeouts() {
        let runtime = node.runtime
        let readMs = runtime.readTimeoutMs.load(ordering: .relaxed)
        let writeMs = runtime.writeTimeoutMs.load(ordering: .relaxed)
        let idleMs = runtime.idleTimeoutMs.load(ordering: .relaxed)
        let authMs = node.clientAuth.tokenRequired ? node.clientAuth.authTimeoutMs : 0
        let now = monotonicMs  // the connections' times are monotonic
        let handshakeMs = node.tls == nil ? 0 : handshakeLimitMs(idleMs: idleMs)
        for case let connection? in table.connections {
            if handshakeMs > 0 && closeIfHandshakeStalled(connection, limitMs: handshakeMs, now: now) { continue }
            if closeIfAuthTimedOut(connection, authTimeoutMs: authMs, now: now) { continue }
            if readMs > 0 && connection.partialSinceMs != 0 && now - connection.partialSinceMs > readMs {
                logger.debug("closing connection: read timeout", metadata: ["client": "\(connection.clientID)"])
                close(connection)
            } else if writeMs > 0 && connection.writeBlockedSinceMs != 0 && now - connection.writeBlockedSinceMs > writeMs {
                logger.debug("closing connection: write timeout", metadata: ["client": "\(connection.clientID)"])
                close(connection)
            } else if idleMs > 0 && connection.replies.isEmpty && connection.output.isEmpty && now - connection.lastActivityMs > idleMs {
                close(connection)
            }
        }
    }

    func publishStats() {
        var items = 0
        var replicaItems = 0
        // Items as DBSIZE counts them: the shards this node is primary for. The
        // copies it holds as a follower take memory too (counted below) and
        // are counted apart, so an operator can see a restarted node refilled.
        for shardIndex in shards.ownedIndices {
            if routes.isPrimaryHere(shardIndex) { items += shards[shardIndex]!.count } else { replicaItems += shards[shardIndex]!.count }
        }
        counters.items = items
        counters.parkedWaiting = parked.queue.count
        counters.replicaItems = replicaItems
        let ledger = shards.ledger
        ledger.collectLazyFree()
        counters.usedMemoryBytes = ledger.usedBytes
        counters.clientBufferBytes = buffers.allBytes
        if ledger.clientBufferBytes != buffers.allBytes { ledger.clientBufferBytes = buffers.allBytes }
        counters.lazyFreePendingObjects = ledger.lazyFreePendingEntries
        counters.evictions = ledger.evictions
        counters.interconnectBytes = outboundMemoryBytes
        if let wal = log.wal {
            counters.walBatches = wal.batchesCommitted
            counters.walBytes = wal.bytesCommitted
            counters.walBatchInFlight = wal.batchesInFlight
            counters.walRefusingWrites = wal.acceptsWrites ? 0 : 1
        }
        node.stats[index].publish(counters)
        refreshRateLimit()
    }
}
