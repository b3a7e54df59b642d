/// Where a key's value came from.
public enum ConfigSource: Sendable, Hashable, CustomStringConvertible {
    case defaults
    /// The JSON file, by the path it was given as.
    case file(String)
    /// An environment variable, by name (for example "AEGIS_BIND_ADDR").
    case environment(String)
    /// A command-line flag, by name (for example "--bind-addr").
    case flag(String)

    /// "defaults", the file path, the variable name, or the flag.
    public var description: String {
        switch self {
        case .defaults: return "defaults"
        case .file(let path): return path
        case .environment(let name): return name
        case .flag(let name): return name
        }
    }
}

/// A validated configuration and, for each key some layer set, the layer
/// that set it last. Keys absent from `explicitlySet` have their defaults.
public struct LoadedConfig: Sendable {
    public var config: AegisConfig
    public var explicitlySet: [String: ConfigSource]
    /// AegisKV v1 keys the file held that mean nothing here, in file order;
    /// the node logs each once at start (see `ConfigKeys.v1Only`).
    public var ignoredV1Keys: [IgnoredKey] = []

    public init(config: AegisConfig, explicitlySet: [String: ConfigSource]) {
        self.config = config
        self.explicitlySet = explicitlySet
    }

    /// The layer that decided `key`'s value (`.defaults` when none set it).
    public func source(of key: String) -> ConfigSource {
        explicitlySet[key] ?? .defaults
    }
}

/// A key accepted from a file and then ignored, with why it has no effect.
public struct IgnoredKey: Sendable, Hashable {
    public var key: String
    public var source: ConfigSource
    public var reason: String

    /// The warning logged at start.
    public var message: String {
        "config: \(key) in \(source) is an AegisKV v1 key with no counterpart in this release; ignored: \(reason)"
    }
}

/// A configuration that cannot be used. `description` holds one line per
/// problem, each starting with "config: " and naming the key, where it came
/// from and what is expected.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var description: String
    /// The key of the first problem, when it concerns one key.
    public var key: String?
    /// The source of the first problem, when known.
    public var source: ConfigSource?

    public init(_ description: String, key: String? = nil, source: ConfigSource? = nil) {
        self.description = description
        self.key = key
        self.source = source
    }
}

/// Builds the configuration from its layers, later overriding earlier:
/// built-in defaults < JSON file < `AEGIS_<KEY>` environment variables <
/// `--kebab-case` flags. Every value from every layer is validated, so a bad
/// value is reported even when a later layer overrides it.
public enum ConfigLoader {
    /// The largest config file read, in bytes.
    public static let maxFileSize = 1 << 20

    /// Loads and validates. Throws a `ConfigError` listing every problem.
    public static func load(file: String?, environment: [String: String], flags: ConfigFlags) throws(ConfigError) -> LoadedConfig {
        try load(file: file, environment: environment, flagValues: flags.values)
    }

    /// The environment variable for `key`: "AEGIS_" + key upper-cased.
    public static func environmentVariable(forKey key: String) -> String { "AEGIS_" + key.uppercased() }

    /// The flag for `key`: "--" + key in kebab-case.
    public static func flag(forKey key: String) -> String { "--" + String(key.map { $0 == "_" ? "-" : $0 }) }

    /// CONFIG SET: `config` with `key` set from `text` (read as an
    /// environment variable's text), checked alone and against the other
    /// keys; the problem in words otherwise.
    public static func setting(_ key: String, to text: String, in config: AegisConfig) -> Result<AegisConfig, ConfigError> {
        guard let spec = ConfigKeys.byName[key] else { return .failure(ConfigError("unknown key \(quoted(key))", key: key)) }
        var changed = config
        if let problem = spec.apply(&changed, .text(text)) {
            return .failure(ConfigError(problem.message, key: key))
        }
        var loaded = LoadedConfig(config: changed, explicitlySet: [:])
        loaded.explicitlySet[key] = .flag("CONFIG SET")
        if let problem = CrossChecks.problems(in: loaded).first {
            return .failure(ConfigError(problem.message.replacing("config: ", with: "", maxReplacements: 1), key: key))
        }
        return .success(changed)
    }

