import AegisConfig

/// What a SIGHUP reload does with a freshly loaded configuration: which
/// changed keys apply at once, which need a restart, and the configuration
/// the node runs with afterwards (the old one with the reloadable keys
/// taken from the new one).
///
/// Restart-required keys keep their running values, so a later reload
/// reports them again until the node is restarted.
public struct ReloadPlan: Sendable {
    public struct Change: Sendable, Equatable, CustomStringConvertible {
        public var key: String
        /// Values as `AegisConfig.displayValue` shows them: secrets masked.
        public var old: String
        public var new: String

        public var description: String { "\(key) \(Self.shown(old)) → \(Self.shown(new))" }

        private static func shown(_ value: String) -> String { value.isEmpty ? "\"\"" : value }
    }

    public var applied: [Change]
    public var restartRequired: [Change]
    public var next: AegisConfig

    public init(running: AegisConfig, loaded: AegisConfig) {
        var next = running
        var applied: [Change] = []
        var restart: [Change] = []
        let reloadable = Set(AegisConfig.reloadableKeys)
        for key in loaded.changedKeys(from: running) {
            let change = Change(key: key, old: running.displayValue(forKey: key)!, new: loaded.displayValue(forKey: key)!)
            if reloadable.contains(key) {
                applied.append(change)
                next.copyValue(ofKey: key, from: loaded)
            } else {
                restart.append(change)
            }
        }
        self.applied = applied
        self.restartRequired = restart
        self.next = next
    }

    public var isEmpty: Bool { applied.isEmpty && restartRequired.isEmpty }

    /// The one log line a reload writes: every change, applied or not.
    /// `notes` adds a remark after an applied key (for settings stored but
    /// not yet used by this build).
    public func report(notes: [String: String] = [:]) -> String {
        if isEmpty { return "reload: configuration unchanged" }
        func list(_ changes: [Change], _ notes: [String: String]) -> String {
            changes.map { change in change.description + (notes[change.key].map { " (\($0))" } ?? "") }
                .joined(separator: ", ")
        }
        var parts: [String] = []
        if !applied.isEmpty { parts.append("applied " + list(applied, notes)) }
        if !restartRequired.isEmpty { parts.append("not applied, restart required: " + list(restartRequired, [:])) }
        return "reload: " + parts.joined(separator: "; ")
    }
}
