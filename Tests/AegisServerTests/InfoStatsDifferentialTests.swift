import Foundation
import Glibc
import Testing

/// INFO errorstats and commandstats after the same erroring commands on
/// aegiskv (two reactors, so some errors come from the other reactor) and
/// on a real redis-server: the same codes and counts, the same fields in the
/// same order. Only `usec` and `usec_per_call` may differ (each server's own
/// time).
@Suite(.serialized)
struct InfoStatsDifferentialTests {
    /// Rejected before running (arity, unknown command), failed while
    /// running (syntax, not an integer, WRONGPASS), and fine.
    static let erring: [[String]] = [
        ["SET", "k", "v"], ["INCR", "k"], ["GET"], ["NOSUCH", "x"], ["SET", "a", "b", "c", "d"], ["AUTH", "x", "y"],
        ["EXPIRE", "k", "abc", "FOO"], ["GETEX", "k", "FOO", "bar"], ["MSET", "k1"], ["SETEX", "s", "abc", "v"],
        ["GET", "k"], ["INCRBY", "k", "1", "2"],
    ] + (0..<8).flatMap { [["SET", "e\($0)", "text"], ["INCR", "e\($0)"], ["GETRANGE", "e\($0)", "x", "1"]] }

    static let watched = ["set", "incr", "get", "expire", "getex", "mset", "setex", "auth", "incrby", "getrange"]

    @Test func errorAndCommandStatsCountAsRedisServerCounts() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let (ours, theirs) = try servers.links()
        for command in Self.erring {
            _ = try ours.call(command)
            _ = try theirs.call(command)
        }
        let reference = try theirs.call(["INFO", "errorstats"])
        #expect(text(reference).contains("errorstat_ERR:count="), "redis-server: \(escaped(reference))")
        // aegiskv publishes its counters on the maintenance tick: wait for it.
        var mine = try ours.call(["INFO", "errorstats"])
        let deadline = Date().addingTimeInterval(10)
        while mine != reference && Date() < deadline {
            usleep(50_000)
            mine = try ours.call(["INFO", "errorstats"])
        }
        #expect(mine == reference, "\(escaped(mine)) vs redis-server \(escaped(reference))")

        let myCommands = infoFields(try ours.call(["INFO", "commandstats"]))["Commandstats"] ?? [:]
        let theirCommands = infoFields(try theirs.call(["INFO", "commandstats"]))["Commandstats"] ?? [:]
        for name in Self.watched {
            let field = "cmdstat_\(name)"
            let counted = myCommands[field].map(Self.withoutTimes)
            #expect(counted != nil && counted == theirCommands[field].map(Self.withoutTimes),
                    "\(field): \(myCommands[field] ?? "-") vs redis-server \(theirCommands[field] ?? "-")")
            if let line = myCommands[field] {
                #expect(line.wholeMatch(of: /calls=\d+,usec=\d+,usec_per_call=\d+\.\d\d,rejected_calls=\d+,failed_calls=\d+/) != nil, "\(line)")
            }
        }

        // Errorstats is a default section, and part of all and everything.
        for arguments in [["INFO"], ["INFO", "all"], ["INFO", "everything"], ["INFO", "default"]] {
            let mySections = infoFields(try ours.call(arguments))
            let theirSections = infoFields(try theirs.call(arguments))
            #expect((mySections["Errorstats"] != nil) == (theirSections["Errorstats"] != nil), "\(arguments)")
            #expect(mySections["Errorstats"] != nil, "\(arguments) has no Errorstats")
        }

        // CONFIG RESETSTAT clears both, and the reply is already the cleared one.
        for link in [ours, theirs] { #expect(try link.call(["CONFIG", "RESETSTAT"]) == Array("+OK\r\n".utf8)) }
        let clearedMine = try ours.call(["INFO", "errorstats"])
        let clearedTheirs = try theirs.call(["INFO", "errorstats"])
        #expect(clearedMine == clearedTheirs, "\(escaped(clearedMine)) vs redis-server \(escaped(clearedTheirs))")
        #expect(text(clearedMine) == "# Errorstats\r\n")
        let commandsAfterReset = infoFields(try ours.call(["INFO", "commandstats"]))["Commandstats"] ?? [:]
        #expect(commandsAfterReset["cmdstat_incr"] == nil, "\(commandsAfterReset)")
    }

    /// `usec` adds up what the SLOWLOG clock measured for each command: many
    /// PINGs add up to more than a microsecond.
    @Test func commandTimeIsAddedUp() throws {
        let aegis = try ServerHarness(reactors: 1)
        defer { #expect(aegis.stop() == 0) }
        let link = try RESPLink(port: aegis.port)
        for _ in 0..<2000 { _ = try link.call(["PING"]) }
        var usec = 0
        let deadline = Date().addingTimeInterval(10)
        while usec == 0 && Date() < deadline {
            usleep(50_000)
            let line = infoFields(try link.call(["INFO", "commandstats"]))["Commandstats"]?["cmdstat_ping"] ?? ""
            usec = line.firstMatch(of: /usec=(\d+),/).flatMap { Int($0.1) } ?? 0
        }
        #expect(usec > 0)
    }

    /// Drops the fields each server measures for itself.
    static func withoutTimes(_ line: String) -> String {
        line.split(separator: ",").filter { !$0.hasPrefix("usec") }.joined(separator: ",")
    }

    private func text(_ reply: [UInt8]) -> String {
        (try? RESPValueReply(reply))?.value?.text ?? ""
    }
}
