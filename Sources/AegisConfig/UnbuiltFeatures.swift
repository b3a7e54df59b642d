/// Settings that ask for a guarantee this build cannot give.
///
/// Most keys of features not built yet are inert: the node only warns that
/// they are stored. A read quorum above 1 is not inert: a node that
/// started with it would answer a read from one replica while the operator
/// believes otherwise. So it stops start-up (and `--validate`) instead.
/// It is kept apart from `ConfigLoader.load`'s checks because the value is
/// valid configuration: a build with read quorums will accept it unchanged.
/// (TLS was refused here until it was built: issue 16.)
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
        if config.readQuorum > 1 {
            lines.append("config: \(about("read_quorum")): read quorums are not available in this build yet, "
                + "so a read would consult this node alone; use 1")
        }
        return lines
    }
}
