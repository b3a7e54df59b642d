import AegisConfig
import AegisStore
import AegisTLS
import CSupport
import Glibc
import Logging
import Synchronization

/// A running node: binds the client port, starts one reactor thread per
/// core, and turns signals into lifecycle changes.
///
/// Signals are blocked in every thread and collected by the main thread
/// with sigwait, so no handler ever runs on a reactor.
public final class Node {
    /// Runs until SIGTERM or SIGINT. `reload` loads the configuration again
    /// the way it was loaded at start (same file, environment and flags);
    /// SIGHUP calls it. `notifier` tells systemd about readiness, reloads,
    /// stopping and liveness. `companions` starts what runs beside the
    /// reactors (the HTTP operations server): after the client port is
    /// bound, before the log is replayed and the reactors serve; they are
    /// stopped after the reactors have drained.
    public static func run(
        _ loaded: LoadedConfig, logger: Logger, configFile: String? = nil,
        reload: (() throws(ConfigError) -> LoadedConfig)? = nil,
        notifier: SystemdNotifier = .fromProcessEnvironment(),
        companions startCompanions: (NodeContext) throws -> [any NodeCompanion] = { _ in [] }
    ) throws -> Int32 {
        _ = aegis_block_signals()
        let fileLimit = aegis_raise_nofile_limit()
        let cpus = CPUBudget.ofThisProcess()
        let reactorCount = loaded.config.reactors == 0 ? cpus.reactors : loaded.config.reactors
        let fileBudget = OpenFileBudget(fileLimit: fileLimit, reactors: reactorCount)
        let config = fileBudget.fitted(loaded).config
        let reload = fileBudget.fittingReloads(reload)

        logAccessPolicy(config, logger: logger)
        if config.tlsEnabled {
            logger.info("TLS on the client port", metadata: [
                "record_layer": "\(TLSService.recordLayerText(kernelOffersTLS: TLSService.kernelOffersTLS()))",
                "client_certificates": "\(config.tlsCAFile.isEmpty ? "not requested" : "required, verified against \(config.tlsCAFile)")",
                "library": "\(TLSContext.libraryVersion)",
                "handshakes_per_address": "\(config.tlsHandshakesPerAddress)",
            ])
        }
        if !config.clusterTLSCertFile.isEmpty {
            logger.info("TLS between nodes: every peer link presents this node's certificate and requires one the cluster CA signed", metadata: [
                "cert_file": "\(config.clusterTLSCertFile)", "ca_file": "\(config.clusterTLSCAFile)",
                "library": "\(TLSContext.libraryVersion)",
            ])
        }
        switch fileBudget.verdict(for: loaded) {
        case .fits:
            break
        case .defaultLowered(let connections):
            logger.info("max_conns follows the open file limit", metadata: [
                "nofile": "\(fileLimit)", "max_conns": "\(connections)", "reserved_fds": "\(fileBudget.reserved)",
                "default_max_conns": "\(AegisConfig.defaults.maxConns)",
            ])
        case .cannotHonour(let possible):
            logger.warning("open file limit cannot hold max_conns connections; past about connections_possible, new clients wait until others close", metadata: [
                "nofile": "\(fileLimit)", "max_conns": "\(loaded.config.maxConns)", "source": "\(loaded.source(of: "max_conns"))",
                "connections_possible": "\(possible)",
            ])
        }

        // Before anything is written: a second node on the same directories
        // must stop before it touches them (or the first one's pid file).
        let directoryLocks = try DataDirectoryLock.acquireAll(for: config)
        defer { withExtendedLifetime(directoryLocks) {} }

        // Written before the port opens, so whoever sees the port sees the pid.
        let pidFile = config.pidFile
        if !pidFile.isEmpty { try writePIDFile(pidFile) }
        defer { if !pidFile.isEmpty { unlink(pidFile) } }

        let listeners = try bindListeners(config.bindAddr, count: reactorCount)
        let port = aegis_socket_local_port(listeners[0])
        StoreAllocator.pinLargeBlockThreshold()
        let node = try NodeContext(config: config, reactorCount: reactorCount, logger: logger)
        CertificateExpiry.warnIfExpired(node, logger: logger)
        node.boundClientPort.store(Int(port), ordering: .relaxed)
        let reactors = try (0..<reactorCount).map { try Reactor(index: $0, node: node, listenFD: listeners[$0]) }
        // Bound before anything serves: a node its peers cannot reach must not start.
        let cluster = try ClusterWiring.makeLoop(node: node, logger: logger)
        let companions = try startCompanions(node)
        defer { for companion in companions { companion.stop() } }
        if config.walMode != .off {
            cluster.noteReplayedShards(try recoverLogs(reactors, config: config, logger: logger))
        }

        var threads: [pthread_t] = []
        let exited = ReactorExits()
        for reactor in reactors {
            threads.append(try startThread {
                _ = aegis_set_current_thread_name("aegis-reactor-\(reactor.index)")
                reactor.run()
                exited.count.wrappingAdd(1, ordering: .releasing)
            })
        }
        try cluster.start()
        node.lifecycle.store(NodeContext.Lifecycle.serving.rawValue, ordering: .releasing)
        var servingMetadata: Logger.Metadata = [
            "node_id": "\(config.nodeID)", "client_addr": "\(config.bindAddr.host):\(port)",
            "reactors": "\(reactorCount)", "shards": "\(config.numShards)", "max_memory_mb": "\(config.maxMemoryMB)",
            "pid": "\(getpid())", "gossip_addr": "\(cluster.selfGossipAddress)",
            "incarnation": "\(cluster.settings.incarnation)",
        ]
        if config.reactors == 0 {
            // Why this many: the default follows the CPUs the process may use.
            servingMetadata["cpus_online"] = "\(cpus.online)"
            servingMetadata["cpus_allowed"] = "\(cpus.affinity)"
            servingMetadata["cpu_quota"] = .string(cpus.quota.map { "\($0)" } ?? "none")
        }
        for companion in companions { servingMetadata.merge(companion.servingMetadata) { $1 } }
        logger.notice("serving", metadata: servingMetadata)
        let notified = notifier.ready(status: servingStatus(node))
        if notified < 0 {
            logger.warning("cannot notify the service manager", metadata: [
                "socket": "\(notifier.socketPath ?? "")", "error": "\(SystemError(operation: "sendto", code: notified))",
            ])
        }

        let supervisor = Supervisor(node: node, logger: logger, notifier: notifier, loader: reload, configFile: configFile,
                                    companions: companions)
        supervisor.waitForStopSignal()
        // The shards this node holds go to their other replicas first, so
        // their writes pause for a hand-off rather than a lease's run-out;
        // then the others hear `left` before this node stops answering, so
        // they stop counting on it at once instead of after dead_timeout.
        node.cluster.post(.leave(handOffWithinMs: ClusterWiring.leaveHandOffMs(node),
                                 announceWithinMs: ClusterWiring.leaveAnnouncementMs(node)))
        cluster.join()
        logger.notice("draining: no new connections, finishing in-flight requests", metadata: [
            "drain_timeout_ms": "\(node.runtime.drainTimeoutMs.load(ordering: .relaxed))",
        ])
        _ = notifier.stopping(status: "draining")
        node.lifecycle.store(NodeContext.Lifecycle.draining.rawValue, ordering: .releasing)
        for reactor in 0..<reactorCount { node.interconnect.wake(reactor) }
        supervisor.waitForReactors(exited: exited.count)
        for thread in threads { pthread_join(thread, nil) }
        node.walFlusher?.stop()
        node.lifecycle.store(NodeContext.Lifecycle.stopped.rawValue, ordering: .releasing)
        let totals = node.totals()
        logger.notice("stopped", metadata: ["commands": "\(totals.commands)", "items": "\(totals.items)"])
        return 0
    }

