import AegisConfig
import AegisServer
import CSupport
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The HTTP/1.1 operations server on `health_addr`: SwiftNIO on one event
/// loop thread of its own ("aegis-admin"), so a slow scrape or a malloc_trim
/// never runs on a reactor. It reads only what the reactors publish
/// (atomics) and writes only RuntimeSettings and the breaker registry.
public final class AdminServer: NodeCompanion {
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    public let boundPort: Int
    private let address: SocketAddressText
    /// nil while health_addr serves plain http.
    private let tls: OperationsTLS?

    private struct SocketAddressText { var host: String; var port: Int }

    /// Binds `health_addr` and starts serving; a bind failure, or a
    /// health_tls_* file that cannot be used, is a StartupError naming the
    /// address or the file, so the node refuses to start.
    public static func start(node: NodeContext, logger: Logger) throws -> AdminServer {
        let config = node.config
        let tls: OperationsTLS?
        do {
            tls = try OperationsTLS.start(config, logger: logger)
        } catch {
            throw StartupError("cannot serve https on health_addr: \(error)")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        group.next().execute { _ = aegis_set_current_thread_name("aegis-admin") }
        let routes = AdminRoutes(node: node, tls: tls)
        let connections = AdminConnections(eventLoop: group.next(), logger: logger)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptPauseWhenShort(logger: logger))
                }
            }
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard connections.makeRoom() else {
                        // Over https the 503 could only go out after a
                        // handshake that no deadline would bound: close at once.
                        try channel.pipeline.syncOperations.addHandler(RefuseWhenFull(answers: tls == nil))
                        return
                    }
                    if let tls {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(PlaintextOnTLSPortRefusal(tls: tls, logger: logger))
                        try pipeline.addHandler(NIOSSLServerHandler(context: tls.context))
                        try pipeline.addHandler(TLSHandshakeFailureCount(tls: tls, logger: logger))
                    }
                    let handler = AdminHTTPHandler(routes: routes, connections: connections)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    connections.insert(handler)
                }
            }
        let host = config.healthAddr.host
        let channel: Channel
        do {
            channel = try bootstrap.bind(host: host, port: Int(config.healthAddr.port)).wait()
        } catch {
            try? group.syncShutdownGracefully()
            // Worded like the client port's bind failure.
            let reason = (error as? IOError).map { "\(SystemError(operation: "bind", code: $0.errnoCode))" } ?? "\(error)"
            throw StartupError("cannot listen on health_addr \(config.healthAddr): \(reason)")
        }
        let port = channel.localAddress?.port ?? Int(config.healthAddr.port)
        logger.debug("operations server listening", metadata: ["health_addr": "\(host):\(port)"])
        return AdminServer(group: group, channel: channel, boundPort: port, address: SocketAddressText(host: host, port: port), tls: tls)
    }

    private init(group: MultiThreadedEventLoopGroup, channel: Channel, boundPort: Int, address: SocketAddressText, tls: OperationsTLS?) {
        self.group = group
        self.channel = channel
        self.boundPort = boundPort
        self.address = address
        self.tls = tls
    }

    public var servingMetadata: Logger.Metadata {
        let host = address.host.contains(":") ? "[\(address.host)]" : address.host
        return ["health_addr": "\(host):\(boundPort)", "health_scheme": "\(tls == nil ? "http" : "https")"]
    }

    /// SIGHUP: the certificate, key and CA files are read again whether or
    /// not the configuration changed, since rotation replaces them in place.
    public func reloadFiles(report: Logger) {
        tls?.reload(report: report)
    }

    public func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// Collects one request (head; a body is read and ignored) and answers it
/// from `AdminRoutes` when it ends.
///
/// Each request has a deadline (OperationsPortLimits.requestDeadlineSeconds)
/// counted from the connection's opening or the previous response, never
/// restarted by bytes, so a client sending one byte a second is closed like
/// a silent one. It also ends idle keep-alive connections.
private final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminRoutes
    private let connections: AdminConnections
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    private static let maxBodyBytes = 64 * 1024

    /// When the connection began waiting for its next request; nil while a
    /// request is being answered (it may not be evicted or timed out then).
    private(set) var waitingSince: NIODeadline?
    private var deadline: Scheduled<Void>?
    private(set) var channel: Channel?

    init(routes: AdminRoutes, connections: AdminConnections) {
        self.routes = routes
        self.connections = connections
    }

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        awaitRequest(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        connections.remove(self)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        connections.remove(self)
        context.fireChannelInactive()
    }

    private func awaitRequest(context: ChannelHandlerContext) {
        deadline?.cancel()
        waitingSince = .now()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: .seconds(OperationsPortLimits.requestDeadlineSeconds)) {
            channel.close(promise: nil)
        }
    }

    private func beginAnswer() {
        deadline?.cancel()
        deadline = nil
        waitingSince = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            bodyBytes = 0
        case .body(let chunk):
            // No endpoint takes a body; bound what a client may make us read.
            bodyBytes += chunk.readableBytes
            if bodyBytes > Self.maxBodyBytes {
                write(context: context, head: head, response: .error(413, "request body too large; no endpoint takes a body"), keepAlive: false)
                head = nil
            }
        case .end:
            guard let requestHead = head else { return }
            head = nil
            beginAnswer()
            let request = AdminRequest(
                method: requestHead.method.rawValue, uri: requestHead.uri,
                accept: requestHead.headers.first(name: "accept"),
                authorization: requestHead.headers.first(name: "authorization"),
                fromLoopback: context.channel.remoteAddress?.ipAddress.flatMap { ClientAddress($0) }?.isLoopback ?? false)
            if AdminRoutes.runsOffTheEventLoop(request) {
                let routes = self.routes
                let answer = NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) { routes.respond(to: request) }
                answer.assumeIsolated().whenComplete { result in
                    let response = (try? result.get()) ?? .error(503, "the node is shutting down")
                    self.write(context: context, head: requestHead, response: response, keepAlive: requestHead.isKeepAlive)
                }
                return
            }
            let response = routes.respond(to: request)
            write(context: context, head: requestHead, response: response, keepAlive: requestHead.isKeepAlive)
        }
    }

    /// A malformed request: NIO's error handler has answered 400; the
    /// connection cannot be trusted to frame another request.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func write(context: ChannelHandlerContext, head: HTTPRequestHead?, response: AdminResponse, keepAlive: Bool) {
        let version = head?.version ?? .http1_1
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        if head?.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: response.body.utf8.count)
            buffer.writeString(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        } else if waitingSince == nil {
            // A 413 is written while the request is still arriving; its
            // deadline keeps running. Otherwise the next request's starts now.
            awaitRequest(context: context)
        }
    }

    /// Closed to make room for a new connection (AdminConnections).
    func evict() {
        deadline?.cancel()
        deadline = nil
        channel?.close(promise: nil)
    }
}

