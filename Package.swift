// swift-tools-version: 6.1
import PackageDescription

let strictSwift: [SwiftSetting] = [.swiftLanguageMode(.v6)]
/// The request-path modules drop the runtime exclusivity checks in release
/// builds: they cost a thread-local lookup per class-property access
/// (measured at about 4% of server CPU). Debug builds and tests keep them.
let hotPathSwift: [SwiftSetting] = strictSwift + [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "AegisKV",
    products: [
        .executable(name: "aegiskv", targets: ["aegiskv"]),
        .executable(name: "aegiskv-bench", targets: ["aegiskv-bench"]),
        .executable(name: "aegiskv-cli", targets: ["aegiskv-cli"]),
        .executable(name: "aegiskv-sim", targets: ["aegiskv-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        // TLS for the operations port, whose HTTP server is SwiftNIO (AegisAdmin only).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // Thin wrappers over what the kernel offers and Swift cannot import directly,
        // and over the system's OpenSSL (libssl3, a shared library: TLS on 7700).
        .target(
            name: "CSupport",
            path: "CSupport",
            linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // TLS through the system's OpenSSL (CSupport's binding): contexts from PEM
        // files and non-blocking sessions, for the node's client port and its clients.
        .target(name: "AegisTLS", dependencies: ["CSupport"], swiftSettings: hotPathSwift),
        // Pure codecs: bytes in, parsed requests or encoded replies out. No I/O, no store.
        .target(name: "AegisProtocol", swiftSettings: hotPathSwift),
        // Per-shard storage: key hashing, the open-addressing table, TTL, eviction, accounting.
        .target(name: "AegisStore", swiftSettings: hotPathSwift),
        // Configuration keys, defaults, file/env/flag layering and validation.
        .target(
            name: "AegisConfig",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strictSwift
        ),
        // The swift-log backend: journald priority prefixes, text or JSON lines, a level reload can change.
        .target(
            name: "AegisLogging",
            dependencies: ["AegisConfig", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift
        ),
        // The node: reactors, connections, cross-reactor rings, command execution, lifecycle.
        .target(
            name: "AegisServer",
            dependencies: [
                "CSupport", "AegisProtocol", "AegisStore", "AegisConfig", "AegisLogging", "AegisCluster", "AegisTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: hotPathSwift
        ),
        // The HTTP operations server on health_addr (/health, /metrics, /admin, /debug):
        // its own SwiftNIO thread, reading what the reactors publish, never on their path.
        .target(
            name: "AegisAdmin",
            dependencies: [
                "AegisServer", "AegisConfig", "AegisCluster", "CSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        // The cluster's logic as pure state machines: events in (with the time they
        // happen), actions out. No sockets, threads, clocks or global randomness,
        // so that aegiskv-sim can drive the real code from one seed.
        .target(name: "AegisCluster", dependencies: ["AegisStore"], swiftSettings: strictSwift),
        // The deterministic simulator's engine: real ClusterNodes over a simulated
        // network and clock, faults and invariants, all from one seed. A library so
        // that tests run the same engine as the aegiskv-sim command.
        .target(name: "AegisSimulation", dependencies: ["AegisCluster", "AegisStore"], swiftSettings: strictSwift),
        .executableTarget(
            name: "aegiskv-sim",
            dependencies: [
                "AegisSimulation", "AegisCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "aegiskv",
            dependencies: [
                "AegisServer", "AegisConfig", "AegisLogging", "AegisAdmin",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        // The operators' client: keys, dump/restore, stats; see docs/cli.md.
        .executableTarget(
            name: "aegiskv-cli",
            dependencies: [
                "AegisTLS", "AegisProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        // The bundled load generator: AegisKV binary, RESP and memcached text, open or closed loop.
        .executableTarget(
            name: "aegiskv-bench",
            dependencies: [
                "CSupport", "AegisTLS", "AegisProtocol", "AegisConfig", "AegisCluster", "AegisStore",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "perf/Bench",
            swiftSettings: hotPathSwift
        ),
        // Store-level benchmarks (eviction hit ratio, bytes per item); see perf/README.md.
        .executableTarget(
            name: "aegiskv-store-bench",
            dependencies: ["AegisStore"],
            path: "perf/StoreBench",
            swiftSettings: strictSwift
        ),
        // Shard map balance and movement on join; the golden placement vectors. See perf/README.md.
        .executableTarget(
            name: "aegiskv-placement",
            dependencies: ["AegisCluster", "AegisConfig", "AegisStore"],
            path: "perf/Placement",
            exclude: ["check_vectors.py"],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "AegisProtocolTests",
            dependencies: ["AegisProtocol", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "AegisStoreTests",
            dependencies: ["AegisStore", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "AegisClusterTests",
            dependencies: [
                "AegisCluster", "AegisSimulation",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            // The golden placement vectors, read by path (#filePath) so that
            // other implementations find them where docs/placement.md says.
            exclude: ["Resources"],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "AegisConfigTests",
            dependencies: ["AegisConfig"],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "AegisLoggingTests",
            dependencies: ["AegisLogging", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "AegisServerTests",
            dependencies: [
                "AegisServer", "AegisAdmin", "AegisProtocol", "AegisConfig", "CSupport", "AegisCluster", "AegisStore",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["python", "runbook"],
            swiftSettings: strictSwift
        ),
    ]
)
