import Testing
@testable import AegisConfig

@Suite("Settings promising unbuilt features are refused")
struct UnbuiltFeatureTests {
    @Test func readQuorumsAboveOneAreRefusedNamingKeyValueAndSource() throws {
        // TLS is built (issue 16): asking for it is no longer refused here.
        let tls = try load(env: ["AEGIS_TLS_ENABLED": "true", "AEGIS_TLS_CERT_FILE": "/c", "AEGIS_TLS_KEY_FILE": "/k"])
        #expect(UnbuiltFeatures.refusals(in: tls).isEmpty)
        let quorums = try load(args: ["--write-quorum", "2", "--read-quorum", "3"])
        let lines = UnbuiltFeatures.refusals(in: quorums)
        // Write quorums are built (issue 12): only the read quorum is refused.
        #expect(lines.count == 1)
        #expect(lines.last?.hasPrefix("config: read_quorum (3, from --read-quorum): read quorums are not available") == true, "\(lines)")
    }

    @Test func whatASingleNodeDoesIsNotRefused() throws {
        #expect(UnbuiltFeatures.refusals(in: try load()).isEmpty)
        #expect(UnbuiltFeatures.refusals(in: try load(args: ["--write-quorum", "1", "--read-quorum", "1", "--tls-enabled", "false"])).isEmpty)
        #expect(UnbuiltFeatures.refusals(in: try load(args: ["--write-quorum", "3"])).isEmpty)
    }
}
