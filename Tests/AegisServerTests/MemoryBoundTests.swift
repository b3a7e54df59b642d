import Foundation
import Testing

/// Issue 14, item 7: RSS stays under max_memory_mb while a node evicts,
/// for small and for large values (the probe saw 2-6% over).
@Suite(.serialized) struct MemoryBoundTests {
    /// Writes `items` SETs of distinct keys and `valueBytes`-byte values, one
    /// round trip per batch, and returns the highest RSS seen.
    static func fill(_ server: ServerHarness, valueBytes: Int, items: Int) throws -> Int {
        let socket = try TestSocket(port: server.port)
        defer { socket.close() }
        let value = [UInt8](repeating: 0x76, count: valueBytes)
        let perBatch = max(1, min(5_000, (1 << 20) / (valueBytes + 40)))
        var peak = 0
        var id = 0
        while id < items {
            var request: [UInt8] = []
            for _ in 0..<perBatch {
                let key = String(format: "key:%012d", id)
                request += Array("*3\r\n$3\r\nSET\r\n$16\r\n\(key)\r\n$\(valueBytes)\r\n".utf8) + value + [13, 10]
                id += 1
            }
            try socket.send(request)
            var received = 0
            _ = try socket.receive { reply in
                received = reply.count
                return received >= 5 * perBatch
            }
            peak = max(peak, server.residentBytes())
        }
        return peak
    }

    @Test(arguments: [8, 1_000_000])
    func rssStaysUnderMaxMemory(valueBytes: Int) throws {
        let maxMB = 128
        let server = try ServerHarness(arguments: ["--max-memory-mb", "\(maxMB)"])
        defer { #expect(server.stop() == 0) }
        // About twice what fits: 8-byte items cost about 70 bytes each.
        let items = 2 * (maxMB << 20) / (valueBytes < 100 ? 70 : valueBytes)
        let peak = try Self.fill(server, valueBytes: valueBytes, items: items)
        print("MemoryBoundTests: \(valueBytes)-byte values peaked at \(peak) bytes of RSS (limit \(maxMB << 20))")
        #expect(peak < maxMB << 20, "RSS peaked at \(peak) bytes with \(valueBytes)-byte values, max_memory_mb \(maxMB)")
    }
}
