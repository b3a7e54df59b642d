import CSupport

/// What this binary is: the release version, and for builds made by
/// scripts/release the commit and the date they were built from. Operators
/// compare these across nodes during a rolling upgrade (INFO server,
/// /stats, aegis_build_info, `aegiskv --version`).
public enum BuildInfo {
    /// The version scripts/release names its artifacts after; bump it here.
    public static let releaseVersion = "0.2.0"

    /// `releaseVersion` for a stamped release build; a build without a
    /// stamp says so with a "-dev" suffix rather than pass for the release.
    public static var version: String { isStamped ? releaseVersion : releaseVersion + "-dev" }

    public static var commit: String { stampedValue(aegis_build_commit()) ?? "unknown" }

    public static var buildDate: String { stampedValue(aegis_build_date()) ?? "unknown" }

    public static var isStamped: Bool { stampedValue(aegis_build_commit()) != nil }

    /// The line `aegiskv --version` prints; scripts/release reads the version from it.
    public static var versionLine: String { "aegiskv \(version) (commit \(commit), built \(buildDate))" }

    private static func stampedValue(_ text: UnsafePointer<CChar>) -> String? {
        let value = String(cString: text)
        return value.isEmpty ? nil : value
    }
}
