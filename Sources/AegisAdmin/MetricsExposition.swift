import AegisCluster
import AegisServer
import CSupport

/// The /metrics document in one of three shapes, chosen by the Accept header.
///
/// `plain` is for people and shell scripts: one line per sample, no
/// `# HELP` / `# TYPE` lines, so the runbook's
/// `curl -s .../metrics | grep aegis_cache_size_bytes | awk '{print $2}'`
/// prints exactly one number (no other metric name contains one of the
/// names the runbook greps for). A scraper that names the Prometheus text
/// format or OpenMetrics in its Accept header gets the metadata too.
enum MetricsFormat: Equatable {
    case plain
    case prometheus
    case openMetrics

    static func negotiate(accept: String?) -> MetricsFormat {
        guard let accept = accept?.lowercased() else { return .plain }
        var best: (format: MetricsFormat, quality: Double)? = nil
        for part in accept.split(separator: ",") {
            let parameters = part.split(separator: ";").map { $0.trimmingSpaces }
            guard let mediaType = parameters.first else { continue }
            var quality = 1.0
            var version: String? = nil
            for parameter in parameters.dropFirst() {
                if parameter.hasPrefix("q="), let q = Double(parameter.dropFirst(2)) { quality = q }
                if parameter.hasPrefix("version=") { version = String(parameter.dropFirst(8)) }
            }
            let format: MetricsFormat
            if mediaType == "application/openmetrics-text" {
                format = .openMetrics
            } else if mediaType == "text/plain" && version == "0.0.4" {
                // A bare text/plain (what browsers and curl -H may send) is not
                // a scraper asking for metadata; Prometheus always adds version=0.0.4.
                format = .prometheus
            } else {
                continue
            }
            if quality > 0 && (best == nil || quality > best!.quality) { best = (format, quality) }
        }
        return best?.format ?? .plain
    }

    var contentType: String {
        switch self {
        case .plain, .prometheus: return "text/plain; version=0.0.4; charset=utf-8"
        case .openMetrics: return "application/openmetrics-text; version=1.0.0; charset=utf-8"
        }
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}

/// Renders the node's metrics. Every figure is summed over the reactors'
/// published counters at scrape time; nothing here touches a reactor.
struct MetricsExposition {
    enum Kind: String { case gauge, counter, histogram }

    struct Sample {
        var suffix: String = ""
        var labels: [(String, String)] = []
        var value: String
    }

    struct Family {
        var name: String
        var kind: Kind
        var help: String
        var samples: [Sample]
        /// Left out of the plain shape when a runbook grep for a shorter
        /// name would also match this one (grep aegis_cluster_members must
        /// print one number); scrapers still get it.
        var scrapersOnly = false
    }

    static let bucketLabels: [String] = CommandMetricsLayout.bucketBoundsNs.map { formatSeconds(nanoseconds: Int($0)) } + ["+Inf"]

    static func formatSeconds(nanoseconds: Int) -> String {
        // Exact decimal text for the bucket bounds (Double's description
        // would print 5e-05); the sum may be any value, plain Double text is fine there.
        var digits = String(nanoseconds)
        if digits.count <= 9 { digits = String(repeating: "0", count: 10 - digits.count) + digits }
        var whole = String(digits.dropLast(9))
        if whole.isEmpty { whole = "0" }
        var fraction = String(digits.suffix(9))
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return fraction.isEmpty ? whole : whole + "." + fraction
    }

