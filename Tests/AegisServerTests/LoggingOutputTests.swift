import Foundation
import Glibc
import Testing

/// What the real binary writes to stderr: `<N>` priority prefixes when
/// stderr is the journal, readable timestamped lines otherwise, JSON on
/// request, start-up errors included.
@Suite(.serialized)
struct LoggingOutputTests {
    static let prefix = try! NSRegularExpression(pattern: #"^<([0-7])>"#)

    /// A config file whose one key, from AegisKV v1, is logged at start as a
    /// warning: these tests need a line of each level a start writes.
    static func configWithAnIgnoredV1Key() throws -> String {
        let path = FileManager.default.temporaryDirectory.path + "/aegis-v1-\(UUID().uuidString).json"
        try #"{"shard_max_bytes": 1048576}"#.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func priority(_ line: String) -> Int? {
        guard let match = prefix.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)),
              let range = Range(match.range(at: 1), in: line) else { return nil }
        return Int(line[range])
    }

    @Test func underTheJournalEveryLineHasItsPriority() throws {
        let config = try Self.configWithAnIgnoredV1Key()
        defer { unlink(config) }
        let node = try SpawnedNode(arguments: ["--reactors", "1", "--config", config], journal: true)
        #expect(node.stop() == 0)
        let lines = node.logLines()
        #expect(lines.count >= 4, "\(lines)")
        for line in lines { #expect(Self.priority(line) != nil, "no priority prefix: \(line)") }
        #expect(lines.contains { $0.hasPrefix("<5>notice serving ") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("<4>warning config: shard_max_bytes in ") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("<5>notice stopped") }, "\(lines)")
        // The journal adds its own timestamp.
        #expect(!lines.contains { $0.range(of: #"\d{4}-\d\d-\d\dT\d\d:"#, options: .regularExpression) != nil }, "\(lines)")
    }

    @Test func startupErrorsUnderTheJournalAreErrors() throws {
        let directory = FileManager.default.temporaryDirectory.path
        let output = directory + "/aegis-startup-\(UUID().uuidString).log"
        defer { unlink(output) }
        let missing = directory + "/aegis-missing-\(UUID().uuidString).json"
        #expect(try SpawnedNode.runToExit(["--config", missing], journal: true, output: output) == 2)
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(text == "<3>error config: cannot read config file \(missing): No such file or directory\n", "\(text)")

        #expect(try SpawnedNode.runToExit(["--reactors", "many"], journal: true, output: output) == 2)
        let badFlag = try String(contentsOfFile: output, encoding: .utf8)
        #expect(badFlag.hasPrefix("<3>error config: reactors in --reactors"), "\(badFlag)")

        #expect(try SpawnedNode.runToExit(["--no-such-flag"], journal: true, output: output) != 0)
        let unknown = try String(contentsOfFile: output, encoding: .utf8)
        #expect(unknown.hasPrefix("<3>error invalid command line: Unknown option '--no-such-flag'"), "\(unknown)")
        #expect(unknown.split(separator: "\n").allSatisfy { Self.priority(String($0)) == 3 }, "\(unknown)")
    }

    @Test func portInUseUnderTheJournalIsCritical() throws {
        let first = try SpawnedNode(arguments: ["--reactors", "1"])
        defer { #expect(first.stop() == 0) }
        let output = FileManager.default.temporaryDirectory.path + "/aegis-port-\(UUID().uuidString).log"
        defer { unlink(output) }
        #expect(try SpawnedNode.runToExit(["--bind-addr", "127.0.0.1:\(first.port)", "--reactors", "1"], journal: true, output: output) == 1)
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(text.contains("<2>critical cannot start: cannot listen on 127.0.0.1:\(first.port)"), "\(text)")
    }

    @Test func aFileOrTerminalGetsTimestampedLinesWithoutPrefix() throws {
        // A JOURNAL_STREAM that names another stream (inherited from a parent whose
        // stderr was the journal) must not switch the format.
        let node = try SpawnedNode(arguments: ["--reactors", "1"], environment: ["JOURNAL_STREAM": "1:1"])
        #expect(node.stop() == 0)
        let lines = node.logLines()
        #expect(!lines.isEmpty)
        let timestamped = try NSRegularExpression(pattern: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (trace|debug|info|notice|warning|error|critical) "#)
        for line in lines {
            #expect(timestamped.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)) != nil, "\(line)")
        }
        #expect(lines.contains { $0.contains(" notice serving ") && $0.contains("reactors=1") })
    }

    @Test func jsonLinesParseAsJSON() throws {
        for journal in [false, true] {
            let config = try Self.configWithAnIgnoredV1Key()
            defer { unlink(config) }
            let node = try SpawnedNode(arguments: ["--reactors", "1", "--log-format", "json", "--config", config], journal: journal)
            #expect(node.stop() == 0)
            // python3's json module, as a log shipper would read the lines.
            let script = """
                import json, sys
                journal = sys.argv[2] == "1"
                levels = set()
                for line in open(sys.argv[1]):
                    if journal:
                        assert line[0] == "<" and line[2] == ">", line
                        line = line[3:]
                    record = json.loads(line)
                    assert set(["time", "level", "message"]) <= set(record), record
                    levels.add(record["level"])
                    if record["message"] == "serving":
                        assert record["reactors"] == "1", record
                print(",".join(sorted(levels)))
                """
            let result = try runTool("python3", ["-c", script, node.logPath, journal ? "1" : "0"])
            #expect(result.status == 0, "\(result.output)\n\(node.log())")
            #expect(result.output.contains("notice") && result.output.contains("warning"), "\(result.output)")
        }
    }
}
