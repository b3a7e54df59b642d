import AegisConfig

/// Fixed bounds of the HTTP operations port (documented in docs/operations.md).
/// They live here, not in AegisAdmin, because the node's descriptor budget
/// must set their descriptors aside before it sizes max_conns.
public enum OperationsPortLimits {
    /// Connections open at once. Past it, the connection that has waited
    /// longest for its request is closed to make room, or the new one is
    /// refused with 503; so slow clients cannot take every descriptor.
    public static let maxConnections = 64
    /// A request must be complete (head and body) this long after the
    /// connection opened or the previous response was sent; a client that
    /// trickles bytes is closed then, however steadily it sends.
    public static let requestDeadlineSeconds: Int64 = 10
    /// Pause before accepting again when accept fails for want of
    /// descriptors, so the port does not spin on a readable listener.
    public static let acceptPauseMilliseconds: Int64 = 100
}

/// How many client connections the process can hold given its open-file
/// limit (RLIMIT_NOFILE, soft limit already raised to the hard one, as
/// redis-server does).
///
/// A default max_conns above that limit only promises what the kernel will
/// refuse, so the default follows the limit, less a reserve for the node's
/// own descriptors, and says so once at info level. A max_conns the operator
/// chose is kept as chosen and warned about, since it cannot be honoured.
public struct OpenFileBudget: Sendable {
    /// The soft limit in effect (<= 0 when it could not be read).
    public let fileLimit: Int
    public let reactors: Int

    public init(fileLimit: Int, reactors: Int) {
        self.fileLimit = fileLimit
        self.reactors = reactors
    }

    /// Descriptors that are not client connections: stdio, per reactor its
    /// listener, epoll, eventfd, timerfd, io_uring and log segments; the
    /// operations port at its cap; and slack for files opened briefly
    /// (config, pid file, /proc reads, snapshots).
    public var reserved: Int { 64 + OperationsPortLimits.maxConnections + 16 * reactors }

    /// Client connections the limit leaves room for; nil when the limit is unknown.
    public var connectionsPossible: Int? {
        fileLimit > 0 ? max(1, fileLimit - reserved) : nil
    }

    public enum Verdict: Equatable, Sendable {
        case fits
        /// max_conns was not set and is lowered to this.
        case defaultLowered(to: Int)
        /// max_conns was set by the operator above what the limit allows.
        case cannotHonour(possible: Int)
    }

    public func verdict(for loaded: LoadedConfig) -> Verdict {
        guard let possible = connectionsPossible, loaded.config.maxConns > possible else { return .fits }
        return loaded.explicitlySet["max_conns"] == nil ? .defaultLowered(to: possible) : .cannotHonour(possible: possible)
    }

    /// `loaded` with a default max_conns fitted to the limit. Applied to
    /// every reload too, so a SIGHUP does not put back the unfitted default.
    public func fitted(_ loaded: LoadedConfig) -> LoadedConfig {
        guard case .defaultLowered(let possible) = verdict(for: loaded) else { return loaded }
        var fitted = loaded
        fitted.config.maxConns = possible
        return fitted
    }

    /// `load` with `fitted` applied to what it returns. (A closure literal
    /// with typed throws inside `Optional.map` crashed this compiler.)
    func fittingReloads(_ load: (() throws(ConfigError) -> LoadedConfig)?) -> (() throws(ConfigError) -> LoadedConfig)? {
        guard let load else { return nil }
        let budget = self
        func reload() throws(ConfigError) -> LoadedConfig {
            budget.fitted(try load())
        }
        return reload
    }
}
