import AegisConfig
import AegisServer
import CSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The HTTP/1.1 operations server on `health_addr`: SwiftNIO on one event
/// loop thread of its own ("aegis-admin"), so a slow scrape or a malloc_trim
/// never runs on a reactor. It reads only what the reactors publish
/// (atomics) and writes only RuntimeSettings and the breaker registry.
public final class AdminServer: NodeCompanion {
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    public let boundPort: Int
    private let address: SocketAddressText

    private struct SocketAddressText { var host: String; var port: Int }

    /// Binds `health_addr` and starts serving; a bind failure is a
    /// StartupError naming the address, so the node refuses to start.
    public static func start(node: NodeContext, logger: Logger) throws -> AdminServer {
        let config = node.config
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        group.next().execute { _ = aegis_set_current_thread_name("aegis-admin") }
        let routes = AdminRoutes(node: node, authToken: config.authToken)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // An operations client that sends nothing for 30 s is gone or stuck: close it.
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(30)))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHTTPHandler(routes: routes))
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
        return AdminServer(group: group, channel: channel, boundPort: port, address: SocketAddressText(host: host, port: port))
    }

    private init(group: MultiThreadedEventLoopGroup, channel: Channel, boundPort: Int, address: SocketAddressText) {
        self.group = group
        self.channel = channel
        self.boundPort = boundPort
        self.address = address
    }

    public var servingMetadata: Logger.Metadata {
        let host = address.host.contains(":") ? "[\(address.host)]" : address.host
        return ["health_addr": "\(host):\(boundPort)"]
    }

    public func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// Collects one request (head; a body is read and ignored) and answers it
/// from `AdminRoutes` when it ends.
private final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminRoutes
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    private static let maxBodyBytes = 64 * 1024

    init(routes: AdminRoutes) {
        self.routes = routes
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
            let request = AdminRequest(
                method: requestHead.method.rawValue, uri: requestHead.uri,
                accept: requestHead.headers.first(name: "accept"),
                authorization: requestHead.headers.first(name: "authorization"))
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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
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
        }
    }
}
