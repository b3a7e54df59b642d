import Foundation
import Glibc
import Testing

/// Protected mode seen from another host: the node in a network namespace
/// of its own at 10.77.0.1, clients in a second namespace at 10.77.0.2,
/// joined by a veth pair, so the node sees a real non-loopback peer.
@Suite(.serialized)
struct ProtectedModeTests {
    static let nodeAddress = "10.77.0.1"

    /// (node's namespace, clients' namespace), or nil (printed) when this
    /// machine cannot make namespaces.
    static func twoHosts() throws -> (node: PrivateNetwork, client: PrivateNetwork)? {
        guard case .success(let node) = PrivateNetwork.make() else { print("skipped: no private network namespace"); return nil }
        guard case .success(let client) = PrivateNetwork.make() else { print("skipped: no second namespace"); return nil }
        let steps: [(PrivateNetwork, [String])] = [
            (node, ["link", "add", "aegis-n", "type", "veth", "peer", "name", "aegis-c", "netns", "/proc/\(client.holderPID)/ns/net"]),
            (node, ["addr", "add", "\(nodeAddress)/24", "dev", "aegis-n"]), (node, ["link", "set", "aegis-n", "up"]),
            (client, ["addr", "add", "10.77.0.2/24", "dev", "aegis-c"]), (client, ["link", "set", "aegis-c", "up"]),
        ]
        for (network, arguments) in steps {
            let result = try network.run("ip", arguments)
            if result.status != 0 { throw HarnessError("ip \(arguments.joined(separator: " ")): \(result.output)") }
        }
        return (node, client)
    }

    static func startNode(in network: PrivateNetwork, _ arguments: [String]) throws -> SpawnedNode {
        let node = try SpawnedNode(arguments: ["--health-addr", "0.0.0.0:7702", "--reactors", "2", "--max-memory-mb", "64"] + arguments,
                                   waitForPort: false, port: 7700, host: "0.0.0.0", launcher: network.launcher)
        guard node.waitForLog(timeoutSeconds: 30, { $0.contains("serving") }) else {
            _ = node.stop()
            throw HarnessError("node did not start: \(node.log())")
        }
        return node
    }

    /// A binary-protocol PING; prints the reply's bytes as Python shows them.
    static let binaryPing = """
        import socket, struct, sys
        body = bytes([0xAE, 1, 4]) + struct.pack('>QIIqQ', 7, 0, 0, 0, 0)
        s = socket.create_connection((sys.argv[1], 7700), timeout=10)
        s.sendall(struct.pack('>I', len(body)) + body)
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        print(data[4] == 0xAE, data.decode('latin-1'))
        """

    @Test func clientsOffLoopbackAreDeniedUntilTheNodeIsOpenedUp() throws {
        guard let (nodeHost, clientHost) = try Self.twoHosts() else { return }
        defer { nodeHost.stop(); clientHost.stop() }
        let node = try Self.startNode(in: nodeHost, [])
        defer { #expect(node.stop() == 0) }
        #expect(node.log().contains("protected mode: no auth_token is set"))

        // From the other host, both protocols: one clear error, then closed.
        let denied = try clientHost.run("redis-cli", ["-h", Self.nodeAddress, "-p", "7700", "PING"]).output
        #expect(denied.contains("DENIED") && denied.contains("protected_mode") && denied.contains("auth_token"), "\(denied)")
        #expect(!denied.contains("PONG"))
        let binary = try clientHost.run("python3", ["-c", Self.binaryPing, Self.nodeAddress]).output
        #expect(binary.hasPrefix("True") && binary.contains("DENIED"), "\(binary)")
        // The operations port: read-only endpoints for anyone (the runbook's
        // checks come from other hosts), /admin and /debug for this host only.
        let health = try clientHost.run("curl", ["-s", "--max-time", "10", "http://\(Self.nodeAddress):7702/health"]).output
        #expect(health.contains("ok"))
        let debug = try clientHost.run("curl", ["-s", "--max-time", "10", "-w", " %{http_code}", "http://\(Self.nodeAddress):7702/debug/reactors"]).output
        #expect(debug.hasSuffix(" 403") && debug.contains("protected mode"), "\(debug)")

        // Loopback on the node's host is served: 127.0.0.1 and 127.0.0.2.
        #expect(try nodeHost.run("redis-cli", ["-h", "127.0.0.1", "-p", "7700", "PING"]).output.contains("PONG"))
        #expect(try nodeHost.run("redis-cli", ["-h", "127.0.0.2", "-p", "7700", "PING"]).output.contains("PONG"))
        let local = try nodeHost.run("curl", ["-s", "--max-time", "10", "-w", " %{http_code}", "http://127.0.0.1:7702/debug/reactors"]).output
        #expect(local.hasSuffix(" 200"), "\(local)")
        let metrics = try nodeHost.run("curl", ["-s", "--max-time", "10", "http://127.0.0.1:7702/metrics"]).output
        #expect(metrics.contains("aegis_protected_mode_refusals_total 2") && metrics.contains("aegis_protected_mode 1"), "\(metrics)")

        // Opened from this host, as the error says: the other host is served.
        #expect(try nodeHost.run("redis-cli", ["-h", "127.0.0.1", "-p", "7700", "CONFIG", "SET", "protected-mode", "no"]).output.contains("OK"))
        #expect(try clientHost.run("redis-cli", ["-h", Self.nodeAddress, "-p", "7700", "PING"]).output.contains("PONG"))
        let python = try clientHost.run("python3", ["-c", "import redis,sys; r=redis.Redis(host=sys.argv[1], port=7700); r.set('k','v'); print(r.get('k'))",
                                                    Self.nodeAddress]).output
        #expect(python.contains("b'v'"), "\(python)")
    }

    @Test func aTokenOrAnExplicitChoiceOpensItUp() throws {
        guard let (nodeHost, clientHost) = try Self.twoHosts() else { return }
        defer { nodeHost.stop(); clientHost.stop() }
        var node = try Self.startNode(in: nodeHost, ["--protected-mode", "false"])
        #expect(node.logLines().contains { $0.contains("warning") && $0.contains("protected mode is off (protected_mode: false)") })
        #expect(try clientHost.run("redis-cli", ["-h", Self.nodeAddress, "-p", "7700", "PING"]).output.contains("PONG"))
        #expect(node.stop() == 0)

        node = try Self.startNode(in: nodeHost, ["--auth-token", "remote-Q2w-token"])
        defer { #expect(node.stop() == 0) }
        let cli = ["-h", Self.nodeAddress, "-p", "7700", "--no-auth-warning"]
        #expect(try clientHost.run("redis-cli", cli + ["PING"]).output.contains("NOAUTH"))
        #expect(try clientHost.run("redis-cli", cli + ["-a", "remote-Q2w-token", "PING"]).output.contains("PONG"))
        let python = try clientHost.run("python3", ["-c", "import redis,sys; print(redis.Redis(host=sys.argv[1], port=7700, password=sys.argv[2]).ping())",
                                                    Self.nodeAddress, "remote-Q2w-token"]).output
        #expect(python.contains("True"), "\(python)")
        let debug = try clientHost.run("curl", ["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                                                "-H", "Authorization: Bearer remote-Q2w-token", "http://\(Self.nodeAddress):7702/debug/reactors"]).output
        #expect(debug == "200", "\(debug)")
    }
}
