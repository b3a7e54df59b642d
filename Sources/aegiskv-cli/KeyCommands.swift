import AegisProtocol
import ArgumentParser
import Glibc

/// The reply to a single command, or the server's error as a CLIError.
private func expectSuccess(_ reply: RESPValue, from connection: RESPConnection) throws(CLIError) -> RESPValue {
    if case .error(let message) = reply {
        var text = "\(connection.address) answered: \(message)"
        if message.hasPrefix("NOAUTH") { text += " (give --auth or set AEGIS_AUTH_TOKEN)" }
        throw CLIError(text)
    }
    return reply
}

private func quoted(_ key: String) -> String { String(reflecting: key) }

struct GetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Print a key's value, byte for byte (a newline is added only on a terminal).")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The key.") var key: String

    func run() throws {
        let connection = try global.connect()
        let reply = try expectSuccess(try connection.call([Array("GET".utf8), Array(key.utf8)]), from: connection)
        switch reply {
        case .bulk(let value):
            let out = OutputFile(fd: 1)
            out.buffer.append(value)
            if out.isTerminal { out.buffer.append(byte: UInt8(ascii: "\n")) }
            try out.flush()
        case .null:
            throw CLIError("no such key: \(quoted(key))", code: ExitStatus.notFound)
        default:
            throw CLIError("\(connection.address) answered GET with an unexpected reply: \(reply.summary)")
        }
    }
}

struct SetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Set a key's value, optionally with a time to live.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The key.") var key: String
    @Argument(help: "The value (or give --stdin).") var value: String?

    @Option(help: ArgumentHelp("Time to live: seconds (30) or 500ms, 30s, 5m, 1h, 1h30m, 2d.", valueName: "duration"),
            transform: DurationArgument.positive)
    var ttl: Int64?

    @Flag(help: "Read the value from standard input, byte for byte (for binary values).")
    var stdin = false

    func validate() throws {
        if stdin && value != nil { throw ValidationError("give the value as an argument or --stdin, not both") }
        if !stdin && value == nil { throw ValidationError("missing the value (or --stdin)") }
    }

    func run() throws {
        let bytes = stdin ? try readStandardInput() : Array(value!.utf8)
        let connection = try global.connect()
        var command: [[UInt8]] = [Array("SET".utf8), Array(key.utf8), bytes]
        if let ttl { command += [Array("PX".utf8), Array(String(ttl).utf8)] }
        let reply = try expectSuccess(try connection.call(command), from: connection)
        print(reply.summary)
    }

    private func readStandardInput() throws(CLIError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw CLIError("cannot read standard input: \(systemError(errno))") }
            if n == 0 { return bytes }
            bytes += chunk[0..<n]
        }
    }
}

struct DelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del",
        abstract: "Delete keys; prints how many existed.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The keys.") var keys: [String]

    func validate() throws {
        if keys.isEmpty { throw ValidationError("missing the key(s) to delete") }
    }

    func run() throws {
        let connection = try global.connect()
        let reply = try expectSuccess(try connection.call([Array("DEL".utf8)] + keys.map { Array($0.utf8) }), from: connection)
        guard case .integer(let count) = reply else {
            throw CLIError("\(connection.address) answered DEL with an unexpected reply: \(reply.summary)")
        }
        print(count)
    }
}

struct TTLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ttl",
        abstract: "Print a key's remaining time to live in seconds, or \"no expiry\".")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The key.") var key: String
    @Flag(help: "Print milliseconds instead of seconds.") var ms = false

    func run() throws {
        let connection = try global.connect()
        let reply = try expectSuccess(try connection.call([Array("PTTL".utf8), Array(key.utf8)]), from: connection)
        guard case .integer(let remaining) = reply else {
            throw CLIError("\(connection.address) answered PTTL with an unexpected reply: \(reply.summary)")
        }
        switch remaining {
        case -2: throw CLIError("no such key: \(quoted(key))", code: ExitStatus.notFound)
        case -1: print("no expiry")
        default: print(ms ? remaining : (remaining + 500) / 1000)
        }
    }
}

struct PingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping",
        abstract: "Check that the node answers (prints PONG).")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let connection = try global.connect()
        let reply = try expectSuccess(try connection.call([Array("PING".utf8)]), from: connection)
        print(reply.summary)
    }
}
