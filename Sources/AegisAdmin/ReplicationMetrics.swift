import AegisServer

extension MetricsExposition {
    /// Replication (issue 12): what this node sent as a primary, what it
    /// received as a follower, and each follower's lag summed over the
    /// shards (records) and at its worst (ms).
    static func replicationFamilies(_ replication: ReplicationSnapshot) -> [Family] {
        let lags = replication.lagByFollower
        return [
            counter("aegis_replication_records_sent", "Replication records this node sent to followers (catch-up resends included).", replication.recordsSent),
            counter("aegis_replication_sent_bytes", "Bytes of replication records this node sent to followers.", replication.bytesSent),
            counter("aegis_replication_records_received", "Replication records this node received as a follower.", replication.recordsReceived),
            counter("aegis_replication_acks", "Acknowledgements this node received from its followers.", replication.acksReceived),
            counter("aegis_replication_acks_refused", "Acknowledgements refused: from a node that is not a follower of the shard, or for records never sent to it.", replication.acksRefused),
            counter("aegis_read_probes_asked_again", "Probes of reads at read_quorum >= 2 sent again to another replica: the link to the one asked first broke before it answered.", replication.readProbesAskedAgain),
            counter("aegis_replication_refused_not_holder", "Replication records and shard-stream slices this node refused as a follower: their sender is not the shard's lease holder as this node knows it.", replication.refusedNotHolder),
            counter("aegis_replication_follower_resets", "Followers that acknowledged less than before (restarted empty) and were sent their shards' records again.", replication.followerResets),
            counter("aegis_replication_catch_up_reminders", "Acknowledgements this node repeated to a shard's holder as a follower: its copy was below the holder's claim and no records came for a second (after a restart, into a shard nobody writes).", replication.catchUpReminders),
            counter("aegis_replication_cutoffs", "Links to followers lost or overflowing (a slow follower): what they had not acknowledged is sent again.", replication.cutOffs),
            counter("aegis_replication_streams_needed", "(shard, follower) pairs whose missing records left the recent-writes tail (each then gets the shard streamed).", replication.streamsNeeded),
            counter("aegis_replication_streams_started", "Shard streams this node started as a primary.", replication.streamsStarted),
            counter("aegis_replication_streams_finished", "Shard streams whose every slice the follower applied.", replication.streamsFinished),
            counter("aegis_replication_streams_aborted", "Shard streams given up: the follower's link broke, the shard changed hands, or 10 s without progress.", replication.streamsAborted),
            counter("aegis_replication_stream_bytes", "Bytes of shard-stream slices this node sent to followers.", replication.streamBytes),
            gauge("aegis_replication_streams_running", "Shard streams running from this node now.", replication.streamsRunning),
            Family(name: "aegis_replication_batches", kind: .counter,
                   help: "Batches of new records that joined a follower's frame, by why: replication_batch_size reached (full) or replication_batch_timeout passed (timeout).",
                   samples: [Sample(suffix: "_total", labels: [("reason", "full")], value: String(replication.batchesFull)),
                             Sample(suffix: "_total", labels: [("reason", "timeout")], value: String(replication.batchesTimedOut))]),
            gauge("aegis_replication_shards", "Shards this node is primary for that have followers.", replication.replicatedShards),
            Family(name: "aegis_replication_lag_records", kind: .gauge,
                   help: "Writes a follower has not acknowledged, summed over the shards this node is primary for.",
                   samples: lags.map { Sample(labels: [("follower", $0.follower)], value: String($0.records)) }),
            // Seconds, as Prometheus names units (promtool refuses `_ms`).
            Family(name: "aegis_replication_lag_seconds", kind: .gauge,
                   help: "Age of the oldest write a follower has not acknowledged, worst over the shards this node is primary for.",
                   samples: lags.map { Sample(labels: [("follower", $0.follower)], value: String(Double($0.ms) / 1_000)) }),
        ]
    }

