import AegisLogging
import Foundation
import Logging
import Testing

@Suite("Log line formats")
struct LogRecordTests {
    let time = WallClock(seconds: 1_795_926_177, nanoseconds: 123_456_789) // 2026-11-29T04:22:57.123Z

    func record(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata = [:], label: String = "aegiskv") -> LogRecord {
        LogRecord(level: level, message: message, metadata: metadata, label: label, time: time)
    }

    @Test func journalPrioritiesFollowSyslog() {
        let expected: [(Logger.Level, Int)] = [(.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2)]
        for (level, priority) in expected {
            #expect(LogRecord.syslogPriority(level) == priority)
            #expect(record(level, "m").render(format: .text, journal: true).hasPrefix("<\(priority)>\(level.rawValue) m"))
            #expect(record(level, "m").render(format: .json, journal: true).hasPrefix("<\(priority)>{"))
        }
    }

    @Test func textOffTheJournalHasTimeLevelMessageAndSortedMetadata() {
        let line = record(.notice, "serving", ["pid": "42", "node_id": "n1"]).render(format: .text, journal: false)
        #expect(line == "2026-11-29T04:22:57.123Z notice serving node_id=n1 pid=42\n")
    }

    @Test func journalTextHasNoTimestamp() {
        let line = record(.warning, "slow", ["ms": "5"]).render(format: .text, journal: true)
        #expect(line == "<4>warning slow ms=5\n")
    }

    @Test func everyLineOfAMultiLineMessageCarriesThePrefix() {
        let text = record(.error, "config: a\nconfig: b", ["k": "v"]).render(format: .text, journal: true)
        #expect(text == "<3>error config: a\n<3>error config: b k=v\n")
    }

    @Test func awkwardValuesAreQuoted() {
        let line = record(.info, "m", ["a": "two words", "b": "", "c": "x=y", "d": "q\"\n"]).render(format: .text, journal: false)
        #expect(line.hasSuffix(#" m a="two words" b="" c="x=y" d="q\"\n""# + "\n"))
    }

    @Test func otherLabelsAreShown() {
        #expect(record(.info, "up", label: "aegiskv.http").render(format: .text, journal: true) == "<6>info [aegiskv.http] up\n")
    }

    @Test func jsonIsOneParsableObjectPerRecord() throws {
        let metadata: Logger.Metadata = ["pid": "42", "level": "clash", "list": .array(["a", "b"]), "text": "tab\there \"quoted\" \u{1}"]
        let line = record(.error, "two\nlines", metadata).render(format: .json, journal: false)
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().contains("\n") == false)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["time"] as? String == "2026-11-29T04:22:57.123Z")
        #expect(object["level"] as? String == "error")
        #expect(object["message"] as? String == "two\nlines")
        #expect(object["pid"] as? String == "42")
        #expect(object["_level"] as? String == "clash")
        #expect(object["list"] as? [String] == ["a", "b"])
        #expect(object["text"] as? String == "tab\there \"quoted\" \u{1}")
    }

    @Test func sharedLevelChangesEveryHandler() {
        let control = LogControl()
        var handler = AegisLogHandler(label: "aegiskv", control: control)
        #expect(handler.logLevel == .info)
        control.level = .debug
        #expect(handler.logLevel == .debug)
        handler.logLevel = .error
        control.level = .trace
        #expect(handler.logLevel == .error)
    }

    @Test func journalStreamValueMustMatchStandardError() {
        #expect(!JournalStream.isStandardError(nil))
        #expect(!JournalStream.isStandardError("garbage"))
        #expect(!JournalStream.isStandardError("1:2:3"))
        var status = stat()
        #expect(fstat(2, &status) == 0)
        #expect(JournalStream.isStandardError("\(status.st_dev):\(status.st_ino)"))
        #expect(!JournalStream.isStandardError("\(status.st_dev):\(status.st_ino &+ 1)"))
    }
}
