import Foundation
import Testing

/// The runbook conformance suite (runbook/, issue 13 item 7) in the test
/// command: the operators' runbook's commands, taken verbatim from its fenced
/// blocks, run against a 3-node cluster of this build's binaries (node1..node3
/// through a hosts file in private mount, network and pid namespaces). It
/// passes only when every check passes; runbook/README.md lists what it runs,
/// the stand-ins it uses and the commands it cannot run yet, with why.
@Suite(.serialized)
struct RunbookConformanceTests {
    static let runner = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("runbook/run").path

    @Test(.hangBound) func runbookCommandsWorkAsWrittenAgainstThisBuild() throws {
        let cli = URL(fileURLWithPath: ServerHarness.binaryPath).deletingLastPathComponent()
            .appendingPathComponent("aegiskv-cli").path
        let arguments = ["--bin", ServerHarness.binaryPath, "--cli", cli, "--time-limit", "360"]
        let result = try runTool("python3", [Self.runner] + arguments)
        print(result.output)
        #expect(result.status == 0, "runbook suite failed (exit \(result.status)); replay: runbook/run \(arguments.joined(separator: " "))\n\(result.output)")
        // A pass counts only if the suite got through the runbook: the summary names how many checks ran.
        let summary = result.output.split(separator: "\n").last { $0.contains(" checks passed, ") } ?? ""
        let passed = Int(summary.split(separator: " ").first ?? "") ?? 0
        #expect(passed >= 120, "too few checks ran: \(summary)")
        #expect(summary.contains(" 0 failure(s)"), "\(summary)")
        for section in ["daily health check", "SEV2 step 1", "emergency export", "emergency shutdown", "appendix:",
                        "adding nodes step 3", "removing nodes step 2", "emergency scaling step 3",
                        "single node recovery step 4", "data corruption recovery step 4"] {
            #expect(result.output.contains("ok: \(section)"), "no passing check of \(section)")
        }
    }
}
