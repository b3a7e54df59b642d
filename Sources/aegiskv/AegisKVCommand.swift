import AegisAdmin
import AegisConfig
import AegisServer
import ArgumentParser
import Glibc
import Logging

@main
struct AegisKVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegiskv",
        abstract: "AegisKV: a distributed in-memory key-value cache node (RESP and AegisKV binary on one port).",
        discussion: "Settings come from defaults, then --config FILE, then AEGIS_<KEY> environment variables, then flags; later wins. See docs/configuration.md."
    )

    @Option(name: .customLong("config"), help: "JSON configuration file.")
    var configFile: String?

    @Flag(help: "Check the configuration, print it, and exit.")
    var validate = false

    @OptionGroup(title: "Settings")
    var settings: ConfigFlags

    func run() throws {
        let loaded: LoadedConfig
        do {
            loaded = try ConfigLoader.load(file: configFile, environment: processEnvironment(), flags: settings)
        } catch {
            printToStandardError("aegiskv: \(error)")
            throw ExitCode(2)
        }
        if validate {
            print("configuration OK" + (configFile.map { ": \($0)" } ?? " (defaults, environment and flags)"))
            throw ExitCode.success
        }
        let level = Logger.Level(rawValue: loaded.config.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "aegiskv")
        do {
            let status = try Node.run(loaded, logger: logger) { node in
                [try AdminServer.start(node: node, logger: logger)]
            }
            throw ExitCode(status)
        } catch let error as StartupError {
            logger.critical("cannot start: \(error.description)")
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

func printToStandardError(_ message: String) {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}
