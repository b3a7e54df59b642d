import Foundation
import Glibc
import Testing

/// The files in systemd/ and the install script, checked with systemd's own tools.
@Suite(.serialized)
struct SystemdUnitTests {
    static let repo = String(#filePath).split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/")
    static let systemdDir = repo + "/systemd"

    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-systemd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// `systemd-analyze verify` insists that ExecStart's binary exists, so it
    /// checks a copy of the unit naming the binary under test.
    static func verify(unitText: String) throws -> (output: String, status: Int32) {
        let directory = try temporaryDirectory()
        let unit = directory + "/aegiskv.service"
        try unitText.replacingOccurrences(of: "/usr/local/bin/aegiskv", with: ServerHarness.binaryPath)
            .write(toFile: unit, atomically: true, encoding: .utf8)
        return try runTool("systemd-analyze", ["verify", unit])
    }

    @Test func unitPassesSystemdAnalyzeVerify() throws {
        let text = try String(contentsOfFile: Self.systemdDir + "/aegiskv.service", encoding: .utf8)
        let result = try Self.verify(unitText: text)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.isEmpty, "\(result.output)")
        for line in ["Type=notify", "NotifyAccess=main", "ExecStart=/usr/local/bin/aegiskv --config /etc/aegiskv/config.json",
                     "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "User=aegiskv", "LimitNOFILE=1048576",
                     "ProtectSystem=strict", "ReadWritePaths=/var/lib/aegiskv", "NoNewPrivileges=yes",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "MemoryDenyWriteExecute=yes"] {
            #expect(text.contains("\n" + line + "\n"), "\(line)")
        }
        // A typo is caught: the test can fail.
        let broken = try Self.verify(unitText: text.replacingOccurrences(of: "Type=notify", with: "Type=notifyy"))
        #expect(broken.output.contains("notifyy"), "\(broken.output)")
    }

    /// The WAL needs io_uring: the filter must allow it.
    @Test func syscallFilterAllowsIoUring() throws {
        let text = try String(contentsOfFile: Self.systemdDir + "/aegiskv.service", encoding: .utf8)
        let filters = text.split(separator: "\n").filter { $0.hasPrefix("SystemCallFilter=") }
        let allow = filters.filter { !$0.hasPrefix("SystemCallFilter=~") }.flatMap { $0.dropFirst("SystemCallFilter=".count).split(separator: " ") }
        let deny = filters.filter { $0.hasPrefix("SystemCallFilter=~") }.flatMap { $0.dropFirst("SystemCallFilter=~".count).split(separator: " ") }
        var allowed = Set<String>()
        var denied = Set<String>()
        for name in allow { allowed.formUnion(try Self.expand(String(name))) }
        for name in deny { denied.formUnion(try Self.expand(String(name))) }
        for call in ["io_uring_setup", "io_uring_enter", "io_uring_register", "epoll_wait", "setrlimit", "sendto"] {
            #expect(allowed.contains(call) && !denied.contains(call), "\(call)")
        }
    }

    /// systemd-analyze's sandbox score is "OK" or better and is the one
    /// docs/security.md states, with each remaining exposure explained there.
    @Test func hardeningScoreIsOKAndDocumented() throws {
        let result = try runTool("systemd-analyze", ["security", "--offline=yes", Self.systemdDir + "/aegiskv.service"])
        let overall = try #require(result.output.split(separator: "\n").first { $0.contains("Overall exposure level") }, "\(result.output)")
        let fields = overall.split(separator: " ")
        let score = try #require(fields.firstIndex { $0.hasSuffix(":") && $0.contains("service") }.map { String(fields[$0 + 1]) })
        let verdict = try #require(fields.firstIndex { $0.hasSuffix(":") && $0.contains("service") }.map { String(fields[$0 + 2]) })
        #expect(["OK", "SAFE"].contains(verdict) && (Double(score) ?? 10) <= 2.0, "\(overall)")
        let docs = try String(contentsOfFile: Self.repo + "/docs/security.md", encoding: .utf8)
        #expect(docs.contains("rates the unit **\(score) \(verdict)**"), "docs/security.md should state \(score) \(verdict)")
        // Every exposure systemd still reports has its row (and reason) in the docs.
        for line in result.output.split(separator: "\n") where line.hasPrefix("✗ ") {
            let setting = String(line.dropFirst(2).split(separator: " ").first ?? "").replacingOccurrences(of: "|", with: "\\|")
            #expect(docs.contains("| `\(setting)` "), "\(setting) is not explained in docs/security.md")
        }
    }

