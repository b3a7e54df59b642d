import Foundation
import Glibc
import Testing

/// TLS between nodes (issue 16 item 2) with real processes on 127.0.0.x:
/// every peer link runs TLS with both ends' certificates verified against
/// the cluster CA, and a node without a valid certificate never joins.
@Suite(.serialized) struct PeerTLSProcessTests {
    typealias Member = ClusterProcessTests.Member

    /// Three members with certificates from the test CA, seeded with each other.
    static func startTLSCluster(_ pki: TestPKI, indexes: ClosedRange<Int>, directory: String) throws -> [Member] {
        let members = try indexes.map { try Member(index: $0, directory: directory) }
        for (offset, member) in members.enumerated() {
            let identity = try pki.issuePeerCertificate(member.name, serial: "0x\(7000 + offset)")
            try member.start(seeds: members.map(\.gossipAddress), extra: ["--reactors", "2"] + pki.peerArguments(cert: identity.cert, key: identity.key))
        }
        return members
    }

    static func metric(_ member: Member, _ sample: String) -> Int {
        let body = member.get("/metrics") ?? ""
        guard let line = body.split(separator: "\n").first(where: { $0.hasPrefix(sample + " ") }) else { return -1 }
        return Int(line.split(separator: " ").last ?? "") ?? -1
    }

    static func refused(_ member: Member, _ reason: String) -> Int {
        metric(member, "aegis_peer_tls_refused_total{reason=\"\(reason)\"}")
    }

    static func temporaryDirectory(_ name: String) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-\(name)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test(.hangBound) func threeNodesWithPeerTLSFormForwardAndReplicate() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let members = try Self.startTLSCluster(pki, indexes: 1...3, directory: try Self.temporaryDirectory("peer-tls"))
        defer { for member in members { member.stop() } }
        #expect(ReplicationProcessTests.waitForMap(members), "\(members.map { $0.log().suffix(2000) })")
        // Writes need each shard's lease, and leases are won over the TLS links.
        try #require(LeaseProcessTests.waitForEveryShardHeld(members), "every shard gets a lease holder over TLS")

