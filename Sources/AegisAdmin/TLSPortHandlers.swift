import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// First in an https operations port's pipeline: a connection whose first
/// byte is not a TLS handshake record (0x16) is someone speaking plain http
/// to the https port, the usual mistake after TLS is turned on. It gets one
/// plain-text 400 that says so (as nginx answers on its https ports) and is
/// closed; a TLS client passes through untouched, and this handler leaves
/// the pipeline at its first byte either way.
final class PlaintextOnTLSPortRefusal: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The first byte of every TLS record carrying a handshake message, and
    /// so of every ClientHello.
    private static let handshakeRecordType: UInt8 = 0x16
    private static let body = #"{"error":"this port serves https: use https:// (health_tls_cert_file is set)"}"# + "\n"
    private static let response = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body

    private let tls: OperationsTLS
    private let logger: Logger
    private var decided = false

    init(tls: OperationsTLS, logger: Logger) {
        self.tls = tls
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return }
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        decided = true
        if first == Self.handshakeRecordType {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        tls.countPlaintextRefusal()
        logger.debug("plain http on the https operations port: answered 400 and closed", metadata: [
            "peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "unknown")",
        ])
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(string: Self.response))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// Right after the TLS handler: counts handshakes that fail (a client
/// without the certificate the CA file asks for, one that does not trust
/// ours, garbage after a 0x16) and closes them with a debug line. A failed
/// handshake is the client's problem, not the node's, so it is not logged
/// above debug; the counter shows a pattern.
final class TLSHandshakeFailureCount: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    private let tls: OperationsTLS
    private let logger: Logger
    private var handshakeDone = false

    init(tls: OperationsTLS, logger: Logger) {
        self.tls = tls
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted = tlsEvent { handshakeDone = true }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if !handshakeDone, error is NIOSSLError || error is BoringSSLError {
            handshakeDone = true  // one count per connection
            tls.countHandshakeFailure()
            logger.debug("TLS handshake on the operations port failed; connection closed", metadata: [
                "peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "unknown")", "error": "\(error)",
            ])
        }
        context.fireErrorCaught(error)
    }
}