    /// Requests forwarded, `peer="local"` for the hop between this node's
    /// reactors and a node id for requests sent to that node; errors by
    /// reason; the node-to-node round trip as a histogram; requests other
    /// nodes forwarded here that this node refused as not its shard's
    /// primary (and of those, the ones at the hop limit), and those it
    /// passed on to the holder it knows.
    static func forwardingFamilies(_ forwarding: ForwardingSnapshot, reactorCrossings: Int, notOwner: Int, relayed: Int, hopLimit: Int,
                                   readsFromCopyServed: Int, readsFromCopyRefused: Int, readsFromCopyAtHolder: Int) -> [Family] {
        var requests = [Sample(suffix: "_total", labels: [("peer", "local")], value: String(reactorCrossings))]
        for (peer, count) in forwarding.forwardedByPeer.sorted(by: { $0.key < $1.key }) {
            requests.append(Sample(suffix: "_total", labels: [("peer", peer)], value: String(count)))
        }
        let reasons = ["link_down", "timeout", "breaker_open", "too_large", "no_address", "no_map", "stopping", "peer_stopping"]
        let errors = reasons.map { Sample(suffix: "_total", labels: [("reason", $0)], value: String(forwarding.errorsByReason[$0] ?? 0)) }
        var latency: [Sample] = []
        for (bound, count) in zip(forwarding.latencyBoundsSeconds, forwarding.latencyCumulative) {
            latency.append(Sample(suffix: "_bucket", labels: [("le", String(bound))], value: String(count)))
        }
        latency.append(Sample(suffix: "_bucket", labels: [("le", "+Inf")], value: String(forwarding.latencyCount)))
        latency.append(Sample(suffix: "_sum", value: String(forwarding.latencySumSeconds)))
        latency.append(Sample(suffix: "_count", value: String(forwarding.latencyCount)))
        return [
            Family(name: "aegis_forwarded_requests", kind: .counter,
                   help: "Requests forwarded: peer=\"local\" between this node's reactors (connection's reactor to key's reactor), else to that node (its primary).",
                   samples: requests),
            Family(name: "aegis_forward_errors", kind: .counter,
                   help: "Requests to another node answered with an error instead of its reply, by reason.", samples: errors),
            Family(name: "aegis_forward_latency_seconds", kind: .histogram,
                   help: "Round trip of a request forwarded to another node, from this node's cluster loop sending it to the reply's arrival.",
                   samples: latency),
            counter("aegis_forward_not_owner",
                    "Requests another node forwarded here for a shard this node is not primary for in its own view, answered TRYAGAIN (RESP) or REDIRECT (binary).",
                    notOwner),
            counter("aegis_forward_relayed",
                    "Requests another node forwarded here for a shard another node holds in this node's view, passed on to that holder (the forwarding node's view was behind).",
                    relayed),
            counter("aegis_forward_hop_limit",
                    "Of aegis_forward_not_owner: requests this node would have passed on to the holder it knows, refused because they had been passed on twice already.",
                    hopLimit),
            Family(name: "aegis_forward_reads_to_replica", kind: .counter,
                   help: "One-key reads whose primary this node could not reach (its link broke or could not be opened, or its breaker is open), sent to a replica's copy instead of failing: this node's own (replica=\"self\") or another follower's (replica=\"peer\"). Possibly stale.",
                   samples: [("self", forwarding.readsToOwnCopy), ("peer", forwarding.readsToPeerCopy)].map {
                       Sample(suffix: "_total", labels: [("replica", $0.0)], value: String($0.1))
                   }),
            Family(name: "aegis_reads_from_copy", kind: .counter,
                   help: "Reads sent here (by this node or another) because their shard's primary could not be reached: answered from this node's copy as a follower, refused with TRYAGAIN as it held no complete copy, or answered as the shard's holder (result=\"holder\": this node won the shard's lease while the sender still named the unreachable primary).",
                   samples: [("served", readsFromCopyServed), ("refused", readsFromCopyRefused), ("holder", readsFromCopyAtHolder)].map {
                       Sample(suffix: "_total", labels: [("result", $0.0)], value: String($0.1))
                   }),
            Family(name: "aegis_peer_farewells", kind: .counter,
                   help: "Farewells between a stopping node and its peers before it closes its links: sent by this node as it stopped, received from stopping peers (sent nothing more after), and acknowledged to this node.",
                   samples: [("sent", forwarding.farewellsSent), ("received", forwarding.farewellsReceived),
                             ("acknowledged", forwarding.farewellsAcknowledged)].map {
                       Sample(suffix: "_total", labels: [("event", $0.0)], value: String($0.1))
                   }),
        ]
    }

