import Foundation
import Glibc
import Testing

/// Issue 11's last membership items on real processes: a node whose reactor
/// lags raises its own Lifeguard local health and recovers, and the gossip
/// timings reload on SIGHUP.
extension ClusterProcessTests {
    static func sample(_ metrics: String?, _ name: String) -> Double? {
        guard let line = metrics?.split(separator: "\n").first(where: { $0.hasPrefix(name + " ") }) else { return nil }
        return Double(line.split(separator: " ").last ?? "")
    }

    static func localHealth(_ member: Member) -> Double? { sample(member.get("/metrics"), "aegis_cluster_local_health") }

    static func scratchDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-health-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    /// The debug build's stall hook (AEGISKV_DEBUG_STALL_FILE) stops the
    /// node's only reactor for 2.5 s; its cluster loop runs on. The next
    /// protocol period reads the reactor's lag and the score rises; it
    /// comes back to 0 once the reactor is on time again. The peer keeps
    /// the lagging node alive throughout: its cluster loop never stopped.
    @Test(.hangBound) func aLaggingReactorRaisesLocalHealthWhichRecovers() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let stallBase = directory + "/stall"
        let lagging = try Member(index: 6, directory: directory)
        let peer = try Member(index: 7, directory: directory)
        // A 1 s interval: the threshold (half of it) stays far above what a
        // loaded test machine adds to a timer, so only the stall can cross it.
        let timings = ["--gossip-interval", "1s", "--suspect-timeout", "5s", "--dead-timeout", "30s"]
        try lagging.start(seeds: [], extra: timings, environment: ["AEGISKV_DEBUG_STALL_FILE": stallBase])
        try peer.start(seeds: [lagging.gossipAddress], extra: timings)
        defer { lagging.stop(); peer.stop() }
        let both = ["node6": "alive", "node7": "alive"]
        #expect(waitUntil(seconds: 30) { lagging.statuses() == both && peer.statuses() == both })
        #expect(waitUntil(seconds: 30) { Self.localHealth(lagging) == 0 }, "\(lagging.log())")

        _ = FileManager.default.createFile(atPath: stallBase + ".0", contents: nil)
        #expect(waitUntil(seconds: 10) { lagging.log().contains("debug hook: reactor stalled") })
        usleep(2_500_000)
        try FileManager.default.removeItem(atPath: stallBase + ".0")

        #expect(waitUntil(seconds: 20) { (Self.localHealth(lagging) ?? 0) >= 1 }, "\(lagging.log())")
        let info = try runTool("redis-cli", ["-h", lagging.host, "-p", String(lagging.clientPort), "INFO", "cluster"])
        #expect(info.output.contains("cluster_local_health:"), "\(info.output)")
        #expect(waitUntil(seconds: 60) { Self.localHealth(lagging) == 0 }, "the score never came back: \(lagging.log())")
        #expect(peer.statuses()["node6"] == "alive", "\(peer.log())")
    }

    /// gossip_interval, suspect_timeout and dead_timeout from the file, then
    /// changed there and reloaded with SIGHUP: /cluster shows the state
    /// machine's new timings, and the node probes at the new rate (at the
    /// old 5 s interval 10 more pings would take 50 s). Timings in the wrong
    /// order are refused with a clear line and the running ones kept.
    @Test(.hangBound) func gossipTimingsReloadOnSIGHUP() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let node = try Member(index: 8, directory: directory)
        let peer = try Member(index: 9, directory: directory)
        let config = directory + "/node8.json"
        func writeTimings(_ interval: String, _ suspect: String, _ dead: String) throws {
            try #"{"gossip_interval": "\#(interval)", "suspect_timeout": "\#(suspect)", "dead_timeout": "\#(dead)"}"#
                .write(toFile: config, atomically: true, encoding: .utf8)
        }
        try writeTimings("5s", "15s", "60s")
        try node.start(seeds: [], configFile: config, timingFlags: false)
        try peer.start(seeds: [node.gossipAddress])
        defer { node.stop(); peer.stop() }
        let both = ["node8": "alive", "node9": "alive"]
        #expect(waitUntil(seconds: 30) { node.statuses() == both && peer.statuses() == both })
        #expect(Self.timings(node) == [5000, 15_000, 60_000])

        try writeTimings("100ms", "1s", "3s")
        let pingsBefore = Self.sample(node.get("/metrics"), #"aegis_gossip_messages_sent_total{type="ping"}"#) ?? 0
        node.signal(SIGHUP)
        #expect(waitUntil(seconds: 10) { Self.timings(node) == [100, 1000, 3000] }, "\(node.log())")
        #expect(node.log().contains("membership timings changed from gossip_interval 5000 ms"), "\(node.log())")
        #expect(!node.log().contains("takes effect at the next restart"))
        #expect(waitUntil(seconds: 20) {
            (Self.sample(node.get("/metrics"), #"aegis_gossip_messages_sent_total{type="ping"}"#) ?? 0) >= pingsBefore + 10
        }, "pings did not speed up: \(node.get("/metrics") ?? "")")

        try writeTimings("2s", "1s", "3s")
        node.signal(SIGHUP)
        #expect(waitUntil(seconds: 10) { node.log().contains("reload failed, keeping the running configuration") },
                "\(node.log())")
        #expect(node.log().contains("gossip_interval"))
        #expect(Self.timings(node) == [100, 1000, 3000])
        #expect(node.statuses() == both)
    }

    /// gossip_interval_ms, suspect_timeout_ms, dead_timeout_ms from /cluster.
    static func timings(_ member: Member) -> [Int]? {
        guard let body = member.get("/cluster"),
              let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return nil }
        let values = ["gossip_interval_ms", "suspect_timeout_ms", "dead_timeout_ms"].compactMap { object[$0] as? Int }
        return values.count == 3 ? values : nil
    }
}
