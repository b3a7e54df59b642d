import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Print the node's /stats (HTTP admin port) as indented JSON.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await AdminHTTP.printJSON(path: "/stats", global)
    }
}

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Print the node's /cluster (HTTP admin port) as indented JSON.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await AdminHTTP.printJSON(path: "/cluster", global)
    }
}

/// GETs from the node's HTTP admin port through URLSession.
enum AdminHTTP {
    static func printJSON(path: String, _ global: GlobalOptions) async throws(CLIError) {
        let address = try global.httpAddress()
        guard let url = URL(string: "http://\(address)\(path)") else {
            throw CLIError("cannot make a URL from --http-addr \(address)", code: ExitStatus.usage)
        }
        var request = URLRequest(url: url)
        request.timeoutInterval = Double(global.timeout) / 1000
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        if let token = global.authToken { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch let error as URLError where error.code == .badURL && address.host.contains(":") {
            // swift-corelibs-foundation issue 5496, fixed after this toolchain.
            throw CLIError("cannot get \(url): this toolchain's URLSession cannot fetch IPv6-literal URLs; give --http-addr a host name (localhost:\(address.port), or one from /etc/hosts)")
        } catch {
            throw CLIError("cannot get \(url): \(describe(error))")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            throw CLIError("\(url) answered HTTP \(status): \(firstLine(data))")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw CLIError("\(url) answered with a body that is not JSON: \(firstLine(data))")
        }
        let pretty: Data
        do {
            pretty = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes])
        } catch {
            throw CLIError("cannot format the JSON from \(url): \(error)")
        }
        let out = OutputFile(fd: 1)
        pretty.withUnsafeBytes { out.buffer.append($0) }
        out.buffer.append(byte: UInt8(ascii: "\n"))
        try out.flush()
    }

    private static func describe(_ error: Error) -> String {
        if let urlError = error as? URLError {
            switch urlError.code {
            case .cannotConnectToHost: return "connection refused (is the HTTP port enabled? see --http-addr)"
            case .timedOut: return "no answer in time (see --timeout)"
            case .cannotFindHost: return "cannot resolve the host"
            default: return urlError.localizedDescription
            }
        }
        return error.localizedDescription
    }

    private static func firstLine(_ data: Data) -> String {
        let text = String(decoding: data.prefix(300), as: UTF8.self)
        let line = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        return line.isEmpty ? "(empty body)" : line
    }
}
