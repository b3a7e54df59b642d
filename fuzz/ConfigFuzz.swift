// libFuzzer target for the configuration decoder: each input is written to
// a file and loaded as the node loads its config file (the strict JSON
// parser, every key's parser and validation, the checks between keys).
// Properties: the loader answers a `ConfigError` whose every line starts
// with "config: ", or a configuration that, written back out with
// `jsonDescription`, loads again to the same value (as that function
// promises). A crash, an AddressSanitizer report or a failed precondition is
// a finding.
@testable import AegisConfig
import Glibc

/// One scratch file per fuzzing process (libFuzzer's -jobs run several).
let scratchPath = "/tmp/aegiskv-config-fuzz-\(getpid()).json"

/// libFuzzer calls this once at start: the scratch file goes when the
/// process exits normally (after a crash it stays, beside the crash input).
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutableRawPointer, _ argv: UnsafeMutableRawPointer) -> CInt {
    atexit { unlink(scratchPath) }
    return 0
}

func writeScratch(_ bytes: UnsafeRawBufferPointer) {
    let fd = open(scratchPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    require(fd >= 0, "cannot create \(scratchPath)")
    defer { close(fd) }
    var written = 0
    while written < bytes.count {
        let count = write(fd, bytes.baseAddress! + written, bytes.count - written)
        require(count > 0, "cannot write \(scratchPath)")
        written += count
    }
}

func load() -> Result<LoadedConfig, ConfigError> {
    do throws(ConfigError) {
        return .success(try ConfigLoader.load(file: scratchPath, environment: [:], flagValues: []))
    } catch {
        return .failure(error)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let copy = exactCopy(data, size)
    defer { copy.deallocate() }
    writeScratch(UnsafeRawBufferPointer(copy))
    switch load() {
    case .failure(let error):
        let lines = error.description.split(separator: "\n", omittingEmptySubsequences: false)
        require(!lines.isEmpty && lines.allSatisfy { $0.hasPrefix("config: ") }, "unexpected error text: \(error.description)")
    case .success(let loaded):
        let text = loaded.config.jsonDescription(redactingSecrets: false)
        text.utf8CString.withUnsafeBytes { writeScratch(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        switch load() {
        case .failure(let error):
            fail("an accepted configuration, written back out, is refused: \(error.description)\n\(text)")
        case .success(let again):
            require(again.config == loaded.config, "an accepted configuration loads back different:\n\(text)")
        }
    }
    return 0
}