    /// The node's device flushes in fsync mode (issue 18). rate() of the
    /// counter gives flushes per second; rate() of the latency's _sum, the
    /// fraction of time a flush was running (near 1: the disk bounds
    /// durable writes).
    static func walFlushFamilies(_ flushes: WALFlushStats) -> [Family] {
        let records = histogramSamples(counts: flushes.recordBuckets, bounds: WALFlushStats.recordBounds.map(String.init),
                                       sum: String(flushes.records))
        let latency = histogramSamples(counts: flushes.latencyBuckets, bounds: Array(bucketLabels.dropLast()),
                                       sum: String(Double(flushes.latencySumNs) / 1e9))
        return [
            counter("aegis_wal_flushes", "Device flushes that made write-ahead log batches durable (fsync mode): the node-wide syncfs shared by two or more reactors, and a batch's own fdatasync (one reactor's every batch; with more, a batch that starts a segment or whose segment is not prepared).", flushes.flushes),
            counter("aegis_wal_flush_failures", "Device flushes that failed; every batch they covered, on every reactor, was answered with an error.", flushes.failures),
            Family(name: "aegis_wal_flush_records", kind: .histogram,
                   help: "Write-ahead log records made durable by one device flush (the group commit's size, over all reactors).", samples: records),
            Family(name: "aegis_wal_flush_duration_seconds", kind: .histogram,
                   help: "Time one device flush took (the node's syncfs; a batch's own fdatasync from its submission).", samples: latency),
        ]
    }

    /// A histogram's `_bucket` samples (cumulative, one per bound, then
    /// +Inf), `_sum` and `_count`, from counts kept per bucket: one more
    /// count than `bounds`, the last for everything above them.
    static func histogramSamples(counts: [Int], bounds: [String], sum: String) -> [Sample] {
        precondition(counts.count == bounds.count + 1, "one count per bound, and one above them")
        var samples: [Sample] = []
        var cumulative = 0
        for (bound, count) in zip(bounds + ["+Inf"], counts) {
            cumulative += count
            samples.append(Sample(suffix: "_bucket", labels: [("le", bound)], value: String(cumulative)))
        }
        samples.append(Sample(suffix: "_sum", value: sum))
        samples.append(Sample(suffix: "_count", value: String(cumulative)))
        return samples
    }

    /// A family of one unlabelled sample.
    static func gauge(_ name: String, _ help: String, _ value: Int) -> Family {
        Family(name: name, kind: .gauge, help: help, samples: [Sample(value: String(value))])
    }

    /// A counter of one unlabelled sample (`name` + "_total").
    static func counter(_ name: String, _ help: String, _ value: Int) -> Family {
        Family(name: name, kind: .counter, help: help, samples: [Sample(suffix: "_total", value: String(value))])
    }

