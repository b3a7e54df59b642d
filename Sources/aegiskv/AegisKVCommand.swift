import AegisAdmin
import AegisConfig
import AegisLogging
import AegisServer
import ArgumentParser
import Glibc
import Logging

@main
struct AegisKVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegiskv",
        abstract: "AegisKV: a distributed in-memory key-value cache node (RESP and AegisKV binary on one port).",
        discussion: "Settings come from defaults, then --config FILE, then AEGIS_<KEY> environment variables, then flags; later wins. See docs/configuration.md.",
        version: BuildInfo.versionLine
    )

    @Option(name: .customLong("config"), help: "JSON configuration file.")
    var configFile: String?

    @Flag(help: "Check the configuration, print it, and exit.")
    var validate = false

    @OptionGroup(title: "Settings")
    var settings: ConfigFlags

    /// Logging is set up before the arguments are parsed, so that every
    /// start-up error (a bad flag, a bad config file, a port in use) is a
    /// log record with its priority, which under systemd means
    /// `journalctl --priority err` shows it.
    static func main() {
        let environment = processEnvironment()
        AegisLogging.bootstrap(environment: environment)
        let logger = Logger(label: "aegiskv")
        do {
            var command = try parseAsRoot(GoStyleFlags.rewrite(Array(CommandLine.arguments.dropFirst())))
            if let root = command as? AegisKVCommand {
                try root.start(environment: environment, logger: logger)
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                // --help and the like: text for a person, on stdout.
                print(fullMessage(for: error))
            } else {
                logger.error("invalid command line: \(message(for: error)) (see aegiskv --help)")
            }
            Glibc.exit(code.rawValue)
        }
    }

    mutating func run() throws {
        try start(environment: processEnvironment(), logger: Logger(label: "aegiskv"))
    }

    func start(environment: [String: String], logger: Logger) throws {
        let loaded: LoadedConfig
        do {
            loaded = try ConfigLoader.load(file: configFile, environment: environment, flags: settings)
        } catch {
            // One record per problem, each naming the key, the layer and what was expected.
            for line in error.description.split(separator: "\n") { logger.error("\(line)") }
            throw ExitCode(2)
        }
        // Before the first line that follows a successful load: with
        // log_format json, every line after it must be JSON (the ignored v1
        // keys' warnings were once written as text).
        let control = LogControl.shared
        control.level = Logger.Level(rawValue: loaded.config.logLevel) ?? .info
        control.format = loaded.config.logFormat == .json ? .json : .text
        for ignored in loaded.ignoredV1Keys { logger.warning("\(ignored.message)") }
        if validate && loaded.config.tlsEnabled {
            // The certificate and key must load and match, as at start.
            do {
                _ = try TLSService.make(loaded.config)
            } catch {
                logger.error("config: tls_enabled is true but TLS cannot be set up: \(error)")
                throw ExitCode(2)
            }
        }
        if validate {
            // The files are part of the configuration a deployment checks.
            do {
                try OperationsTLS.check(loaded.config)
            } catch {
                logger.error("config: \(error)")
                throw ExitCode(2)
            }
            print("configuration OK" + (configFile.map { ": \($0)" } ?? " (defaults, environment and flags)"))
            throw ExitCode.success
        }
        let file = configFile
        let flags = settings
        do {
            let status = try Node.run(loaded, logger: logger, configFile: file, reload: { () throws(ConfigError) in
                try ConfigLoader.load(file: file, environment: environment, flags: flags)
            }, companions: { node in
                [try AdminServer.start(node: node, logger: logger)]
            })
            throw ExitCode(status)
        } catch let code as ExitCode {
            throw code
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
    }
}

func processEnvironment() -> [String: String] {
    var environment: [String: String] = [:]
    var cursor = environ
    while let entry = cursor.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        cursor += 1
    }
    return environment
}

/// AegisKV v1 parsed its command line with Go's `flag` package, which takes
/// `-config FILE` as well as `--config FILE`; its systemd unit used the
/// single dash. A single-dash argument naming one of this command's long
/// options (not a one-letter short option such as `-h`) is read as the
/// double-dash form, so v1 unit files start this node unchanged.
enum GoStyleFlags {
    static let longNames: Set<String> = Set(ConfigFlags.longNames + ["config", "validate", "version", "help"])

    static func rewrite(_ arguments: [String]) -> [String] {
        var rewritten: [String] = []
        var optionsEnded = false
        for argument in arguments {
            if argument == "--" { optionsEnded = true }
            guard !optionsEnded, argument.hasPrefix("-"), !argument.hasPrefix("--") else {
                rewritten.append(argument)
                continue
            }
            let name = argument.dropFirst().prefix { $0 != "=" }
            rewritten.append(name.count > 1 && longNames.contains(String(name)) ? "-" + argument : argument)
        }
        return rewritten
    }
}