    /// Each reactor replays its own log on its own thread, in parallel,
    /// before any of them serves: a client never sees a half-replayed node.
    /// Returns what the replay left per shard for the lease machine.
    private static func recoverLogs(_ reactors: [Reactor], config: AegisConfig, logger: Logger) throws -> ReplayedShards {
        let walDirectory = config.effectiveWALDir
        do {
            try WALDirectory.create(walDirectory)
            if let first = reactors.first {
                try WALRelayout.runIfNeeded(walDirectory: walDirectory, reactors: reactors, node: first.node, logger: logger)
            }
            try WALLayout.verifyOrRecord(walDirectory: walDirectory, reactors: reactors.count, shards: config.numShards)
            if config.walMode == .fsync, let node = reactors.first?.node {
                // Its own fault plan: rules count the flusher's calls apart from each reactor's.
                let flusher = try WALNodeFlusher(walDirectory: walDirectory, reactorCount: reactors.count, logger: logger,
                                                 door: KernelDoor(faults: try KernelFaultPlan.fromEnvironment()))
                try flusher.start()
                node.walFlusherSlot.withLock { $0 = flusher }
                logger.notice(flusher.sharesFlushes ? "write-ahead log: one device flush per group commit for all reactors (syncfs)"
                                                  : "write-ahead log: one reactor, each batch syncs itself (fdatasync)",
                            metadata: ["reactors": "\(reactors.count)"])
            }
        } catch {
            throw StartupError("write-ahead log: \(error)")
        }
        let started = aegis_monotonic_ns()
        let results = Mutex<[Int: Result<(WALRecovery.Report, ReplayedShards), WALError>]>([:])
        var threads: [pthread_t] = []
        for reactor in reactors {
            threads.append(try startThread {
                _ = aegis_set_current_thread_name("aegis-replay-\(reactor.index)")
                let result: Result<(WALRecovery.Report, ReplayedShards), WALError>
                do throws(WALError) {
                    let recovered = try reactor.recoverLog()
                    result = .success((recovered.report, recovered.replayed))
                } catch {
                    result = .failure(error)
                }
                results.withLock { $0[reactor.index] = result }
            })
        }
        for thread in threads { pthread_join(thread, nil) }
        let seconds = Double(aegis_monotonic_ns() - started) / 1e9
        var total = WALRecovery.Report()
        var replayedShards = ReplayedShards()
        for index in 0..<reactors.count {
            switch results.withLock({ $0[index]! }) {
            case .failure(let error):
                throw StartupError("write-ahead log: \(error)")
            case .success(let (report, replayed)):
                replayedShards.merge(replayed)
                total.records += report.records
                total.bytes += report.bytes
                total.segments += report.segments
                total.snapshotEntries += report.snapshotEntries
            }
        }
        let megabytes = Double(total.bytes) / 1_048_576
        logger.notice("write-ahead log replayed", metadata: [
            "wal_mode": "\(config.walMode.rawValue)", "wal_dir": "\(walDirectory)",
            "records": "\(total.records)", "snapshot_entries": "\(total.snapshotEntries)", "segments": "\(total.segments)",
            "bytes": "\(total.bytes)", "seconds": "\(format3(seconds))",
            "mb_per_second": "\(seconds > 0 ? format3(megabytes / seconds) : "-")",
        ])
        return replayedShards
    }

