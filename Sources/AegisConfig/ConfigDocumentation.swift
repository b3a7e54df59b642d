/// The key table of docs/configuration.md, generated from `ConfigKeys` so a
/// test can check that the document matches the code.
enum ConfigDocumentation {
    static let tableHeader = """
        | key | type | default | environment variable | flag | on SIGHUP | meaning |
        |-----|------|---------|----------------------|------|-----------|---------|
        """

    static func table() -> String {
        let rows = ConfigKeys.all.map { spec -> String in
            let defaultText = spec.name == "node_id" ? "the host name" : "`\(spec.value(AegisConfig.defaults).json)`"
            let reload = AegisConfig.restartRequiredKeys.contains(spec.name) ? "restart required" : "reloaded"
            let cells = ["`\(spec.name)`", spec.type, defaultText, "`\(spec.envVar)`", "`\(spec.flag)`", reload, spec.meaning]
            return "| " + cells.map(escape).joined(separator: " | ") + " |"
        }
        return ([tableHeader] + rows).joined(separator: "\n")
    }

    private static func escape(_ cell: String) -> String {
        String(cell.flatMap { $0 == "|" ? ["\\", "|"] : [$0] })
    }
}
