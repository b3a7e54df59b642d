// libFuzzer target for the write-ahead log's record decoder, the function
// recovery runs on every byte of every segment and snapshot at start-up.
// Each input is read as a run of records, the way replay reads a segment.
// It goes through `WALRecord.decode` and the fields it returns, never the
// byte layout, so a new record format needs only new seeds (see fuzz/README.md).
// A crash, an AddressSanitizer report or a failed precondition is a finding.
@testable import AegisServer

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let copy = exactCopy(data, size)
    defer { copy.deallocate() }
    let bytes = UnsafeRawBufferPointer(copy)

    var offset = 0
    while offset < size {
        let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
        guard case .record(let record, let length) = WALRecord.decode(rest) else {
            if case .corrupt(let reason) = WALRecord.decode(rest) { require(!reason.isEmpty) }
            break
        }
        require(length > 0 && length <= rest.count)
        let recordBytes = UnsafeRawBufferPointer(rebasing: rest[..<length])
        require(lies(record.key, within: recordBytes) && lies(record.value, within: recordBytes))

        // A record decodes the same from exactly its own bytes: replay of a
        // segment cut right after it must see the same record.
        let alone = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 1)
        defer { alone.deallocate() }
        alone.copyMemory(from: recordBytes)
        guard case .record(let again, let againLength) = WALRecord.decode(UnsafeRawBufferPointer(alone)) else {
            fail("a record stops decoding when the bytes after it are cut off")
        }
        require(againLength == length && again.operation == record.operation && again.shard == record.shard)
        require(again.version == record.version && again.expiryMs == record.expiryMs)
        require(again.key.elementsEqual(record.key) && again.value.elementsEqual(record.value))
        offset += length
    }
    return 0
}
