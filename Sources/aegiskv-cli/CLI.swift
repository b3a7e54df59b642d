import ArgumentParser
import Glibc

@main
struct AegisKVCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegiskv-cli",
        abstract: "Talk to an AegisKV node: keys, dump and restore, stats and cluster state.",
        discussion: """
            Exit status: 0 success; 1 the key does not exist (get, ttl); 2 the node, \
            the network, a file or a server reply went wrong; 64 bad arguments; \
            141 the reader of standard output went away (dump | head). See docs/cli.md.
            """,
        subcommands: [
            GetCommand.self, SetCommand.self, DelCommand.self, TTLCommand.self, PingCommand.self,
            StatsCommand.self, ClusterCommand.self, DumpCommand.self, RestoreCommand.self,
        ]
    )

    @OptionGroup var global: GlobalOptions

    mutating func run() async throws {
        throw CleanExit.helpRequest(self)
    }

    /// ArgumentParser's own error output is several lines (message, usage,
    /// hint); an operator's script wants one line and a status, so parse
    /// errors and our own failures are printed here.
    static func main() async {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            printToStandardError("aegiskv-cli: \(usageProblem(error)) (see aegiskv-cli --help)")
            Glibc.exit(code.rawValue)
        }
        // A reader that goes away (dump | head) must make write(2) fail with
        // EPIPE, which the dump turns into a quiet exit, instead of killing us.
        signal(SIGPIPE, SIG_IGN)
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CLIError {
            if !error.message.isEmpty { printToStandardError("aegiskv-cli: \(error.message)") }
            Glibc.exit(error.code)
        } catch {
            exit(withError: error)
        }
    }

    /// ArgumentParser's message on one line, with "unknown command" said plainly.
    private static func usageProblem(_ error: Error) -> String {
        if let word = commandWord(), !configuration.subcommands.contains(where: { $0._commandName == word }), word != "help" {
            let names = configuration.subcommands.map { $0._commandName }.joined(separator: ", ")
            return "unknown command '\(word)' (commands: \(names))"
        }
        return message(for: error).split(separator: "\n").map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
            .joined(separator: "; ")
    }

    /// The first argument that is neither an option nor a global option's value.
    private static func commandWord() -> String? {
        let valued: Swift.Set = ["--addr", "--http-addr", "--auth", "--timeout", "--cacert", "--cert", "--key"]
        var arguments = CommandLine.arguments.dropFirst()[...]
        while let argument = arguments.popFirst() {
            if valued.contains(argument) { _ = arguments.popFirst(); continue }
            if argument.hasPrefix("-") { continue }
            return argument
        }
        return nil
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> Substring {
        var text = self
        while text.first?.isWhitespace == true { text = text.dropFirst() }
        while text.last?.isWhitespace == true { text = text.dropLast() }
        return text
    }
}

/// Options every command takes, before or after the command's name.
struct GlobalOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The node's client address (RESP).", valueName: "host:port"))
    var addr = "127.0.0.1:7700"

    @Option(help: ArgumentHelp("The node's HTTP address for stats and cluster (default: the --addr host, port 7702).", valueName: "host:port"))
    var httpAddr: String?

    @Option(help: ArgumentHelp("The node's auth_token (default: $AEGIS_AUTH_TOKEN).", valueName: "token"))
    var auth: String?

    @Option(
        help: ArgumentHelp("How long to wait for the node at any one step: connecting, or the next bytes of a reply (default: 10s).", valueName: "duration"),
        transform: DurationArgument.positive)
    var timeout: Int64 = 10_000

    @Flag(help: "Connect to the node with TLS (tls_enabled on the node).")
    var tls = false

    @Option(help: ArgumentHelp("CA certificates (PEM) the node's certificate must be signed by (default: the system's store). Implies --tls.", valueName: "file"))
    var cacert: String?

    @Option(help: ArgumentHelp("Client certificate (PEM) for a node with tls_ca_file set (mTLS). Implies --tls.", valueName: "file"))
    var cert: String?

    // Not named `key`: the key commands' positional argument has that name.
    @Option(name: .customLong("key"), help: ArgumentHelp("Private key (PEM) of --cert (default: the --cert file).", valueName: "file"))
    var privateKey: String?

    /// nil unless TLS was asked for.
    func tlsOptions() throws(CLIError) -> TLSOptions? {
        guard tls || cacert != nil || cert != nil || privateKey != nil else { return nil }
        if privateKey != nil && cert == nil { throw CLIError("--key needs --cert", code: ExitStatus.usage) }
        return TLSOptions(caFile: cacert ?? "", certFile: cert ?? "", keyFile: privateKey ?? cert ?? "")
    }

    func address() throws(CLIError) -> DialAddress {
        try DialAddress(parsing: addr, defaultPort: 7700)
    }

    func httpAddress() throws(CLIError) -> DialAddress {
        if let httpAddr { return try DialAddress(parsing: httpAddr, defaultPort: 7702) }
        return DialAddress(host: try address().host, port: 7702)
    }

    var authToken: String? {
        if let auth { return auth }
        if let value = getenv("AEGIS_AUTH_TOKEN"), value.pointee != 0 { return String(cString: value) }
        return nil
    }

    var timeoutMs: Int32 { Int32(clamping: timeout) }

    func connect() throws(CLIError) -> RESPConnection {
        try RESPConnection.open(try address(), timeoutMs: timeoutMs, authToken: authToken, tls: try tlsOptions())
    }
}