    static func families(node: NodeContext) -> [Family] {
        let totals = node.totals()
        let commands = node.commandTotals()
        let reports = NodeReports(node: node)
        let (_, rss) = ProcessMemory.statm()
        let cluster = node.cluster.snapshot
        let me = cluster.selfMember
        // Before the cluster loop publishes, the node is a cluster of one that owns every shard.
        let clusterAlive = cluster.members.isEmpty ? 1 : cluster.count(.alive)
        let shardsPrimary = me?.shardsPrimary ?? node.config.numShards
        let shardsFollower = me?.shardsFollower ?? 0
        var result: [Family] = [
            // The info-metric idiom: the value is always 1 and the labels carry the
            // facts, so a dashboard can group nodes by version during an upgrade.
            Family(name: "aegis_build_info", kind: .gauge, help: "Always 1; the labels name the version and commit this node runs.",
                   samples: [Sample(labels: [("version", BuildInfo.version), ("commit", BuildInfo.commit)], value: "1")]),
            gauge("aegis_cache_size_bytes", "Bytes of cached data (keys, values and entry overhead) as the memory ledger counts them.", totals.usedMemoryBytes),
            gauge("aegis_cache_items", "Live entries in the cache.", totals.items),
            gauge("aegis_cache_replica_items", "Entries this node holds as a copy of shards it is not the primary of (not in aegis_cache_items, as DBSIZE counts).", totals.replicaItems),
            gauge("aegis_interconnect_memory_bytes", "Bytes between reactors, and between them and the cluster loop: the rings, overflow buffers and heap copies of large payloads in flight.", node.interconnectMemoryBytes(totals)),
            gauge("aegis_cache_max_bytes", "max_memory_mb in bytes; eviction keeps aegis_cache_size_bytes below it (0 = unlimited).", reports.maxMemoryBytes),
            gauge("aegis_active_connections", "Client connections open now.", totals.connections),
            gauge("aegis_cluster_members", "Alive members this node sees in its cluster, itself included.", clusterAlive),
            gauge("aegis_cluster_local_health", "Lifeguard local health: 0 is healthy; each step stretches this node's own probe interval and timeouts by one gossip interval because it runs late (late timers, lagging reactors).", cluster.localHealth),
            gauge("aegis_shards_owned", "Shards this node is primary for.", shardsPrimary),
            gauge("aegis_shards_replica", "Shards this node holds as a follower.", shardsFollower),
            gauge("aegis_reactors", "Reactor threads serving clients.", node.reactorCount),
            gauge("aegis_ready", "1 while the node serves clients and, in a cluster, every shard it replicates (as /ready); 0 while starting, catching up or draining.", node.state == .serving && node.replicaStanding(cluster).inStep ? 1 : 0),
            gauge("aegis_uptime_seconds", "Seconds since the node started.", reports.uptimeSeconds),
            gauge("aegis_resident_memory_bytes", "Resident set size of the process.", rss),
            gauge("aegis_rate_limit_ops_per_second", "Node-wide rate limit in operations per second (0 = off).", node.runtime.currentRateLimit),
            counter("aegis_evictions", "Entries evicted to stay under max_memory_mb.", totals.evictions),
            counter("aegis_expired_keys", "Entries removed because their TTL passed.", totals.expired),
            counter("aegis_keyspace_hits", "Reads that found their key.", totals.keyspaceHits),
            counter("aegis_keyspace_misses", "Reads that did not find their key.", totals.keyspaceMisses),
            counter("aegis_connections_accepted", "Client connections accepted.", totals.connectionsAccepted),
            counter("aegis_connections_rejected", "Client connections refused because max_conns was reached.", totals.connectionsRejected),
            counter("aegis_network_received_bytes", "Bytes read from client connections.", totals.bytesIn),
            counter("aegis_network_sent_bytes", "Bytes written to client connections.", totals.bytesOut),
            counter("aegis_protocol_errors", "Requests that could not be parsed (the connection is closed).", totals.protocolErrors),
            counter("aegis_rate_limited_requests", "Requests refused by the node-wide rate limit.", totals.rateLimited),
            counter("aegis_auth_failures", "AUTH attempts with a wrong token (client port, both protocols).", node.clientAuth.failedAttemptsTotal),
            counter("aegis_auth_delayed", "AUTH answers held back because their address failed too often (one answer per second per address).", node.clientAuth.delayedAnswersTotal),
            counter("aegis_auth_refused", "AUTH attempts refused unchecked (connection closed): their address already had 10 s of held answers.", node.clientAuth.refusedAttemptsTotal),
            counter("aegis_auth_timeouts", "Client connections closed for not logging in within auth_timeout.", node.clientAuth.authTimeoutsTotal),
            counter("aegis_protected_mode_refusals", "Client connections from off loopback refused by protected mode (no auth_token set).", node.clientAuth.protectedModeRefusalsTotal),
            gauge("aegis_protected_mode", "1 while protected mode refuses clients off loopback (protected_mode on and no auth_token).", node.clientAuth.refusesNonLoopback ? 1 : 0),
            gauge("aegis_wal_enabled", "1 when wal_mode is write or fsync, 0 when off.", node.config.walMode == .off ? 0 : 1),
            gauge("aegis_wal_writable", "1 while every reactor's write-ahead log accepts writes (0 after a disk fault until it recovers).", totals.walRefusingWrites == 0 ? 1 : 0),
            counter("aegis_wal_batches", "Write-ahead log batches made durable (group commits).", totals.walBatches),
            counter("aegis_wal_written_bytes", "Bytes of write-ahead log made durable.", totals.walBytes),
            counter("aegis_wal_snapshots", "Snapshots completed (each deletes the log segments it covers).", totals.walSnapshots),
            counter("aegis_wal_errors", "Failed write-ahead log writes, fsyncs and snapshots; writes in a failed batch are answered with an error.", totals.walErrors),
        ] + walFlushFamilies(node.walFlushStats() ?? WALFlushStats())
        result += clientTLSFamilies(node.tls)
        result += forwardingFamilies(cluster.forwarding, reactorCrossings: totals.forwardedRequests, notOwner: totals.forwardNotOwner, relayed: totals.forwardRelayed, hopLimit: totals.forwardHopLimit,
                                     readsFromCopyServed: totals.readsFromCopyServed, readsFromCopyRefused: totals.readsFromCopyRefused,
                                     readsFromCopyAtHolder: totals.readsFromCopyAtHolder)
        result += replicationFamilies(cluster.replication)
        result += moveFamilies(cluster.replication, catchUp: cluster.catchUp, totals: totals)
        result += leaseFamilies(cluster.leases, refusals: totals.leaseRefusals)
        result += parkingFamilies(totals)
        result += quorumFamilies(totals.quorum)
        let names = CommandMetricsLayout.names
        result.append(Family(
            name: "aegis_commands", kind: .counter, help: "Commands received, by command (RESP and binary).",
            samples: names.indices.map { Sample(suffix: "_total", labels: [("command", names[$0])], value: String(commands.calls[$0])) }))
        result.append(Family(
            name: "aegis_command_errors", kind: .counter, help: "Commands answered with an error, by command.",
            samples: names.indices.map { Sample(suffix: "_total", labels: [("command", names[$0])], value: String(commands.errors[$0])) }))
        var histogram: [Sample] = []
        for (family, familyName) in CommandMetricsLayout.familyNames.enumerated() {
            var cumulative = 0
            for (bucket, bound) in bucketLabels.enumerated() {
                cumulative += commands.buckets[family][bucket]
                histogram.append(Sample(suffix: "_bucket", labels: [("family", familyName), ("le", bound)], value: String(cumulative)))
            }
            histogram.append(Sample(suffix: "_sum", labels: [("family", familyName)], value: String(Double(commands.sumNs[family]) / 1e9)))
            histogram.append(Sample(suffix: "_count", labels: [("family", familyName)], value: String(cumulative)))
        }
        result.append(Family(
            name: "aegis_command_duration_seconds", kind: .histogram,
            help: "Time from reading a batch of requests to writing its replies, by command family (read, write, other).",
            samples: histogram))
        let breakers = node.breakers.statuses()
        result.append(Family(
            name: "aegis_circuit_breaker_open", kind: .gauge,
            help: "1 while the circuit breaker for an outbound service is open or half-open, else 0.",
            samples: breakers.map { Sample(labels: [("service", $0.service)], value: $0.state == .closed ? "0" : "1") }))
        result += clusterFamilies(cluster)
        return result
    }