    /// A system call or @group as the calls it stands for (groups nest).
    static func expand(_ name: String) throws -> Set<String> {
        guard name.hasPrefix("@") else { return [name] }
        let listed = try runTool("systemd-analyze", ["syscall-filter", name]).output.split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") && $0 != name }
        var calls = Set<String>()
        for entry in listed { calls.formUnion(try expand(entry)) }
        return calls
    }

    @Test func exampleConfigValidates() throws {
        let result = try runTool(ServerHarness.binaryPath, ["--validate", "--config", Self.systemdDir + "/config.json"])
        #expect(result.status == 0, "\(result.output)")
    }

    @Test func sysusersAndTmpfilesCreateTheUserDirectoryAndPIDLink() throws {
        let root = try Self.temporaryDirectory()
        for directory in ["etc", "run", "var/lib"] {
            try FileManager.default.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
        }
        for file in ["etc/passwd", "etc/group"] { _ = FileManager.default.createFile(atPath: root + "/" + file, contents: nil) }
        let users = try runTool("systemd-sysusers", ["--root=\(root)", Self.systemdDir + "/aegiskv.sysusers"])
        #expect(users.status == 0, "\(users.output)")
        let passwd = try String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)
        #expect(passwd.hasPrefix("aegiskv:x:"), "\(passwd)")
        guard getuid() == 0 else { return } // tmpfiles must chown to the new user
        let files = try runTool("systemd-tmpfiles", ["--create", "--root=\(root)", Self.systemdDir + "/aegiskv.tmpfiles"])
        #expect(files.status == 0, "\(files.output)")
        let uid = Int(passwd.split(separator: ":")[2])!
        let attributes = try FileManager.default.attributesOfItem(atPath: root + "/var/lib/aegiskv")
        #expect((attributes[.ownerAccountID] as? NSNumber)?.intValue == uid)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o750)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/run/aegiskv.pid") == "/run/aegiskv/aegiskv.pid")
    }

    @Test func installScriptStagesEverythingAndIsIdempotent() throws {
        let stage = try Self.temporaryDirectory()
        let install = Self.systemdDir + "/install"
        let dry = try runTool(install, ["--dry-run", "--destdir", stage, "--binary", ServerHarness.binaryPath])
        #expect(dry.status == 0, "\(dry.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: stage).isEmpty, "--dry-run wrote files")

        let first = try runTool(install, ["--destdir", stage, "--binary", ServerHarness.binaryPath, "--prefix", "/opt/aegis"])
        #expect(first.status == 0, "\(first.output)")
        for path in ["/opt/aegis/bin/aegiskv", "/etc/systemd/system/aegiskv.service", "/etc/sysusers.d/aegiskv.conf",
                     "/etc/tmpfiles.d/aegiskv.conf", "/etc/aegiskv/config.json",
                     "/opt/aegis/share/doc/aegiskv/operations-logging-and-systemd.md"] {
            #expect(FileManager.default.fileExists(atPath: stage + path), "\(path)")
        }
        #expect(FileManager.default.isExecutableFile(atPath: stage + "/opt/aegis/bin/aegiskv"))
        let unit = try String(contentsOfFile: stage + "/etc/systemd/system/aegiskv.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/opt/aegis/bin/aegiskv --config /etc/aegiskv/config.json"))
        // The staged unit verifies with the staged binary.
        let staged = try Self.verify(unitText: unit.replacingOccurrences(of: "/opt/aegis/bin/aegiskv", with: "/usr/local/bin/aegiskv"))
        #expect(staged.status == 0, "\(staged.output)")

        // Again: nothing changes, and an operator's config is kept.
        try #"{"max_memory_mb": 2048}"#.write(toFile: stage + "/etc/aegiskv/config.json", atomically: true, encoding: .utf8)
        let second = try runTool(install, ["--destdir", stage, "--binary", ServerHarness.binaryPath, "--prefix", "/opt/aegis"])
        #expect(second.status == 0, "\(second.output)")
        #expect(!second.output.contains("installed:"), "\(second.output)")
        #expect(second.output.contains("unchanged: /etc/systemd/system/aegiskv.service"))
        #expect(second.output.contains("kept: /etc/aegiskv/config.json"))
        #expect(try String(contentsOfFile: stage + "/etc/aegiskv/config.json", encoding: .utf8).contains("2048"))

        let bad = try runTool(install, ["--prefix", "relative"])
        #expect(bad.status == 2 && bad.output.contains("--prefix must be an absolute path"), "\(bad.output)")
    }
}
