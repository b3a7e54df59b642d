import Foundation
import Glibc

/// A throwaway certificate authority and the certificates the TLS tests
/// serve and present (client port and operations port), made with openssl
/// (P-256 keys, valid for two days, for 127.0.0.1 and localhost): a server
/// certificate "server-one" that `issueServerCertificate` can replace as a
/// rotation would, a second server identity "server-two" in files of its
/// own, a client certificate, and one from another CA.
struct TestPKI {
    let directory: String
    var caCert: String { directory + "/ca.pem" }
    var serverCert: String { directory + "/server.pem" }
    var serverKey: String { directory + "/server.key" }
    var clientCert: String { directory + "/client.pem" }
    var clientKey: String { directory + "/client.key" }
    var foreignClientCert: String { directory + "/foreign-client.pem" }
    var foreignClientKey: String { directory + "/foreign-client.key" }
    var secondServerCert: String { directory + "/server-two.pem" }
    var secondServerKey: String { directory + "/server-two.key" }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-pki-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try makeAuthority("ca", subject: "aegiskv test CA")
        try makeAuthority("foreign-ca", subject: "another CA")
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", serverKey, "-out", directory + "/server.csr", "-subj", "/CN=server-one"])
        try issueServerCertificate(serial: "0x1001")
        try issue("server-two", authority: "ca", serial: "0x5005",
                  extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
        try issue("client", authority: "ca", serial: "0x3003", extensions: "extendedKeyUsage=clientAuth")
        try issue("foreign-client", authority: "foreign-ca", serial: "0x4004", extensions: "extendedKeyUsage=clientAuth")
    }

    /// https on the operations port.
    func serverArguments(clientCA: Bool = false) -> [String] {
        ["--health-tls-cert-file", serverCert, "--health-tls-key-file", serverKey] + (clientCA ? ["--health-tls-ca-file", caCert] : [])
    }

    /// TLS on the client port.
    var clientPortArguments: [String] {
        ["--tls-enabled", "true", "--tls-cert-file", serverCert, "--tls-key-file", serverKey]
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    /// A new certificate for the server's key, written over server.pem as
    /// a rotation would.
    func issueServerCertificate(serial: String) throws {
        let extensions = directory + "/server.ext"
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            .write(toFile: extensions, atomically: true, encoding: .utf8)
        try openssl(["x509", "-req", "-in", directory + "/server.csr", "-CA", caCert, "-CAkey", directory + "/ca.key",
                     "-set_serial", serial, "-days", "2", "-extfile", extensions, "-out", directory + "/server.next.pem"])
        guard rename(directory + "/server.next.pem", serverCert) == 0 else { throw HarnessError("rename failed: errno \(errno)") }
    }

    /// A node's certificate for its peer links (cluster_tls_*), usable as
    /// both TLS client and server: signed by `authority` ("ca" or
    /// "foreign-ca"), or self-signed when nil; `expired` makes one whose two
    /// days of validity ended yesterday (openssl run under faketime);
    /// `loopbackNames` adds 127.0.0.1 and localhost, so that it can also
    /// serve the client port to clients that check the host.
    func issuePeerCertificate(_ name: String, authority: String? = "ca", serial: String,
                              expired: Bool = false, loopbackNames: Bool = false) throws -> (cert: String, key: String) {
        let cert = directory + "/\(name).pem", key = directory + "/\(name).key"
        let extensions = ["extendedKeyUsage=serverAuth,clientAuth"] + (loopbackNames ? ["subjectAltName=IP:127.0.0.1,DNS:localhost"] : [])
        guard let authority else {
            try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=\(name)"] + extensions.flatMap { ["-addext", $0] })
            return (cert, key)
        }
        let extensionFile = directory + "/\(name).ext"
        try (extensions.joined(separator: "\n") + "\n").write(toFile: extensionFile, atomically: true, encoding: .utf8)
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", key, "-out", directory + "/\(name).csr", "-subj", "/CN=\(name)"])
        let sign = ["x509", "-req", "-in", directory + "/\(name).csr", "-CA", directory + "/\(authority).pem",
                    "-CAkey", directory + "/\(authority).key", "-set_serial", serial, "-days", "2",
                    "-extfile", extensionFile, "-out", cert]
        if expired {
            let result = try runTool("faketime", ["-f", "-3d", "openssl"] + sign)
            guard result.status == 0 else { throw HarnessError("faketime openssl: \(result.output)") }
        } else {
            try openssl(sign)
        }
        return (cert, key)
    }

    /// TLS between nodes with the given identity and this PKI's CA.
    func peerArguments(cert: String, key: String) -> [String] {
        ["--cluster-tls-cert-file", cert, "--cluster-tls-key-file", key, "--cluster-tls-ca-file", caCert]
    }

    private func makeAuthority(_ name: String, subject: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", directory + "/\(name).key", "-out", directory + "/\(name).pem", "-days", "2",
                     "-subj", "/CN=\(subject)", "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    private func issue(_ name: String, authority: String, serial: String, extensions: String) throws {
        let extensionFile = directory + "/\(name).ext"
        try (extensions + "\n").write(toFile: extensionFile, atomically: true, encoding: .utf8)
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", directory + "/\(name).key", "-out", directory + "/\(name).csr", "-subj", "/CN=\(name)"])
        try openssl(["x509", "-req", "-in", directory + "/\(name).csr", "-CA", directory + "/\(authority).pem",
                     "-CAkey", directory + "/\(authority).key", "-set_serial", serial, "-days", "2",
                     "-extfile", extensionFile, "-out", directory + "/\(name).pem"])
    }

    private func openssl(_ arguments: [String]) throws {
        let result = try runTool("openssl", arguments)
        guard result.status == 0 else { throw HarnessError("openssl \(arguments.joined(separator: " ")): \(result.output)") }
    }
}