    private static func format3(_ value: Double) -> String {
        let scaled = (value * 1000).rounded() / 1000
        return "\(scaled)"
    }

    /// The STATUS= text systemctl status shows while serving.
    static func servingStatus(_ node: NodeContext) -> String {
        "serving clients on \(node.config.bindAddr.host):\(node.boundClientPort.load(ordering: .relaxed))"
    }

    /// Reactor threads that have returned from their loop.
    private final class ReactorExits: Sendable {
        let count = Atomic<Int>(0)
    }

    /// One SO_REUSEPORT listener per reactor, so the kernel spreads new
    /// connections over them. A plain bind is tried first: SO_REUSEPORT
    /// alone would let a second node on the same port silently share it.
    static func bindListeners(_ address: SocketAddress, count: Int) throws -> [Int32] {
        if address.port != 0 {
            let probe = aegis_tcp_listen(address.host, address.port, 1, 0)
            if probe < 0 { throw StartupError("cannot listen on \(address): \(SystemError(operation: "bind", code: -probe))") }
            _ = aegis_close(probe)
        }
        var listeners: [Int32] = []
        var port = address.port
        for _ in 0..<count {
            let fd = aegis_tcp_listen(address.host, port, 4096, 1)
            if fd < 0 {
                for open in listeners { _ = aegis_close(open) }
                throw StartupError("cannot listen on \(address.host):\(port): \(SystemError(operation: "bind", code: -fd))")
            }
            if port == 0 { port = UInt16(aegis_socket_local_port(fd)) }
            listeners.append(fd)
        }
        return listeners
    }

    private static func writePIDFile(_ path: String) throws {
        let text = "\(getpid())\n"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw StartupError("cannot write pid_file \(path): \(SystemError(operation: "open", code: errno))") }
        defer { Glibc.close(fd) }
        // Readable by every user whatever the umask (the unit sets 0077):
        // the runbook's `sudo kill -SIGHUP $(cat /var/run/aegiskv.pid)`
        // runs `cat` as the operator, not as root.
        _ = fchmod(fd, 0o644)
        _ = text.withCString { write(fd, $0, strlen($0)) }
    }

    private final class ThreadStart {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    static func startThread(_ body: @escaping @Sendable () -> Void) throws -> pthread_t {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(ThreadStart(body)).toOpaque()
        let result = pthread_create(&thread, nil, { raw in
            let start = Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue()
            start.body()
            return nil
        }, context)
        if result != 0 {
            Unmanaged<ThreadStart>.fromOpaque(context).release()
            throw SystemError(operation: "pthread_create", code: result)
        }
        return thread
    }
}

/// A service that lives beside the reactors for the life of the node.
public protocol NodeCompanion: AnyObject {
    /// Fields added to the "serving" log line (e.g. the bound health_addr).
    var servingMetadata: Logger.Metadata { get }
    /// SIGHUP: read again the files it serves from (certificates), logging
    /// the outcome to `report`. Called on every reload, on the main thread.
    func reloadFiles(report: Logger)
    func stop()
}

extension NodeCompanion {
    public func reloadFiles(report: Logger) {}
}

public struct StartupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
