/// Settings that ask for a guarantee this build cannot give.
///
/// Most keys of features not built yet (TLS file paths) are inert: the
/// node only warns that they are stored. `tls_enabled` true is not inert:
/// a node that started with it would serve plaintext to a client configured
/// for TLS while the operator believes otherwise. So it stops start-up (and
/// `--validate`) instead. It is kept apart from `ConfigLoader.load`'s checks
/// because the value is valid configuration: a build with TLS will accept
/// it unchanged. (`read_quorum` above 1 was refused here until read quorums
/// were built.)
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
        return lines
    }
}