    /// `load` with flags given as (key, text) pairs, in order.
    static func load(file: String?, environment: [String: String], flagValues: [(key: String, value: String, flag: String)]) throws(ConfigError) -> LoadedConfig {
        var builder = Builder()
        if let file {
            let members = try readFile(file)
            builder.applyFile(members, path: file)
        }
        builder.applyEnvironment(environment)
        for (key, value, flag) in flagValues {
            builder.apply(key: key, raw: .text(value), source: .flag(flag))
        }
        if builder.problems.isEmpty {
            builder.problems = CrossChecks.problems(in: builder.loaded)
        }
        if let first = builder.problems.first {
            throw ConfigError(builder.problems.map(\.message).joined(separator: "\n"), key: first.key, source: first.source)
        }
        return builder.loaded
    }

    /// Reads and parses the file; it must hold a JSON object.
    private static func readFile(_ path: String) throws(ConfigError) -> [(name: String, value: JSONValue)] {
        let bytes: [UInt8]
        switch Platform.readFile(path, limit: maxFileSize) {
        case .success(let read): bytes = read
        case .failure(.system(let reason)):
            throw ConfigError("config: cannot read config file \(path): \(reason)", source: .file(path))
        case .failure(.tooLarge(let limit)):
            throw ConfigError("config: config file \(path) is larger than \(limit) bytes", source: .file(path))
        }
        switch JSONParser.parse(bytes) {
        case .failure(let error):
            throw ConfigError("config: \(path) is not valid JSON: \(error.description)", source: .file(path))
        case .success(.object(let members)):
            return members
        case .success(let other):
            throw ConfigError("config: \(path) must hold a JSON object such as {\"bind_addr\": \":7700\"}, got \(other.summary)",
                              source: .file(path))
        }
    }
}

/// One problem found while loading.
struct ConfigProblem {
    var message: String
    var key: String?
    var source: ConfigSource?
}

/// Accumulates layers into a configuration, collecting problems.
private struct Builder {
    var loaded = LoadedConfig(config: .defaults, explicitlySet: [:])
    var problems: [ConfigProblem] = []

    mutating func apply(key: String, raw: RawValue, source: ConfigSource) {
        guard let spec = ConfigKeys.byName[key] else {
            problems.append(ConfigProblem(message: "config: unknown key \(quoted(key)) in \(source)", key: key, source: source))
            return
        }
        if let problem = spec.apply(&loaded.config, raw) {
            problems.append(ConfigProblem(message: "config: \(key) in \(source): \(problem.message)", key: key, source: source))
        } else {
            loaded.explicitlySet[key] = source
        }
    }

    mutating func applyFile(_ members: [(name: String, value: JSONValue)], path: String) {
        let source = ConfigSource.file(path)
        let names = Set(members.map(\.name))
        for (alias, key) in AegisConfig.keyAliases.sorted(by: { $0.key < $1.key }) where names.contains(alias) && names.contains(key) {
            problems.append(ConfigProblem(
                message: "config: \(key) and \(alias) are both set in \(path); \(alias) is another name for \(key), keep one",
                key: key, source: source))
        }
        for (name, value) in members {
            let key = AegisConfig.keyAliases[name] ?? name
            if let reason = ConfigKeys.v1OnlyByName[name] {
                loaded.ignoredV1Keys.append(IgnoredKey(key: name, source: source, reason: reason))
                continue
            }
            if ConfigKeys.byName[key] == nil {
                let hint = Suggestions.closest(to: name, among: AegisConfig.allKeys + AegisConfig.keyAliases.keys.sorted())
                    .map { " (did you mean \(quoted($0))?)" } ?? ""
                problems.append(ConfigProblem(message: "config: unknown key \(quoted(name)) in \(path)\(hint)", key: name, source: source))
                continue
            }
            apply(key: key, raw: .json(value), source: source)
        }
    }

