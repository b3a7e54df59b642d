import AegisProtocol
import ArgumentParser
import Glibc

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Load a file written by dump into a node; prints the counts on standard error.",
        discussion: """
            Entries are written with pipelined SET (PX for the time left), overwriting \
            keys that exist. An entry keeps its absolute expiry: one whose expires_at_ms \
            has passed is skipped and counted, unless --relative-ttl. A regular file is \
            checked whole before anything is written, so a malformed file changes \
            nothing; from standard input, entries before the bad line are already written.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The dump file, or - for standard input.", valueName: "file"))
    var file: String

    @Flag(help: "Give each entry the ttl_ms it had when dumped, counted from now, instead of keeping its expires_at_ms.")
    var relativeTtl = false

    @Option(help: "Entries per pipelined batch (1-10000).")
    var batch = 1000

    func validate() throws {
        guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be from 1 to 10000") }
    }

    func run() throws {
        let input = try DumpInput(path: file)
        if input.isRegularFile {
            _ = try read(input, into: nil)
            try input.rewind()
        }
        let connection = try global.connect()
        let counts: Counts
        do {
            counts = try read(input, into: connection)
        } catch let error as PartialRestore {
            let counts = error.counts
            if counts.restored + counts.failed + counts.skippedExpired > 0 {
                printToStandardError(counts.summary(into: connection.address.description))
            }
            throw error.underlying
        }
        printToStandardError(counts.summary(into: connection.address.description))
        if counts.failed > 0 {
            throw CLIError("\(counts.failed) entr\(counts.failed == 1 ? "y was" : "ies were") not restored (first: \(counts.firstFailure ?? ""))")
        }
    }

    struct Counts {
        var restored = 0
        var skippedExpired = 0
        var failed = 0
        var firstFailure: String?
        /// Entries the node's rate limit refused and that were sent again.
        var resentAfterRateLimit = 0

        func summary(into address: String) -> String {
            "restored \(restored), skipped-expired \(skippedExpired), failed \(failed) (into \(address))"
                + (resentAfterRateLimit > 0 ? "; \(resentAfterRateLimit) sent again after the node's rate limit refused them" : "")
        }
    }

    /// An error after some entries were written (only from standard input).
    struct PartialRestore: Error {
        var counts: Counts
        var underlying: CLIError
    }

    /// Reads the whole dump, checking its structure line by line; writes the
    /// entries to `connection` in pipelined batches when one is given.
    private func read(_ input: DumpInput, into connection: RESPConnection?) throws -> Counts {
        let reader = LineReader(fd: input.fd, name: input.name)
        var counts = Counts()
        var batchLines: [Int] = []
        var batchCommands: [[[[UInt8]]]] = []  // one command per group: each entry is retried alone
        var batchBytes = 0
        func flushBatch() throws(CLIError) {
            guard let connection, !batchLines.isEmpty else { return }
            counts.resentAfterRateLimit += try connection.exchangeRetryingRateLimit(batchCommands) { index, replies throws(CLIError) in
                if case .error(let message) = replies[0] {
                    counts.failed += 1
                    if counts.firstFailure == nil { counts.firstFailure = "\(input.name):\(batchLines[index]): \(message)" }
                } else {
                    counts.restored += 1
                }
            }
            batchLines.removeAll(keepingCapacity: true)
            batchCommands.removeAll(keepingCapacity: true)
            batchBytes = 0
        }
        do {
            guard let headerLine = try reader.nextLine() else {
                throw CLIError("\(input.name) is empty, not an aegiskv-cli dump")
            }
            do { _ = try DumpFormat.parseHeader(headerLine) } catch { throw reader.problem(error.message) }
            var entries = 0
            var previousHadComma = false
            while true {
                guard let line = try reader.nextLine() else {
                    throw CLIError("\(input.name) ends after line \(reader.lineNumber) without the closing line \"],\"count\":N,...}\": the file is truncated")
                }
                if line.first == UInt8(ascii: "]") {
                    if previousHadComma { throw reader.problem("the last entry (line \(reader.lineNumber - 1)) must not end with ','") }
                    let trailer: DumpFormat.Trailer
                    do { trailer = try DumpFormat.parseTrailer(line) } catch { throw reader.problem(error.message) }
                    guard trailer.count == entries else {
                        throw reader.problem("the closing line says \(trailer.count) entries but \(entries) were read")
                    }
                    break
                }
                if entries > 0 && !previousHadComma {
                    throw reader.problem("expected ',' at the end of the previous line before another entry")
                }
                var body = line
                previousHadComma = body.last == UInt8(ascii: ",")
                if previousHadComma { body = UnsafeRawBufferPointer(rebasing: body.dropLast()) }
                let entry: DumpFormat.Entry
                do { entry = try DumpFormat.parseEntry(body) } catch { throw reader.problem(error.message) }
                entries += 1
                guard connection != nil else { continue }
                var command: [[UInt8]] = [Array("SET".utf8), entry.key, entry.value]
                if let ttl = entry.ttlMs, let expiresAt = entry.expiresAtMs {
                    let remaining = relativeTtl ? ttl : expiresAt - wallClockMs()
                    if remaining <= 0 {
                        counts.skippedExpired += 1
                        continue
                    }
                    command += [Array("PX".utf8), Array(String(remaining).utf8)]
                }
                batchCommands.append([command])
                batchBytes += command.reduce(0) { $0 + $1.count }
                batchLines.append(reader.lineNumber)
                if batchLines.count >= batch || batchBytes >= 4 << 20 { try flushBatch() }
            }
            try flushBatch()
            if try reader.nextNonBlankLine() != nil {
                throw reader.problem("unexpected text after the end of the dump")
            }
            return counts
        } catch let error as CLIError {
            guard connection != nil else { throw error }
            // Standard input cannot be checked first: say what was already written.
            throw PartialRestore(counts: counts, underlying: error)
        }
    }
}

/// The dump to restore: a file, or standard input for "-".
final class DumpInput {
    let fd: Int32
    let name: String
    let isRegularFile: Bool

    init(path: String) throws(CLIError) {
        if path == "-" {
            fd = 0
            name = "<stdin>"
        } else {
            let opened = open(path, O_RDONLY | O_CLOEXEC)
            guard opened >= 0 else { throw CLIError("cannot open \(path): \(systemError(errno))") }
            fd = opened
            name = path
        }
        var info = stat()
        isRegularFile = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    func rewind() throws(CLIError) {
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw CLIError("cannot re-read \(name): \(systemError(errno))") }
    }

    deinit { if fd != 0 { _ = close(fd) } }
}

/// Lines from a file descriptor, read in large chunks; memory holds one
/// chunk and the longest line, never the whole file.
final class LineReader {
    let fd: Int32
    let name: String
    private(set) var lineNumber = 0
    private let buffer = WireBuffer(capacity: 1 << 20)
    private var pendingConsume = 0
    private var scanned = 0
    private var atEnd = false

    init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
    }

    /// The next line without its "\n" (and a trailing "\r" or spaces), or
    /// nil at the end. Valid until the next call.
    func nextLine() throws(CLIError) -> UnsafeRawBufferPointer? {
        if pendingConsume > 0 {
            buffer.consume(pendingConsume)
            pendingConsume = 0
            scanned = 0
        }
        while true {
            let view = buffer.readableView
            if scanned < view.count, let found = memchr(view.baseAddress! + scanned, 0x0A, view.count - scanned) {
                let newline = UnsafeRawPointer(found) - view.baseAddress!
                pendingConsume = newline + 1
                lineNumber += 1
                return trimmed(UnsafeRawBufferPointer(rebasing: view[0..<newline]))
            }
            scanned = view.count
            if atEnd {
                guard !view.isEmpty else { return nil }
                pendingConsume = view.count
                lineNumber += 1
                return trimmed(view)
            }
            try fill()
        }
    }

    func nextNonBlankLine() throws(CLIError) -> UnsafeRawBufferPointer? {
        while let line = try nextLine() {
            if !line.isEmpty { return line }
        }
        return nil
    }

    private func fill() throws(CLIError) {
        let space = buffer.writableSpace(minimum: 1 << 20)
        while true {
            let n = read(fd, space.baseAddress, space.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw CLIError("cannot read \(name): \(systemError(errno))") }
            if n == 0 { atEnd = true } else { buffer.commitWrite(n) }
            return
        }
    }

    private func trimmed(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var end = line.count
        while end > 0, line[end - 1] == UInt8(ascii: "\r") || line[end - 1] == UInt8(ascii: " ") || line[end - 1] == UInt8(ascii: "\t") {
            end -= 1
        }
        return UnsafeRawBufferPointer(rebasing: line[0..<end])
    }

    /// "file:line: message" for the current line.
    func problem(_ message: String) -> CLIError {
        CLIError("\(name):\(lineNumber): \(message)")
    }
}