    /// TLS on the client port (tls_enabled); zeros when it is off, so that
    /// a dashboard's queries need no special case for a plaintext node.
    static func clientTLSFamilies(_ tls: TLSService?) -> [Family] {
        let layer = tls?.recordLayer
        return [
            gauge("aegis_tls_enabled", "1 when the client port serves TLS (tls_enabled), else 0.", tls == nil ? 0 : 1),
            Family(name: "aegis_tls_record_layer", kind: .gauge,
                   help: "1 for the record layer new client TLS connections are set up for: kernel (kTLS, where the kernel offers the tls ULP) or user_space (OpenSSL); 0 for the other, both 0 without TLS.",
                   samples: TLSService.RecordLayer.allCases.map {
                       Sample(labels: [("mode", $0.rawValue)], value: layer == $0 ? "1" : "0")
                   }),
            Family(name: "aegis_tls_handshakes", kind: .counter,
                   help: "Client TLS handshakes completed, by the record layer the connection then used (what OpenSSL did, per connection).",
                   samples: TLSService.RecordLayer.allCases.map {
                       Sample(suffix: "_total", labels: [("record_layer", $0.rawValue)], value: String(tls?.handshakesCompletedTotal($0) ?? 0))
                   }),
            Family(name: "aegis_tls_handshake_failures", kind: .counter,
                   help: "Client connections closed before their TLS handshake finished, by reason.",
                   samples: ClientTLSFailure.allCases.map {
                       Sample(suffix: "_total", labels: [("reason", $0.rawValue)], value: String(tls?.failuresTotal($0) ?? 0))
                   }),
            gauge("aegis_tls_handshakes_in_progress", "Client connections accepted whose TLS handshake has not finished yet.",
                  tls?.handshakesInProgress ?? 0),
            counter("aegis_tls_handshakes_address_limited",
                    "Client connections closed at accept because their address already had tls_handshakes_per_address TLS handshakes in progress.",
                    tls?.addressLimitRefusalsTotal ?? 0),
            counter("aegis_tls_certificate_reloads", "SIGHUPs that loaded the client port's certificate, key and CA files again.",
                    tls?.reloadsTotal ?? 0),
        ]
    }

