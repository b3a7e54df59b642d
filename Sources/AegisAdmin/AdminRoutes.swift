import AegisServer
import Logging

/// One HTTP request as the routes see it (already parsed by NIOHTTP1).
struct AdminRequest {
    var method: String
    /// Path and query, as sent ("/admin/rate-limit?ops_per_sec=10").
    var uri: String
    var accept: String?
    var authorization: String?
    /// The caller is on 127.0.0.0/8 or ::1 (protected mode, below).
    var fromLoopback: Bool = true
}

struct AdminResponse {
    var status: Int
    var contentType: String = "application/json"
    var body: String
    var headers: [(String, String)] = []

    static func json(_ status: Int, _ value: JSONValue) -> AdminResponse {
        AdminResponse(status: status, body: value.text + "\n")
    }

    static func error(_ status: Int, _ message: String, headers: [(String, String)] = []) -> AdminResponse {
        AdminResponse(status: status, body: JSONValue.object([("error", .string(message))]).text + "\n", headers: headers)
    }
}

/// The operations endpoints: what each path answers, which methods it
/// takes, and who may call it. Pure request → response, so it can be read
/// (and tested) without the HTTP plumbing around it.
struct AdminRoutes: Sendable {
    let node: NodeContext
    /// The port's TLS, for its counters on /metrics; nil on plain http.
    var tls: OperationsTLS? = nil

    private enum Endpoint: String, CaseIterable {
        case health = "/health", ready = "/ready", live = "/live", metrics = "/metrics"
        case cluster = "/cluster", stats = "/stats"
        case gc = "/admin/gc"
        case breakerTrip = "/admin/circuit-breaker/trip"
        case breakerStatus = "/admin/circuit-breaker/status"
        case breakerReset = "/admin/circuit-breaker/reset"
        case rateLimit = "/admin/rate-limit"
        case walTruncate = "/admin/wal/truncate"
        case debugReactors = "/debug/reactors"
        case debugMemory = "/debug/memory"
        // The runbook's Go profiling URLs, answered with their Swift equivalents.
        case debugThreads = "/debug/pprof/goroutine"
        case debugHeap = "/debug/pprof/heap"

        var methods: [String] {
            switch self {
            case .gc, .breakerTrip, .breakerReset, .rateLimit, .walTruncate: return ["POST"]
            default: return ["GET", "HEAD"]
            }
        }

        /// Query parameters the endpoint understands; anything else is a 400,
        /// so a misspelt parameter is never silently ignored.
        var parameters: Set<String> {
            switch self {
            case .breakerTrip, .breakerReset: return ["service"]
            case .rateLimit: return ["ops_per_sec", "burst"]
            case .debugThreads, .debugHeap: return ["debug"]
            default: return []
            }
        }
    }

    /// Endpoints that may wait seconds (a snapshot of every reactor) run on
    /// a worker thread so /health and /metrics stay responsive meanwhile.
    static func runsOffTheEventLoop(_ request: AdminRequest) -> Bool {
        request.method == "POST" && request.uri.split(separator: "?", maxSplits: 1).first == "/admin/wal/truncate"
    }

    /// /admin/* and /debug/* need the bearer token when auth_token is set;
    /// with no token, protected mode keeps them to loopback callers. The
    /// read-only endpoints stay open to any address: the runbook's health
    /// checks and Prometheus scrape them from other hosts with no token.
    static func isProtected(_ path: String) -> Bool {
        path.hasPrefix("/admin/") || path.hasPrefix("/debug/") || path == "/admin" || path == "/debug"
    }