        // Written through node1 only: two thirds of the keys are forwarded to
        // their primaries, and every write is replicated to two followers.
        let sets = Dictionary(uniqueKeysWithValues: (0..<200).map { ("tls:\($0)", "v\($0)") })
        try ReplicationProcessTests.write(members[0], sets: sets)
        let primaries = Set(try sets.keys.map(ReplicationProcessTests.primary(of:)))
        #expect(primaries == ["node1", "node2", "node3"], "the keys' primaries are spread over the three nodes")
        let read = try ReplicationProcessTests.read(members[2], sets.keys.sorted())
        #expect(read.values.allSatisfy { sets[$0.key] == $0.value }, "node3 reads back what node1 wrote")
        for member in members {
            #expect(Self.metric(member, "aegis_peer_tls_enabled") == 1)
            // Two lanes to each of two peers, dialled and accepted: at least 8 handshakes.
            #expect(Self.metric(member, "aegis_peer_tls_handshakes_total") >= 8, "\(member.name)")
            #expect(waitUntil(seconds: 10) { Self.metric(member, "aegis_replication_records_sent_total") > 0 }, "\(member.name)")
            for reason in ["plaintext", "no_certificate", "untrusted", "expired", "peer_refused", "handshake_failed", "timeout"] {
                #expect(Self.refused(member, reason) == 0, "\(member.name) refused a link of its own cluster: \(reason)\n\(member.log().suffix(3000))")
            }
            #expect(member.log().contains("TLS between nodes"), "the start-up log says peer links run TLS")
        }
        // Node3, the last survivor, holds every write: replication went over TLS.
        let survivor = try ReplicationProcessTests.readLastStanding(members, kill: [members[0], members[1]], keys: sets.keys.sorted())
        #expect(survivor.values.allSatisfy { sets[$0.key] == $0.value } && survivor.dbsize == sets.count)
    }

    /// A fourth node with a certificate from another CA, and one speaking
    /// plaintext, dial the cluster: both are refused, counted and logged,
    /// and neither ever becomes a member. Then openssl s_client presents no
    /// certificate, a self-signed one and an expired one from the right CA.
    @Test(.hangBound) func nodesWithoutAValidCertificateAreRefusedAndNeverJoin() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let directory = try Self.temporaryDirectory("peer-tls-refused")
        let members = try Self.startTLSCluster(pki, indexes: 1...3, directory: directory)
        defer { for member in members { member.stop() } }
        #expect(ReplicationProcessTests.waitForMap(members))
        let seeds = members.map(\.gossipAddress)

        let foreign = try Member(index: 4, directory: directory)
        let foreignIdentity = try pki.issuePeerCertificate("foreign-node", authority: "foreign-ca", serial: "0x7100")
        // Its own CA is the foreign one: it trusts nobody of the cluster either.
        try foreign.start(seeds: seeds, extra: ["--cluster-tls-cert-file", foreignIdentity.cert, "--cluster-tls-key-file", foreignIdentity.key,
                                                "--cluster-tls-ca-file", pki.directory + "/foreign-ca.pem"])
        defer { foreign.stop() }
        let plaintext = try Member(index: 5, directory: directory)
        try plaintext.start(seeds: seeds)
        defer { plaintext.stop() }
        // Trusts the cluster (same CA) but its own certificate has expired.
        let lapsed = try Member(index: 6, directory: directory)
        let lapsedIdentity = try pki.issuePeerCertificate("lapsed-node", serial: "0x7101", expired: true)
        try lapsed.start(seeds: seeds, extra: pki.peerArguments(cert: lapsedIdentity.cert, key: lapsedIdentity.key))
        defer { lapsed.stop() }

        // The foreign node refuses the cluster's certificates when it dials them...
        #expect(waitUntil(seconds: 30) { Self.refused(foreign, "untrusted") > 0 }, "\(foreign.log().suffix(3000))")
        #expect(foreign.log().contains("peer link refused by TLS"), "\(foreign.log().suffix(3000))")
        // ...and the seeds refuse the plaintext node's hellos, logging its address.
        #expect(waitUntil(seconds: 30) { members.contains { Self.refused($0, "plaintext") > 0 } })
        let plaintextLogs = members.map { $0.log() }.filter { $0.contains("reason=plaintext") || $0.contains("\"reason\":\"plaintext\"") }
        #expect(!plaintextLogs.isEmpty && plaintextLogs.allSatisfy { $0.contains(plaintext.host) }, "\(members[0].log().suffix(3000))")
        // The foreign node's own refusals reach the seeds as failed handshakes.
        #expect(waitUntil(seconds: 30) { members.contains { Self.refused($0, "handshake_failed") > 0 } })
        let alertLines = members.flatMap { $0.log().split(separator: "\n") }.filter { $0.contains("reason=handshake_failed") }
        #expect(!alertLines.isEmpty && alertLines.allSatisfy { $0.contains("peer=\(foreign.host)") && $0.contains("alert unknown ca") },
                "\(alertLines)")

        // The seeds refuse the lapsed node's certificate, and it hears why.
        #expect(waitUntil(seconds: 30) { members.contains { Self.refused($0, "expired") > 0 } })
        #expect(waitUntil(seconds: 30) { Self.refused(lapsed, "peer_refused") > 0 }, "\(lapsed.log().suffix(3000))")
        #expect(lapsed.log().contains("certificate expired"), "OpenSSL's alert names the reason\n\(lapsed.log().suffix(3000))")
        // And its own log said so at start, before any peer refused it.
        #expect(lapsed.log().contains("the certificate this node presents has expired: other nodes refuse this node's peer links"),
                "\(lapsed.log().prefix(3000))")
        #expect(!members[0].log().contains("the certificate this node presents has expired"))

        // Long enough for several join attempts (seeds are retried within seconds).
        usleep(4_000_000)
        for member in members {
            let statuses = member.statuses()
            #expect(Set(statuses.keys) == ["node1", "node2", "node3"], "\(member.name) lists \(statuses)")
        }
        #expect(Set(foreign.statuses().keys) == ["node4"] && Set(plaintext.statuses().keys) == ["node5"]
                && Set(lapsed.statuses().keys) == ["node6"])

        // Refused by the node itself while verifying the client's certificate.
        let seed = members[0]
        let selfSigned = try pki.issuePeerCertificate("self-signed", authority: nil, serial: "0")
        let expired = try pki.issuePeerCertificate("expired", serial: "0x7200", expired: true)
        let probes: [(reason: String, arguments: [String])] = [
            ("no_certificate", []),
            ("untrusted", ["-cert", selfSigned.cert, "-key", selfSigned.key]),
            ("untrusted", ["-cert", pki.foreignClientCert, "-key", pki.foreignClientKey]),
            ("expired", ["-cert", expired.cert, "-key", expired.key]),
        ]
        // Its dials would count as `expired` too and hide whether a probe was.
        lapsed.stop()
        for probe in probes {
            let before = Self.refused(seed, probe.reason)
            _ = try runTool("timeout", ["10", "openssl", "s_client", "-connect", seed.gossipAddress, "-CAfile", pki.caCert] + probe.arguments,
                            input: "")
            #expect(waitUntil(seconds: 10) { Self.refused(seed, probe.reason) > before },
                    "\(probe.reason): \(probe.arguments)\n\(seed.log().suffix(2000))")
        }
        #expect(seed.log().contains("certificate has expired"), "the log gives OpenSSL's reason\n\(seed.log().suffix(3000))")
    }

    /// A handshake that stalls half-way holds a session only until the
    /// accept bound (5 s), and the node keeps serving its cluster meanwhile.
    @Test(.hangBound) func aStalledHandshakeIsClosedAndCounted() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let members = try Self.startTLSCluster(pki, indexes: 6...7, directory: try Self.temporaryDirectory("peer-tls-stall"))
        defer { for member in members { member.stop() } }
        #expect(ReplicationProcessTests.waitForMap(members))
        // A TLS record header that opens a handshake and never completes.
        let script = """
        import socket, sys, time
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        s.sendall(bytes([0x16, 0x03, 0x01, 0x01, 0x00]))
        s.settimeout(15)
        start = time.time()
        try:
            state = "closed" if s.recv(1) == b"" else "answered"
        except socket.timeout:
            state = "open"
        except OSError:
            state = "closed"
        print(state, round(time.time() - start))
        """
        let result = try runTool("python3", ["-c", script, members[0].host, String(members[0].gossipPort)])
        #expect(result.output.hasPrefix("closed"), "\(result.output)")
        // Counters reach /metrics up to one publish interval (100 ms) after the close.
        let countedBy = Date().addingTimeInterval(5)
        while Self.refused(members[0], "timeout") < 1 && Date() < countedBy { usleep(50_000) }
        #expect(Self.refused(members[0], "timeout") == 1, "\(members[0].log().suffix(2000))")
        #expect(Set(members[0].statuses().values) == ["alive"])
    }

    @Test func partialOrBrokenPeerTLSFilesStopStartupNamingTheProblem() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let node = try pki.issuePeerCertificate("node", serial: "0x7300")
        let base = ["--node-id", "n1", "--bind-addr", "127.0.0.1:0", "--gossip-bind-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0",
                    "--data-dir", try Self.temporaryDirectory("peer-tls-config")]
        let cases: [(arguments: [String], named: String)] = [
            (["--cluster-tls-cert-file", node.cert, "--cluster-tls-key-file", node.key], "cluster_tls_ca_file"),
            (["--cluster-tls-ca-file", pki.caCert], "cluster_tls_cert_file"),
            (pki.peerArguments(cert: pki.directory + "/missing.pem", key: node.key), pki.directory + "/missing.pem"),
            (pki.peerArguments(cert: node.cert, key: pki.clientKey), pki.clientKey),
            (["--cluster-tls-cert-file", node.cert, "--cluster-tls-key-file", node.key, "--cluster-tls-ca-file", pki.directory + "/none.pem"],
             pki.directory + "/none.pem"),
        ]
        for (arguments, named) in cases {
            let validated = try runTool(ServerHarness.binaryPath, base + arguments + ["--validate"])
            #expect(validated.status == 2 && validated.output.contains(named), "\(arguments): \(validated.output)")
            let started = try runTool("timeout", ["20", ServerHarness.binaryPath] + base + arguments)
            #expect(started.status != 0 && started.status != 124 && started.output.contains(named), "\(arguments): \(started.output)")
        }
        let good = try runTool(ServerHarness.binaryPath, base + pki.peerArguments(cert: node.cert, key: node.key) + ["--validate"])
        #expect(good.status == 0, "\(good.output)")
    }

    /// SIGHUP reads the three files again: a half-written key keeps the
    /// running certificate (links still open), a good one is taken.
    @Test(.hangBound) func sighupReloadsThePeerCertificateAndKeepsTheOldOneOnABadFile() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let directory = try Self.temporaryDirectory("peer-tls-reload")
        let members = try (8...9).map { try Member(index: $0, directory: directory) }
        let identities = try members.enumerated().map { try pki.issuePeerCertificate($0.element.name, serial: "0x\(7400 + $0.offset)") }
        for (member, identity) in zip(members, identities) {
            try member.start(seeds: members.map(\.gossipAddress), extra: pki.peerArguments(cert: identity.cert, key: identity.key))
        }
        defer { for member in members { member.stop() } }
        #expect(ReplicationProcessTests.waitForMap(members))
        let goodKey = try String(contentsOfFile: identities[0].key, encoding: .utf8)
        try String(contentsOfFile: pki.clientKey, encoding: .utf8).write(toFile: identities[0].key, atomically: true, encoding: .utf8)
        members[0].signal(SIGHUP)
        #expect(waitUntil(seconds: 10) { members[0].log().contains("reload: cluster TLS certificates not reloaded") }, "\(members[0].log().suffix(2000))")
        try goodKey.write(toFile: identities[0].key, atomically: true, encoding: .utf8)
        // A certificate from the same CA with a new serial, as a rotation brings.
        let rotated = try pki.issuePeerCertificate("rotated", serial: "0x7500")
        try String(contentsOfFile: rotated.cert, encoding: .utf8).write(toFile: identities[0].cert, atomically: true, encoding: .utf8)
        try String(contentsOfFile: rotated.key, encoding: .utf8).write(toFile: identities[0].key, atomically: true, encoding: .utf8)
        members[0].signal(SIGHUP)
        #expect(waitUntil(seconds: 10) { members[0].log().contains("reload: cluster TLS certificate, key and CA loaded again") })
        // New links present the rotated certificate: s_client sees its subject.
        let served = try runTool("timeout", ["10", "openssl", "s_client", "-connect", members[0].gossipAddress, "-CAfile", pki.caCert,
                                             "-cert", identities[1].cert, "-key", identities[1].key], input: "")
        #expect(served.output.contains("CN = rotated"), "\(served.output.prefix(1500))")
        #expect(Set(members[1].statuses().values) == ["alive"])
    }
}
