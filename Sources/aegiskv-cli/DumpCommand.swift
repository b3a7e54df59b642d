import AegisProtocol
import ArgumentParser

struct DumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Write every live entry, with its remaining TTL, to standard output as one JSON document.",
        discussion: """
            Memory stays constant whatever the node holds: keys come from SCAN a batch \
            at a time, their values and TTLs from pipelined GET and PTTL. A key deleted \
            or expired during the dump is left out (counted as skipped); entries present \
            throughout are all written. The format is in docs/cli.md.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "Keys asked for per SCAN, and entries fetched per pipelined batch (1-10000).")
    var batch = 1000

    @Flag(name: .shortAndLong, help: "Do not print the summary line on standard error.")
    var quiet = false

    func validate() throws {
        guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be from 1 to 10000") }
    }

    func run() throws {
        let connection = try global.connect()
        let address = connection.address.description
        let out = OutputFile(fd: 1)
        DumpFormat.writeHeader(source: address, startedAtMs: wallClockMs(), into: out.buffer)

        var written = 0
        var skipped = 0
        var resent = 0
        var cursor = try scan(from: "0", connection)
        while true {
            let keys = cursor.keys
            // One group per key (its GET and PTTL, sent again together if the
            // node's rate limit refused either), then the next SCAN, which
            // rides in the same pipeline as this batch's reads.
            var groups = keys.map { [[Self.get, $0], [Self.pttl, $0]] }
            let more = cursor.next != "0"
            if more { groups.append([Self.scanCommand(cursor.next, count: batch)]) }
            var nextCursor = Cursor(next: "0", keys: [])
            // Entries are written as their replies arrive: a key sent again
            // after a refusal comes later in the file, which order does not matter for.
            resent += try connection.exchangeRetryingRateLimit(groups) { index, replies throws(CLIError) in
                if index == keys.count {
                    nextCursor = try Self.parseScan(replies[0], connection)
                    return
                }
                let value: [UInt8]?
                switch replies[0] {
                case .bulk(let bytes): value = bytes
                case .null: value = nil
                default: throw Self.unexpected("GET", replies[0], connection)
                }
                guard case .integer(let pttl) = replies[1] else { throw Self.unexpected("PTTL", replies[1], connection) }
                // -2: gone since GET; 0: expiring this millisecond. Neither is live.
                guard let bytes = value, pttl != -2, pttl != 0 else {
                    skipped += 1
                    return
                }
                let ttl: Int64? = pttl > 0 ? Int64(pttl) : nil
                DumpFormat.writeEntry(key: keys[index], value: bytes, ttlMs: ttl, expiresAtMs: ttl.map { wallClockMs() + $0 },
                                      first: written == 0, into: out.buffer)
                written += 1
                try out.flushIfFull()
            }
            try out.flush()
            if !more { break }
            cursor = nextCursor
        }
        DumpFormat.writeTrailer(count: written, skipped: skipped, finishedAtMs: wallClockMs(), into: out.buffer)
        try out.flush()
        if !quiet {
            printToStandardError("dumped \(written) entries from \(address)" + (skipped > 0 ? " (\(skipped) deleted or expired during the dump)" : "")
                                 + (resent > 0 ? "; \(resent) reads sent again after the node's rate limit refused them" : ""))
        }
    }

    private static let get = Array("GET".utf8), pttl = Array("PTTL".utf8)

    private struct Cursor {
        var next: String
        var keys: [[UInt8]]
    }

    private static func scanCommand(_ cursor: String, count: Int) -> [[UInt8]] {
        [Array("SCAN".utf8), Array(cursor.utf8), Array("COUNT".utf8), Array(String(count).utf8)]
    }

    private func scan(from cursor: String, _ connection: RESPConnection) throws(CLIError) -> Cursor {
        var reply = RESPValue.null
        try connection.exchangeRetryingRateLimit([[Self.scanCommand(cursor, count: batch)]]) { _, replies throws(CLIError) in reply = replies[0] }
        return try Self.parseScan(reply, connection)
    }

    /// `[cursor, [key, ...]]`.
    private static func parseScan(_ reply: RESPValue, _ connection: RESPConnection) throws(CLIError) -> Cursor {
        guard case .array(let parts) = reply, parts.count == 2,
              case .bulk(let cursorBytes) = parts[0], case .array(let keyReplies) = parts[1]
        else { throw unexpected("SCAN", reply, connection) }
        var keys: [[UInt8]] = []
        keys.reserveCapacity(keyReplies.count)
        for keyReply in keyReplies {
            guard case .bulk(let key) = keyReply else { throw unexpected("SCAN", reply, connection) }
            keys.append(key)
        }
        return Cursor(next: String(decoding: cursorBytes, as: UTF8.self), keys: keys)
    }

    private static func unexpected(_ command: String, _ reply: RESPValue, _ connection: RESPConnection) -> CLIError {
        if case .error(let message) = reply {
            return CLIError("\(connection.address) answered \(command): \(message)")
        }
        return CLIError("\(connection.address) answered \(command) with an unexpected reply: \(reply.summary.prefix(200))")
    }
}
