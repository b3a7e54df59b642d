#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import AegisConfig

/// A private temporary directory for config files written by one test.
final class TempDir: Sendable {
    let path: String

    init() {
        var template = Array("/tmp/aegis-config-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: made!)
    }

    deinit {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(path)
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    func write(_ contents: String, to name: String = "config.json") -> String {
        writeBytes(Array(contents.utf8), to: name)
    }

    func writeBytes(_ bytes: [UInt8], to name: String) -> String {
        let file = path + "/" + name
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0, "cannot create \(file)")
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = systemWrite(fd, buffer.baseAddress! + offset, buffer.count - offset)
                precondition(written > 0)
                offset += written
            }
        }
        close(fd)
        return file
    }
}

func readText(_ path: String) -> String? {
    guard case .success(let bytes) = Platform.readFile(path, limit: 1 << 24) else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

/// Loads with a file holding `json` (if any), the environment and flag arguments.
func load(json: String? = nil, env: [String: String] = [:], args: [String] = [], in dir: TempDir = TempDir()) throws -> LoadedConfig {
    let file = json.map { dir.write($0) }
    // Parsing 41 options costs tens of milliseconds in a debug build; skip it when there are none.
    let flags = args.isEmpty ? ConfigFlags() : try ConfigFlags.parse(args)
    return try ConfigLoader.load(file: file, environment: env, flags: flags)
}

/// The error loading gives; records a test issue when loading succeeds.
func loadError(json: String? = nil, env: [String: String] = [:], args: [String] = [], in dir: TempDir = TempDir(),
               sourceLocation: SourceLocation = #_sourceLocation) -> ConfigError? {
    do {
        let loaded = try load(json: json, env: env, args: args, in: dir)
        Issue.record("expected a ConfigError, loaded \(loaded.explicitlySet)", sourceLocation: sourceLocation)
        return nil
    } catch let error as ConfigError {
        return error
    } catch {
        Issue.record("expected a ConfigError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}