    /// Shards moving to and from this node (issue 13's observability):
    /// streams either way, their bytes, entries and rate, and the catch-up
    /// (a restart's, a refill's) running or last run.
    static func moveFamilies(_ replication: ReplicationSnapshot, catchUp: CatchUpSnapshot, totals: ReactorStatsSnapshot) -> [Family] {
        [
            gauge("aegis_shards_moving", "Shard streams running to or from this node now.", replication.shardsMoving),
            gauge("aegis_shard_move_rate_bytes_per_second", "Bytes per second of the shard streams running through this node, either way, since the moves running now began (0 when none runs).", replication.moveRateBytesPerSecond),
            counter("aegis_replication_stream_received_bytes", "Bytes of shard-stream slices this node received as a follower.", replication.streamBytesReceived),
            counter("aegis_replication_streams_received", "Shard streams this node received whole as a follower (the last slice applied).", replication.streamsReceived),
            counter("aegis_replication_streams_received_abandoned", "Shard streams this node was receiving that stopped before their last slice: restarted by the primary, or no slice for 10 s.", replication.streamsReceivedAbandoned),
            gauge("aegis_replication_streams_receiving", "Shard streams this node is receiving now.", replication.streamsReceiving),
            counter("aegis_replication_stream_entries_sent", "Entries of shard streams this node walked and sent as a primary.", totals.streamEntriesSent),
            counter("aegis_replication_stream_entries_applied", "Entries of shard streams this node applied as a follower.", totals.streamEntriesApplied),
            counter("aegis_replication_received_bytes", "Bytes this node received as a follower: replicated records and shard-stream slices.", replication.bytesReceived),
            gauge("aegis_catch_up_running", "1 while this node is catching up with the holders of the shards it replicates (after a start, a refill, or falling out of step).", catchUp.running ? 1 : 0),
            gauge("aegis_catch_up_received_bytes", "Bytes received as a follower during the catch-up running now, else the last one.", catchUp.bytes),
            Family(name: "aegis_catch_up_seconds", kind: .gauge, help: "How long the catch-up running now has run, else how long the last one took.",
                   samples: [Sample(value: String(Double(catchUp.ms) / 1_000))]),
        ]
    }

    /// Requests that waited for their shard's lease (a hand-off, an
    /// election, a restarted node's first renewal) instead of a TRYAGAIN.
    static func parkingFamilies(_ totals: ReactorStatsSnapshot) -> [Family] {
        [
            counter("aegis_lease_requests_parked", "Requests that waited on this node for their shard's lease (a hand-off, an election, a restart's first renewal from the holder) instead of being refused; each then ran here or went to the shard's new primary.", totals.requestsParked),
            counter("aegis_lease_parked_timed_out", "Parked requests whose shard had no lease here when their wait ended (lease_duration, at most write_timeout): writes among them were refused with TRYAGAIN.", totals.parkedTimedOut),
            gauge("aegis_lease_parked_requests", "Requests waiting now for their shard's lease.", totals.parkedWaiting),
        ]
    }

