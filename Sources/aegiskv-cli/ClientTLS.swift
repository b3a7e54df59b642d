import AegisTLS

/// What `--tls`, `--cacert`, `--cert` and `--key` ask for.
struct TLSOptions {
    var caFile: String
    var certFile: String
    var keyFile: String

    /// A session on a connected socket, its handshake done (each wait at
    /// most `timeoutMs`); the server's certificate is checked against `host`.
    func connect(fd: Int32, address: DialAddress, timeoutMs: Int32) throws(CLIError) -> TLSSession {
        let context: TLSContext
        do {
            context = try TLSContext(clientTrusting: caFile, certificate: certFile, key: keyFile)
        } catch {
            throw CLIError("TLS: \(error.message)")
        }
        guard let session = TLSSession(context: context, fd: fd, isServer: false, host: address.host) else {
            throw CLIError("TLS: cannot create a session: \(TLSSession.lastError())")
        }
        do {
            try session.completeHandshake(fd: fd, timeoutMs: timeoutMs)
        } catch {
            throw CLIError("TLS handshake with \(address) failed: \(error.message)")
        }
        return session
    }
}