    static func clusterFamilies(_ cluster: ClusterSnapshot) -> [Family] {
        var byStatus = Family(
            name: "aegis_cluster_members_by_status", kind: .gauge, help: "Members this node sees, by status (itself included).",
            samples: MemberStatus.allCases.map {
                Sample(labels: [("status", $0.description)], value: String(cluster.members.isEmpty && $0 == .alive ? 1 : cluster.count($0)))
            })
        byStatus.scrapersOnly = true
        func byType(_ counts: [String: Int]) -> [Sample] {
            counts.keys.sorted().map { Sample(suffix: "_total", labels: [("type", $0)], value: String(counts[$0]!)) }
        }
        return [
            byStatus,
            memberVersions(cluster),
            Family(name: "aegis_gossip_messages_sent", kind: .counter, help: "Messages sent to other nodes, by type.",
                   samples: byType(cluster.messagesSent)),
            Family(name: "aegis_gossip_messages_received", kind: .counter, help: "Authenticated messages received from other nodes, by type.",
                   samples: byType(cluster.messagesReceived)),
            counter("aegis_gossip_bytes_sent", "Bytes written to peer links (frames, prefixes and hellos).", cluster.bytesSent),
            counter("aegis_gossip_bytes_received", "Bytes read from peer links.", cluster.bytesReceived),
            counter("aegis_gossip_messages_unsent",
                    "Messages not handed to a link: the peer was unreachable (backing off) or its queue was full.", cluster.unsent),
            Family(name: "aegis_cluster_messages_dropped", kind: .counter,
                   help: "Peer messages or connections refused, by reason; they changed no state.",
                   samples: PeerRefusal.allCases.map {
                       Sample(suffix: "_total", labels: [("reason", $0.rawValue)], value: String(cluster.dropped[$0] ?? 0))
                   }),
            gauge("aegis_peer_tls_enabled", "1 when links between nodes run TLS with mutual authentication (cluster_tls_*).",
                  cluster.peerTLSEnabled ? 1 : 0),
            counter("aegis_peer_tls_handshakes", "Peer links (dialled and accepted) whose TLS handshake completed.", cluster.peerTLSHandshakes),
            Family(name: "aegis_peer_tls_refused", kind: .counter,
                   help: "Peer links closed because TLS did not authenticate both ends, by reason (refused here, or peer_refused: by the peer).",
                   samples: PeerTLSRefusal.allCases.map {
                       Sample(suffix: "_total", labels: [("reason", $0.rawValue)], value: String(cluster.peerTLSRefused[$0] ?? 0))
                   }),
            counter("aegis_cluster_slow_peer_closures",
                    "Peer links closed because the peer stopped reading and the link's outbound queue filled.", cluster.slowPeerClosures),
            counter("aegis_cluster_peer_queue_budget_closures",
                    "Of those, links closed because all peer links together reached their memory budget (the one holding the most).",
                    cluster.peerQueueBudgetClosures),
            counter("aegis_cluster_forward_links_abandoned",
                    "Bulk links closed abortively because forwarded requests on them went unanswered and nothing came from the peer since.",
                    cluster.abandonedForwardLinks),
            gauge("aegis_cluster_peer_queue_bytes", "Bytes all peer links hold for their peers (outbound queues), outside max_memory_mb.",
                  cluster.peerQueuedBytes),
            gauge("aegis_cluster_peer_queue_budget_bytes", "The bound on aegis_cluster_peer_queue_bytes.", cluster.peerQueueBudgetBytes),
            Family(name: "aegis_cluster_peer_links", kind: .gauge, help: "Connections this node dialled to peers, by state.",
                   samples: [Sample(labels: [("state", "connected")], value: String(cluster.linksConnected)),
                             Sample(labels: [("state", "connecting")], value: String(cluster.linksConnecting))]),
        ]
    }