    func respond(to request: AdminRequest) -> AdminResponse {
        let (path, query) = splitURI(request.uri)
        if Self.isProtected(path) && !authorized(request.authorization) {
            return .error(401, "this endpoint needs 'Authorization: Bearer <auth_token>'",
                          headers: [("WWW-Authenticate", "Bearer realm=\"aegiskv\"")])
        }
        if Self.isProtected(path) && !request.fromLoopback && node.clientAuth.refusesNonLoopback {
            return .error(403, "protected mode: with no auth_token set, \(path) answers only callers on this host (127.0.0.0/8, ::1); "
                          + "set auth_token and send 'Authorization: Bearer <auth_token>', or set protected_mode to false")
        }
        guard let endpoint = Endpoint(rawValue: path) else {
            return .error(404, "no endpoint \(path)")
        }
        guard endpoint.methods.contains(request.method) else {
            return .error(405, "\(path) accepts \(endpoint.methods.joined(separator: ", ")), not \(request.method)",
                          headers: [("Allow", endpoint.methods.joined(separator: ", "))])
        }
        let parameters: [String: String]
        switch parseQuery(query, allowed: endpoint.parameters) {
        case .success(let parsed): parameters = parsed
        case .failure(let problem): return .error(400, problem.message)
        }
        let reports = NodeReports(node: node)
        switch endpoint {
        case .health:
            // While draining or catching up the body must not contain "ok":
            // the runbook's checks are `grep -q ok` on the body, and its
            // rolling restart moves to the next node once this one says it.
            guard node.state == .serving else { return .json(503, .object([("status", .string(reports.stateName))])) }
            let standing = node.replicaStanding(node.cluster.snapshot)
            if standing.inStep { return .json(200, .object([("status", .string("ok"))])) }
            return .json(503, .object([("status", .string("catching_up"))] + NodeReports.standingFields(standing)))
        case .ready:
            let standing = node.replicaStanding(node.cluster.snapshot)
            let ready = node.state == .serving && standing.inStep
            return .json(ready ? 200 : 503, .object([("ready", .bool(ready)), ("state", .string(reports.stateName)),
                                                     ("in_step", .bool(standing.inStep))] + NodeReports.standingFields(standing)))
        case .live:
            return .json(200, .object([("live", .bool(true)), ("state", .string(reports.stateName))]))
        case .metrics:
            let format = MetricsFormat.negotiate(accept: request.accept)
            return AdminResponse(status: 200, contentType: format.contentType, body: MetricsExposition.render(node: node, format: format, extra: OperationsTLS.families(tls)))
        case .cluster:
            return .json(200, reports.cluster())
        case .stats:
            return .json(200, reports.stats())
        case .gc:
            let result = ProcessMemory.trim()
            node.logger.notice("admin: returned free memory to the OS (malloc_trim)", metadata: ["result": "\(result.text)"])
            return .json(200, result)
        case .breakerStatus:
            return .json(200, reports.breakers())
        case .breakerTrip:
            switch serviceName(parameters) {
            case .failure(let problem): return .error(400, problem.message)
            case .success(let service):
                let status = node.breakers.trip(service)
                node.logger.notice("admin: circuit breaker tripped", metadata: ["service": "\(service)"])
                return .json(200, NodeReports.breaker(status))
            }
        case .breakerReset:
            switch serviceName(parameters) {
            case .failure(let problem): return .error(400, problem.message)
            case .success(let service):
                guard let status = node.breakers.reset(service) else {
                    return .error(404, "no circuit breaker named '\(service)'; GET /admin/circuit-breaker/status lists them")
                }
                node.logger.notice("admin: circuit breaker reset", metadata: ["service": "\(service)"])
                return .json(200, NodeReports.breaker(status))
            }
        case .rateLimit:
            return setRateLimit(parameters)
        case .walTruncate:
            // Blocks until every reactor has written its snapshot: the
            // HTTP handler runs this endpoint on a worker thread (see
            // `runsOffTheEventLoop`), never on the operations event loop.
            let outcome = node.truncateWAL()
            node.logger.notice("admin: write-ahead log snapshot and truncation", metadata: [
                "completed": "\(outcome.completed)", "reactors_done": "\(outcome.reactorsDone)", "message": "\(outcome.message)",
            ])
            let status = outcome.completed ? 200 : (node.config.walMode == .off ? 409 : 503)
            return .json(status, .object([
                ("completed", .bool(outcome.completed)), ("reactors_done", .int(outcome.reactorsDone)),
                ("reactors", .int(outcome.reactors)), ("message", .string(outcome.message)),
            ]))
        case .debugReactors:
            return .json(200, reports.reactors())
        case .debugMemory, .debugHeap:
            return .json(200, reports.memory())
        case .debugThreads:
            let threads = ThreadReport.read()
            if parameters["debug"] != nil {
                return AdminResponse(status: 200, contentType: "text/plain; charset=utf-8", body: ThreadReport.text(threads))
            }
            return .json(200, .object([("threads", .array(threads.map { thread in
                .object([("id", .int(thread.id)), ("name", .string(thread.name)), ("state", .string(thread.state)),
                         ("cpu_seconds", .double(thread.cpuSeconds))])
            }))]))
        }
    }

