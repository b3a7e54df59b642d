import Foundation
import Testing

/// Issue 14, item 3: FLUSHALL ASYNC empties the node at once and frees the
/// memory off the reactors, on a real node with the Python redis client.
@Suite struct FlushAllAsyncTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("python/flushall_async_check.py").path

    @Test func flushAllAsyncFreesInTheBackground() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let result = try runTool("python3", [Self.script, String(server.port), "200000"])
        #expect(result.status == 0, "\(result.output)\nserver log:\n\(server.log())")
        #expect(result.output.contains("all checks passed"))
    }
}