    /// Alive members by the build they announced (this node included), so a
    /// dashboard shows a rolling upgrade's progress from any one node;
    /// `version="unknown"` counts members that did not announce one.
    static func memberVersions(_ cluster: ClusterSnapshot) -> Family {
        var counts: [[String]: Int] = [:]
        for member in cluster.members where member.status == .alive {
            counts[[member.version ?? "unknown", member.commit ?? "unknown"], default: 0] += 1
        }
        if cluster.members.isEmpty { counts[[BuildInfo.version, BuildInfo.commit]] = 1 }
        let builds = counts.keys.sorted { $0.lexicographicallyPrecedes($1) }
        return Family(
            name: "aegis_cluster_member_versions", kind: .gauge,
            help: "Alive members this node sees, by the version and commit they announced (itself included; unknown: not announced).",
            samples: builds.map { Sample(labels: [("version", $0[0]), ("commit", $0[1])], value: String(counts[$0]!)) })
    }

    /// `extra`: families of the operations server itself (its TLS), which
    /// the node does not know about.
    static func render(node: NodeContext, format: MetricsFormat, extra: [Family] = []) -> String {
        var out = ""
        out.reserveCapacity(16 * 1024)
        for family in families(node: node) + extra where format != .plain || !family.scrapersOnly {
            if format != .plain {
                // OpenMetrics names a counter family without its _total suffix;
                // the Prometheus text format names it by its sample.
                let metadataName = format == .prometheus && family.kind == .counter ? family.name + "_total" : family.name
                out += "# HELP \(metadataName) \(family.help)\n"
                out += "# TYPE \(metadataName) \(family.kind.rawValue)\n"
            }
            for sample in family.samples {
                out += family.name + sample.suffix
                if !sample.labels.isEmpty {
                    out += "{" + sample.labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
                }
                out += " " + sample.value + "\n"
            }
        }
        if format == .openMetrics { out += "# EOF\n" }
        return out
    }

    static func escapeLabel(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}