    private func setRateLimit(_ parameters: [String: String]) -> AdminResponse {
        guard let text = parameters["ops_per_sec"] else {
            return .error(400, "missing parameter ops_per_sec (operations per second, 0 = no limit)")
        }
        guard let rate = Int(text), rate >= 0, rate <= Int(Int32.max) else {
            return .error(400, "ops_per_sec must be a whole number from 0 (no limit) to \(Int32.max), not '\(text)'")
        }
        var burst = 0
        if let burstText = parameters["burst"] {
            guard let value = Int(burstText), value >= 0, value <= Int(Int32.max) else {
                return .error(400, "burst must be a whole number from 0 (same as ops_per_sec) to \(Int32.max), not '\(burstText)'")
            }
            burst = value
        }
        // An omitted burst means "same as the new rate", not the old burst:
        // lowering the limit in an emergency must not leave a large burst behind.
        node.runtime.setRateLimit(opsPerSecond: rate, burst: burst)
        node.rateLimiter.applyCurrentSettings()
        // Logged as the answer reports it: the burst in effect (0 given means
        // the rate), never the raw parameter.
        let report = NodeReports(node: node)
        node.logger.notice("admin: rate limit set", metadata: [
            "ops_per_sec": "\(node.runtime.currentRateLimit)", "burst": "\(report.rateBurstInEffect)",
        ])
        return .json(200, report.rateLimit())
    }

    private struct Problem: Error { var message: String }

    private func serviceName(_ parameters: [String: String]) -> Result<String, Problem> {
        guard let service = parameters["service"] else {
            return .failure(Problem(message: "missing parameter service (e.g. service=downstream)"))
        }
        guard CircuitBreakerRegistry.isValidName(service) else {
            return .failure(Problem(message: "service must be 1-128 characters of letters, digits and . _ : -, not '\(service)'"))
        }
        return .success(service)
    }

    /// Constant-time comparison of the bearer token: the time taken does
    /// not depend on how many leading bytes were right.
    private func authorized(_ header: String?) -> Bool {
        let auth = node.clientAuth
        if !auth.tokenRequired { return true }
        guard let header else { return false }
        let prefix = "bearer "
        guard header.utf8.count > prefix.utf8.count, header.lowercased().hasPrefix(prefix) else { return false }
        let given = Array(header.utf8.dropFirst(prefix.utf8.count))
        return given.withUnsafeBytes { auth.matches($0) }
    }

    private func splitURI(_ uri: String) -> (path: String, query: Substring) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, "") }
        return (String(uri[..<mark]), uri[uri.index(after: mark)...])
    }

    private func parseQuery(_ query: Substring, allowed: Set<String>) -> Result<[String: String], Problem> {
        var result: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = percentDecode(parts[0]), let value = percentDecode(parts.count > 1 ? parts[1] : "") else {
                return .failure(Problem(message: "malformed query string: bad percent-encoding in '\(pair)'"))
            }
            guard allowed.contains(name) else {
                let known = allowed.isEmpty ? "this endpoint takes no parameters" : "known: \(allowed.sorted().joined(separator: ", "))"
                return .failure(Problem(message: "unknown parameter '\(name)' (\(known))"))
            }
            if result[name] != nil { return .failure(Problem(message: "parameter '\(name)' given twice")) }
            result[name] = value
        }
        return .success(result)
    }

    /// application/x-www-form-urlencoded decoding of one query component.
    private func percentDecode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