    /// Shard leases: elections, terms, writes refused, reads possibly stale.
    static func leaseFamilies(_ leases: LeaseSnapshot, refusals: Int) -> [Family] {
        let pauses = histogramSamples(counts: leases.handOffPauseBuckets,
                                      bounds: LeaseSnapshot.handOffPauseBucketsMs.map { formatSeconds(nanoseconds: Int($0 * 1_000_000)) },
                                      sum: String(Double(leases.handOffPauseSumNs) / 1e9))
        return [
            counter("aegis_lease_elections_started", "Campaigns this node started for a shard's lease (each at term + 1).", leases.electionsStarted),
            counter("aegis_lease_elections_won", "Campaigns this node won: it held the shard's lease at the new term.", leases.electionsWon),
            counter("aegis_lease_elections_lost", "Campaigns that ended without the lease: a higher term appeared, or this node campaigned again.", leases.electionsLost),
            counter("aegis_lease_holed_candidates_refused", "Campaigns this node refused because the candidate restarted and its copy may have a hole (not refilled since) while this node's copy is whole, or a whole replica claiming at least as much is campaigning.", leases.holedCandidatesRefused),
            counter("aegis_lease_term_changes", "Times a shard's term rose on this node (campaigns, votes, terms learned from peers).", leases.termChanges),
            counter("aegis_lease_write_refusals", "Writes refused (TRYAGAIN) because this node did not hold the shard's lease.", refusals),
            gauge("aegis_lease_shards_held", "Shards whose lease this node holds now.", leases.held),
            gauge("aegis_lease_blank_shards", "Shards this node has had no complete copy of since it started with an empty data_dir (a first start, or a data_dir removed whole): its votes for them count only beside a majority of other grants or where every replica grants.", leases.blank),
            gauge("aegis_lease_reads_possibly_stale_shards", "Shards this node answers reads for as their primary without holding their lease: those reads may be stale.", leases.readsPossiblyStaleShards),
            gauge("aegis_lease_enforced", "1 once this node is in a cluster (seeds set or a peer seen) with replication_factor > 1 and no member runs a release before leases: writes then need the shard's lease.", leases.enforced ? 1 : 0),
            gauge("aegis_lease_shards_behind", "Shards this node replicates whose copy here lacks writes their holder claimed at its last renewal; /health says ok only at 0.", leases.standing.behind),
            gauge("aegis_lease_shards_without_holder", "Shards this node replicates with no lease holder it knows of; /health says ok only at 0.", leases.standing.withoutHolder),
            gauge("aegis_lease_members_predating", "Members (not left) known to run a release before leases; while above 0 leases are not enforced.", leases.membersPredatingLeases.count),
            counter("aegis_lease_hand_offs_started", "Shards this node, holding their lease, started handing to another replica (a stopping node hands off every shard it holds).", leases.handOffsStarted),
            Family(name: "aegis_lease_hand_offs_ended", kind: .counter,
                   help: "Hand-offs by how they ended: released (the target took the lease), aborted (given up, the lease kept), lost (the lease ended otherwise).",
                   samples: leases.handOffsEnded.sorted { $0.key < $1.key }.map { Sample(suffix: "_total", labels: [("outcome", $0.key)], value: String($0.value)) }),
            Family(name: "aegis_lease_hand_off_pause_seconds", kind: .histogram,
                   help: "Time a released hand-off kept its shard's writes refused here: from the freeze to the release.", samples: pauses),
        ]
    }

    /// Write quorums (write_quorum >= 2): writes whose reply waited, how
    /// they ended, and how long the ones that reached W waited.
    static func quorumFamilies(_ quorum: QuorumCounters) -> [Family] {
        let samples = histogramSamples(counts: quorum.waitBuckets,
                                       bounds: QuorumCounters.waitBucketsMs.map { formatSeconds(nanoseconds: Int($0) * 1_000_000) },
                                       sum: String(Double(quorum.waitSumNs) / 1e9))
        return [
            counter("aegis_quorum_waits", "Writes whose reply waited for write_quorum replicas.", quorum.waits),
            counter("aegis_quorum_timeouts", "Writes answered TIMEOUT: not at write_quorum within write_timeout (they may have been applied).", quorum.timeouts),
            counter("aegis_quorum_unreachable", "Writes answered NOREPLICAS at once: the shard map gives the shard fewer than write_quorum replicas (applied here only).", quorum.unreachable),
            counter("aegis_quorum_primary_moved", "Writes waiting for write_quorum answered TRYAGAIN at once: their shard's primary moved to another node (they may have been applied).", quorum.primaryMoved),
            counter("aegis_read_quorum_waits", "Reads of one key on this node's shards whose reply waited for read_quorum replicas.", quorum.readWaits),
            counter("aegis_read_quorum_timeouts", "Reads of one key answered TRYAGAIN: fewer than read_quorum replicas answered within write_timeout, could be asked, or could be read here after the shard moved.", quorum.readTimeouts),
            counter("aegis_read_quorum_unreachable", "Reads of one key answered NOREPLICAS at once: the shard map gives the shard fewer than read_quorum replicas.", quorum.readUnreachable),
            counter("aegis_read_repairs_sent", "Records sent by reads at read_quorum to replicas that answered an older state of the key.", quorum.readRepairsSent),
            counter("aegis_read_repairs_applied", "Read repairs that changed a key here (as a follower, or as a primary older than a follower).", quorum.readRepairsApplied),
            Family(name: "aegis_quorum_wait_seconds", kind: .histogram,
                   help: "Time a write's reply waited for write_quorum replicas, for the writes that reached it.", samples: samples),
        ]
    }
}
