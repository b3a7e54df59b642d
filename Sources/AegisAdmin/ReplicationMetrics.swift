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
            counter("aegis_replication_follower_resets", "Followers that acknowledged less than before (restarted empty) and were sent their shards' records again.", replication.followerResets),
            counter("aegis_replication_cutoffs", "Links to followers lost or overflowing (a slow follower): what they had not acknowledged is sent again.", replication.cutOffs),
            counter("aegis_replication_streams_needed", "(shard, follower) pairs whose missing records left the recent-writes tail; shard streaming is not built yet.", replication.streamsNeeded),
            gauge("aegis_replication_shards", "Shards this node is primary for that have followers.", replication.replicatedShards),
            Family(name: "aegis_replication_lag_records", kind: .gauge,
                   help: "Writes a follower has not acknowledged, summed over the shards this node is primary for.",
                   samples: lags.map { Sample(labels: [("follower", $0.follower)], value: String($0.records)) }),
            Family(name: "aegis_replication_lag_ms", kind: .gauge,
                   help: "Age of the oldest write a follower has not acknowledged, worst over the shards this node is primary for.",
                   samples: lags.map { Sample(labels: [("follower", $0.follower)], value: String($0.ms)) }),
        ]
    }
}