    /// Applies every `AEGIS_*` variable; any other name is ignored. An
    /// `AEGIS_*` name that is no key is an error (it is most likely a typo).
    mutating func applyEnvironment(_ environment: [String: String]) {
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix("AEGIS_") {
            let key = String(name.dropFirst("AEGIS_".count)).lowercased()
            guard ConfigKeys.byName[key] != nil, name == ConfigLoader.environmentVariable(forKey: key) else {
                let hint = Suggestions.closest(to: key, among: AegisConfig.allKeys)
                    .map { " (did you mean \(ConfigLoader.environmentVariable(forKey: $0))?)" } ?? ""
                problems.append(ConfigProblem(message: "config: unknown key \(quoted(key)) in \(name)\(hint)",
                                              key: key, source: .environment(name)))
                continue
            }
            apply(key: key, raw: .text(value), source: .environment(name))
        }
    }
}

/// Checks between keys, run once every value is valid on its own.
enum CrossChecks {
    static func problems(in loaded: LoadedConfig) -> [ConfigProblem] {
        let config = loaded.config
        var problems: [ConfigProblem] = []
        func about(_ key: String) -> String {
            let value = config.displayValue(forKey: key) ?? ""
            let shown = value.isEmpty ? "\"\"" : value
            switch loaded.source(of: key) {
            case .defaults: return "\(key) (\(shown), the default)"
            case let source: return "\(key) (\(shown), from \(source))"
            }
        }
        func fail(_ key: String, _ message: String) {
            problems.append(ConfigProblem(message: "config: " + message, key: key, source: loaded.source(of: key)))
        }

        if config.tlsEnabled {
            for (key, path) in [("tls_cert_file", config.tlsCertFile), ("tls_key_file", config.tlsKeyFile)] where path.isEmpty {
                fail("tls_enabled", "\(about("tls_enabled")) requires \(key), which is not set")
            }
        }
        // Either both or neither: half a TLS setup must not fall back to plain http.
        if config.healthTLSCertFile.isEmpty != config.healthTLSKeyFile.isEmpty {
            let (given, missing) = config.healthTLSCertFile.isEmpty
                ? ("health_tls_key_file", "health_tls_cert_file") : ("health_tls_cert_file", "health_tls_key_file")
            fail(given, "\(about(given)) needs \(missing) too (https on health_addr takes a certificate and its key)")
        }
        if !config.healthTLSCAFile.isEmpty && config.healthTLSCertFile.isEmpty {
            fail("health_tls_ca_file", "\(about("health_tls_ca_file")) needs health_tls_cert_file and health_tls_key_file: client certificates are asked for only over https")
        }
        if !config.authTokenNext.isEmpty && config.authToken.isEmpty {
            fail("auth_token_next", "auth_token_next is set but auth_token is empty: auth_token_next is the second token accepted while clients move to a new auth_token; set auth_token")
        }
        if config.suspectTimeout >= config.deadTimeout {
            fail("suspect_timeout", "\(about("suspect_timeout")) must be shorter than \(about("dead_timeout"))")
        }
        if config.gossipInterval >= config.suspectTimeout {
            fail("gossip_interval", "\(about("gossip_interval")) must be shorter than \(about("suspect_timeout"))")
        }
        for key in ["write_quorum", "read_quorum"] {
            let quorum = key == "write_quorum" ? config.writeQuorum : config.readQuorum
            if quorum > config.replicationFactor {
                fail(key, "\(about(key)) must not exceed \(about("replication_factor"))")
            }
        }
        let listeners: [(key: String, address: SocketAddress)] = [
            ("bind_addr", config.bindAddr), ("gossip_bind_addr", config.gossipBindAddr), ("health_addr", config.healthAddr),
        ]
        for (i, first) in listeners.enumerated() {
            for second in listeners[(i + 1)...] where clash(first.address, second.address) {
                fail(second.key, "\(about(first.key)) and \(about(second.key)) would listen on the same port")
            }
        }
        return problems
    }

    /// Two listening addresses that cannot both be bound: same non-zero port
    /// and the same host, or either on every interface.
    private static func clash(_ a: SocketAddress, _ b: SocketAddress) -> Bool {
        a.port != 0 && a.port == b.port && (a.host == b.host || a.isUnspecified || b.isUnspecified)
    }
}

enum Suggestions {
    /// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
    static func closest(to word: String, among candidates: [String]) -> String? {
        let scored = candidates.map { ($0, distance(Array(word), Array($0))) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, word.count / 4) else { return nil }
        return best.0
    }

    /// Levenshtein distance, with a swap of two neighbours counted as one edit.
    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }
}