/// The operations port's open connections, bounded by
/// OperationsPortLimits.maxConnections. When full, the connection that has
/// waited longest for its request (at least `evictableAfter`) is closed to
/// let the new one in, so a health check still gets answered while slow
/// clients hold every place; when none has waited that long, the new
/// connection is refused with 503.
///
/// Confined to the operations event loop (the group has one thread and
/// every channel of the port lives on it); `@unchecked Sendable` records
/// that, and each entry point checks it in debug builds.
private final class AdminConnections: @unchecked Sendable {
    private let eventLoop: EventLoop
    private let logger: Logger
    private var open: [ObjectIdentifier: AdminHTTPHandler] = [:]
    private var evicted = 0
    private var refused = 0
    private var nextReport = NIODeadline.uptimeNanoseconds(0)
    private static let evictableAfter = TimeAmount.seconds(1)
    private static let reportInterval = TimeAmount.seconds(10)

    init(eventLoop: EventLoop, logger: Logger) {
        self.eventLoop = eventLoop
        self.logger = logger
    }

    /// True when a new connection may be served (after evicting one if needed).
    func makeRoom() -> Bool {
        eventLoop.assertInEventLoop()
        guard open.count >= OperationsPortLimits.maxConnections else { return true }
        let now = NIODeadline.now()
        var stalest: AdminHTTPHandler?
        for handler in open.values {
            guard let since = handler.waitingSince, now - since >= Self.evictableAfter else { continue }
            if let best = stalest?.waitingSince, best <= since { continue }
            stalest = handler
        }
        if let stalest {
            open[ObjectIdentifier(stalest)] = nil
            stalest.evict()
            evicted += 1
        } else {
            refused += 1
        }
        reportIfDue(now)
        return stalest != nil
    }

    func insert(_ handler: AdminHTTPHandler) {
        eventLoop.assertInEventLoop()
        open[ObjectIdentifier(handler)] = handler
    }

    func remove(_ handler: AdminHTTPHandler) {
        eventLoop.assertInEventLoop()
        open[ObjectIdentifier(handler)] = nil
    }

    /// One line per interval while the port is full, not one per connection.
    private func reportIfDue(_ now: NIODeadline) {
        guard now >= nextReport else { return }
        nextReport = now + Self.reportInterval
        logger.warning("operations port full: closed the longest-waiting connections or refused new ones", metadata: [
            "max_connections": "\(OperationsPortLimits.maxConnections)", "evicted": "\(evicted)", "refused": "\(refused)",
        ])
        evicted = 0
        refused = 0
    }
}

/// Answers a connection the port has no room for (plain http only), then closes it.
private final class RefuseWhenFull: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let body = #"{"error":"too many connections to the operations port; retry shortly"}"# + "\n"
    private static let response = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        + "Content-Length: \(body.utf8.count)\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body
    private var answered = false
    private let answers: Bool

    init(answers: Bool) {
        self.answers = answers
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { answer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        answer(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func answer(context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        let channel = context.channel
        guard answers else {
            channel.close(promise: nil)
            return
        }
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(string: Self.response))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// Pauses the operations port's listener while accept fails for want of
/// descriptors (EMFILE and the like), and says so once per interval with a
/// count.
///
/// NIO keeps a listener registered after a failed accept (its read stays
/// pending, since only a successful accept clears it), and this bootstrap
/// adds no backoff; NIO's own AcceptBackoffHandler was tried and does not
/// help, because it only delays the *next* read while the pending one keeps
/// epoll firing. Measured: strace showed 22,764 failed accept4 calls in 1 s
/// on the operations thread. Turning autoRead off takes the listener out of
/// epoll; turning it back on after the pause tries again.
private final class AcceptPauseWhenShort: ChannelInboundHandler {
    typealias InboundIn = Channel

    private let logger: Logger
    private var failures = 0
    private var paused = false
    private var nextReport = NIODeadline.uptimeNanoseconds(0)

    init(logger: Logger) {
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let ioError = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(ioError.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        failures += 1
        let now = NIODeadline.now()
        if now >= nextReport {
            nextReport = now + .seconds(10)
            logger.warning("operations port cannot accept connections; pausing accepts", metadata: [
                "error": "\(SystemError(operation: "accept", code: ioError.errnoCode))", "failed_accepts": "\(failures)",
                "pause_ms": "\(OperationsPortLimits.acceptPauseMilliseconds)",
            ])
            failures = 0
        }
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        try? options.setOption(.autoRead, value: false)
        let channel = context.channel
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(OperationsPortLimits.acceptPauseMilliseconds)) {
            self.paused = false
            try? channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }
}
