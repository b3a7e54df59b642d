// Compiled into every fuzz target (see fuzz/run.sh).

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
