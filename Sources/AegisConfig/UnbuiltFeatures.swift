/// Settings that ask for a guarantee this build cannot give.
///
/// Most keys of features not built yet (gossip, seeds, TLS file paths) are
/// inert: the node only warns that they are stored. These two are not
/// inert: a node that started with them would serve plaintext to a client
/// configured for TLS, or answer a read from one replica, while the
/// operator believes otherwise. So they stop start-up (and `--validate`)
/// instead. They are kept apart from `ConfigLoader.load`'s checks because
/// the values are valid configuration: a build with replication and TLS
/// will accept them unchanged.
public enum UnbuiltFeatures {
    /// One "config: ..." line per setting that cannot be honoured, naming
    /// the key, its value, where it came from and what to do; empty when the
    /// configuration asks for nothing missing.
    public static func refusals(in loaded: LoadedConfig) -> [String] {
        let config = loaded.config
        var lines: [String] = []
        func about(_ key: String) -> String {
            "\(key) (\(config.displayValue(forKey: key) ?? ""), from \(loaded.source(of: key)))"
        }
        if config.tlsEnabled {
            lines.append("config: \(about("tls_enabled")): TLS is not available in this build yet, "
                + "so the node would serve plaintext; set tls_enabled to false or leave it out")
        }
        if config.readQuorum > 1 {
            lines.append("config: \(about("read_quorum")): read quorums are not available in this build yet, "
                + "so a read would consult this node alone; use 1")
        }
        return lines
    }
}
