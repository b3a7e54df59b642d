import Foundation
import Testing
@testable import AegisServer

/// What a build says about itself everywhere an operator looks during a
/// rolling upgrade. The suite runs a developer build, which must not pass
/// for a release: scripts/test-release checks a stamped one.
struct BuildInfoTests {
    @Test func versionFlagSaysItIsAnUnstampedDevelopmentBuild() throws {
        let result = try runTool(ServerHarness.binaryPath, ["--version"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output == "aegiskv \(BuildInfo.releaseVersion)-dev (commit unknown, built unknown)\n")
        #expect(!BuildInfo.isStamped)
    }

    @Test func infoServerStatsAndMetricsNameTheBuild() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let info = try runTool("redis-cli", ["-p", String(server.port), "INFO", "server"]).output
        let lines = Set(info.split(whereSeparator: \.isNewline).map(String.init))  // "\r\n" is one Character
        #expect(lines.contains("aegiskv_version:\(BuildInfo.releaseVersion)-dev"), "\(info)")
        #expect(lines.contains("aegiskv_git_sha1:unknown"), "\(info)")
        #expect(lines.contains("aegiskv_build_date:unknown"), "\(info)")
        // Clients gate features on redis_version: it stays the Redis release whose commands we follow.
        #expect(lines.contains("redis_version:\(Reactor.redisCompatibleVersion)"), "\(info)")

        let admin = AdminHTTPTests()
        let stats = try admin.http("GET", server.healthURL + "/stats").body
        #expect(try admin.jq(".version", stats) == #"{"version":"\#(BuildInfo.releaseVersion)-dev","commit":"unknown","build_date":"unknown"}"#)

        let metrics = try admin.http("GET", server.healthURL + "/metrics").body
        let buildInfo = metrics.split(separator: "\n").filter { $0.hasPrefix("aegis_build_info") }
        #expect(buildInfo == [#"aegis_build_info{version="\#(BuildInfo.releaseVersion)-dev",commit="unknown"} 1"#], "\(metrics)")
    }
}
