import Foundation
import Testing

/// The chaos harness (chaos/, issue 12 item 6) in the test command: its
/// checker on hand-made histories, then a one-minute run with real processes
/// and seeded faults against this build's binary. The run passes only on the
/// checker's PASS; the checker's own tests make sure a PASS means something
/// (a lost acknowledged write and a resurrected delete are flagged).
///
/// The run is at write_quorum 0, the only one this build accepts: losses are
/// counted in its output, and it fails on values nobody wrote, on nodes that
/// disagree after healing, on a counter above what was incremented, and on a
/// cluster that does not re-form. Long runs: chaos/run --minutes N --seed S.
@Suite(.serialized)
struct ChaosHarnessTests {
    static let chaosDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("chaos").path

    @Test func checkerFlagsLostWritesAndResurrectedDeletesInHandMadeHistories() throws {
        let result = try runTool("python3", ["-m", "unittest", "discover", "-v", "-s", Self.chaosDirectory, "-p", "test_*.py"])
        #expect(result.status == 0, "\(result.output)")
        // unittest prints "Ran 0 tests" and exits 0 when discovery finds nothing.
        let ran = result.output.split(separator: "\n").first { $0.hasPrefix("Ran ") }
            .flatMap { Int($0.split(separator: " ")[1]) } ?? 0
        #expect(ran >= 10, "the checker's tests did not run: \(result.output)")
        for name in ["test_lost_acknowledged_write_fails_at_w2", "test_resurrected_delete_fails_at_w2"] {
            #expect(result.output.contains("\(name) (test_checker.RegisterTests.\(name)) ... ok"), "\(result.output)")
        }
    }

    @Test(.hangBound) func oneMinuteChaosRunAgainstThisBuildPasses() throws {
        let seed = ProcessInfo.processInfo.environment["AEGIS_CHAOS_SEED"] ?? "1"
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-chaos-\(UUID().uuidString)").path
        let arguments = ["--nodes", "3", "--minutes", "1", "--seed", seed, "--out", out]
        let replay = "AEGISKV_BIN=\(ServerHarness.binaryPath) chaos/run \(arguments.joined(separator: " "))"
        let result = try runTool("/usr/bin/env", ["AEGISKV_BIN=\(ServerHarness.binaryPath)", "python3",
                                                  Self.chaosDirectory + "/run"] + arguments)
        print(result.output)
        #expect(result.status == 0, "chaos run failed (exit \(result.status)); replay: \(replay)\n\(result.output)")
        #expect(result.output.contains("VERDICT: PASS"), "\(result.output)")
        // The run must have done something for its PASS to count.
        func figure(after label: String) -> Int {
            guard let line = result.output.split(separator: "\n").first(where: { $0.contains(label) }),
                  let tail = line.components(separatedBy: label).last else { return 0 }
            return Int(tail.split(separator: " ").first ?? "") ?? 0
        }
        #expect(figure(after: "operations recorded: ") >= 100, "\(result.output)")
        #expect(figure(after: "faults injected: ") >= 2, "\(result.output)")
        if result.status == 0 { try? FileManager.default.removeItem(atPath: out) }
    }
}
