// Compiled into every fuzz target (see fuzz/run.sh).
import Glibc

/// The input in a heap block of exactly its size: libFuzzer's own buffer may
/// be larger, and AddressSanitizer flags a read one byte past the end only
/// when the allocation ends there. Parsers that unescape in place write into
/// memory the harness owns. Deallocate the result.
func exactCopy(_ data: UnsafePointer<UInt8>, _ size: Int) -> UnsafeMutableRawBufferPointer {
    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 1)
    if size > 0 { copy.baseAddress!.copyMemory(from: data, byteCount: size) }
    return copy
}

/// Whether `inner` lies within `outer` (an empty `inner` always does).
func lies(_ inner: UnsafeRawBufferPointer, within outer: UnsafeRawBufferPointer) -> Bool {
    guard inner.count > 0 else { return true }
    guard let innerStart = inner.baseAddress, let outerStart = outer.baseAddress else { return false }
    return innerStart >= outerStart && innerStart + inner.count <= outerStart + outer.count
}

/// A property the harness checks. Unlike `precondition`, which traps
/// without its message in optimized builds, this prints what failed (to
/// stderr, with the caller's line) before aborting, so a finding explains
/// itself in the fuzzer's log.
func require(_ condition: Bool, _ message: @autoclosure () -> String = "", line: UInt = #line, file: StaticString = #fileID) {
    if !condition { fail(message(), line: line, file: file) }
}

func fail(_ message: String, line: UInt = #line, file: StaticString = #fileID) -> Never {
    var text = "fuzz: property failed at \(file):\(line)"
    if !message.isEmpty { text += ": " + message }
    text += "\n"
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    abort()
}
