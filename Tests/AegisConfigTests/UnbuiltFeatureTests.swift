import Testing
@testable import AegisConfig

@Suite("Settings promising unbuilt features are refused")
struct UnbuiltFeatureTests {
    @Test func tlsIsRefusedNamingKeyValueAndSourceAndQuorumsAreNot() throws {
        let tls = try load(env: ["AEGIS_TLS_ENABLED": "true", "AEGIS_TLS_CERT_FILE": "/c", "AEGIS_TLS_KEY_FILE": "/k"])
        #expect(UnbuiltFeatures.refusals(in: tls) == [
            "config: tls_enabled (true, from AEGIS_TLS_ENABLED): TLS is not available in this build yet, "
                + "so the node would serve plaintext; set tls_enabled to false or leave it out",
        ])
        let quorums = try load(args: ["--write-quorum", "2", "--read-quorum", "3"])
        // Write and read quorums are built (issue 12): neither is refused.
        #expect(UnbuiltFeatures.refusals(in: quorums).isEmpty)
    }

    @Test func whatASingleNodeDoesIsNotRefused() throws {
        #expect(UnbuiltFeatures.refusals(in: try load()).isEmpty)
        #expect(UnbuiltFeatures.refusals(in: try load(args: ["--write-quorum", "1", "--read-quorum", "1", "--tls-enabled", "false"])).isEmpty)
        #expect(UnbuiltFeatures.refusals(in: try load(args: ["--write-quorum", "3"])).isEmpty)
    }
}
