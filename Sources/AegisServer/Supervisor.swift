import AegisConfig
import AegisCluster
import AegisLogging
import AegisTLS
import CSupport
import Glibc
import Logging
import Synchronization

/// The main thread's work while reactors serve: wait for signals, reload
/// the configuration on SIGHUP, and ping the systemd watchdog while every
/// reactor makes progress. Runs only on the main thread.
final class Supervisor {
    typealias Loader = () throws(ConfigError) -> LoadedConfig

    let node: NodeContext
    let logger: Logger
    let notifier: SystemdNotifier
    private let loader: Loader?
    private let configFile: String?
    private let companions: [any NodeCompanion]
    /// What the node runs with: the start-up configuration plus every
    /// reloadable change since.
    private(set) var running: AegisConfig
    private let gate: WatchdogGate
    private var nextPingNs: Int64 = 0
    private var reportedStall = false

    init(node: NodeContext, logger: Logger, notifier: SystemdNotifier, loader: Loader?, configFile: String?,
         companions: [any NodeCompanion] = []) {
        self.companions = companions
        self.node = node
        self.logger = logger
        self.notifier = notifier
        self.loader = loader
        self.configFile = configFile
        self.running = node.config
        self.gate = WatchdogGate(node: node)
        if let interval = notifier.watchdogIntervalMs { nextPingNs = aegis_monotonic_ns() + Int64(interval) * 1_000_000 }
    }

    /// Returns on SIGTERM or SIGINT.
    func waitForStopSignal() {
        while true {
            let signal = waitForSignal()
            if signal == AEGIS_SIGTERM || signal == AEGIS_SIGINT { return }
            if signal == AEGIS_SIGHUP { reload() }
            pingWatchdogIfDue()
        }
    }

    /// Waits for every reactor thread to finish its drain, still pinging the
    /// watchdog meanwhile (a drain may take up to drain_timeout).
    func waitForReactors(exited: borrowing Atomic<Int>) {
        guard notifier.watchdogIntervalMs != nil else { return }
        while exited.load(ordering: .acquiring) < node.reactorCount {
            _ = aegis_wait_signal_timeout(20)
            pingWatchdogIfDue()
        }
    }

    private func waitForSignal() -> Int32 {
        guard notifier.watchdogIntervalMs != nil else { return aegis_wait_signal() }
        let waitMs = max(0, (nextPingNs - aegis_monotonic_ns()) / 1_000_000)
        return aegis_wait_signal_timeout(Int32(min(waitMs, Int64(Int32.max))))
    }

    private func pingWatchdogIfDue() {
        guard let interval = notifier.watchdogIntervalMs else { return }
        let now = aegis_monotonic_ns()
        if now < nextPingNs { return }
        nextPingNs = now + Int64(interval) * 1_000_000
        if gate.allReactorsProgressed(node) {
            if reportedStall {
                reportedStall = false
                logger.notice("every reactor makes progress again; watchdog pings resumed")
            }
            _ = notifier.watchdog()
        } else if !reportedStall {
            reportedStall = true
            logger.error("watchdog pings withheld: reactor made no progress", metadata: [
                "reactors": "\(gate.stalled.map(String.init).joined(separator: ","))",
            ])
        }
    }

    // MARK: - Reload

    private func reload() {
        _ = notifier.reloading()
        defer { _ = notifier.send(["READY=1", "STATUS=" + Node.servingStatus(node)]) }
        // The reload report is written whatever log_level says: the operator
        // asked for the reload and needs to see its outcome.
        var report = logger
        report.logLevel = .trace
        // Certificates are rotated by replacing the files, not the config,
        // so they are read again on every reload, even one whose
        // configuration file is broken.
        defer { for companion in companions { companion.reloadFiles(report: report) } }
        let source: Logger.Metadata = ["config_file": "\(configFile ?? "(none)")"]
        guard let loader else {
            report.warning("reload: not available in this process; configuration unchanged", metadata: source)
            return
        }
        let loaded: LoadedConfig
        do {
            loaded = try loader()
        } catch {
            let problems = error.description.split(separator: "\n").joined(separator: "; ")
            report.error("reload failed, keeping the running configuration: \(problems)", metadata: source)
            return
        }
        // From what runs now, CONFIG SET changes included: the file decides again.
        let plan = ReloadPlan(running: node.runtime.running, loaded: loaded.config)
        node.applyReloadable(plan.next, keys: Set(plan.applied.map(\.key)))
        running = plan.next
        report.notice("\(plan.report())", metadata: source)
        reloadCertificates(report)
        if !plan.restartRequired.isEmpty {
            logger.warning("changed settings need a restart to take effect; running with the old values until then", metadata: [
                "keys": "\(plan.restartRequired.map(\.key).joined(separator: ","))",
            ])
        }
    }

    /// Every reload reads the certificate, key and CA files again, at the
    /// paths the node started with: rotation replaces the files' contents.
    /// Connections accepted afterwards use them; open ones keep theirs.
    private func reloadCertificates(_ report: Logger) {
        reloadPeerCertificates(report)
        reloadClientCertificates(report)
        CertificateExpiry.warnIfExpired(node, logger: report)
    }

    private func reloadClientCertificates(_ report: Logger) {
        guard let tls = node.tls else { return }
        let running = node.runtime.running
        reportCertificateReload(tls.reload(running)?.message, report,
                                files: (running.tlsCertFile, running.tlsKeyFile, running.tlsCAFile),
                                refused: "TLS certificates not reloaded, new connections keep the previous ones",
                                loaded: "TLS certificate and key loaded again; new connections use them")
    }

    /// The same for the links between nodes: links opened after the reload
    /// use the new files; open links keep theirs until they close.
    private func reloadPeerCertificates(_ report: Logger) {
        guard let peerTLS = node.peerTLS else { return }
        let running = node.runtime.running
        reportCertificateReload(peerTLS.reload(running)?.message, report,
                                files: (running.clusterTLSCertFile, running.clusterTLSKeyFile, running.clusterTLSCAFile),
                                refused: "cluster TLS certificates not reloaded, new peer links keep the previous ones",
                                loaded: "cluster TLS certificate, key and CA loaded again; new peer links use them")
    }

    /// One line per reload of a certificate set: an error with OpenSSL's
    /// reason when the files were refused, else a notice; both name the files.
    private func reportCertificateReload(_ problem: String?, _ report: Logger, files: (cert: String, key: String, ca: String),
                                         refused: String, loaded: String) {
        let metadata: Logger.Metadata = ["cert_file": "\(files.cert)", "key_file": "\(files.key)", "ca_file": "\(files.ca)"]
        if let problem {
            report.error("reload: \(refused): \(problem)", metadata: metadata)
        } else {
            report.notice("reload: \(loaded)", metadata: metadata)
        }
    }
}
