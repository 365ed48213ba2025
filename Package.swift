// swift-tools-version:6.1
// vmv — a Virtual Machine Verifier attestation service for Xen.
//
// Boundaries (see docs/ARCHITECTURE.md):
// - the verifier side (TPMWire, Verifier, VerifierService, vmv-verifier) is pure Swift and never
//   links libtss2 or libxen;
// - C stays at the edge: CTSS2 is imported only by TPM, CXen only by Introspection.
import PackageDescription

let package = Package(
    name: "vmv",
    products: [
        .executable(name: "vmv", targets: ["vmv"]),
        .executable(name: "vmv-verifier", targets: ["vmv-verifier"]),
        .executable(name: "vmv-bench", targets: ["vmv-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        // The VMV host's mTLS API (VMVServer, vmv), its clients (VerifierClient, tests, benchmark).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // The fleet verifier (VerifierService): storage in SQLite or PostgreSQL.
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        // C libraries at the edge.
        .systemLibrary(name: "CTSS2", pkgConfig: "tss2-esys", providers: [.apt(["libtss2-dev"])]),
        .systemLibrary(name: "CXen", pkgConfig: "xencontrol", providers: [.apt(["libxen-dev"])]),

        // Pure Swift: TPM 2.0 structures, tpm2-tools file formats, TCG event log, PCR replay.
        .target(name: "TPMWire", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Pure Swift: quote checks, log replay, appraisal, EK certificates, MakeCredential.
        .target(name: "Verifier", dependencies: [
            "TPMWire",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ]),
        // The TPM as an actor over ESYS.
        .target(name: "TPM", dependencies: [
            "CTSS2", "TPMWire",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Guest memory: Xen foreign mapping, ELF cores, x86-64 page walk, Linux kernel locator.
        .target(name: "Introspection", dependencies: [
            "CXen", "TPMWire",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Measurement engine, measurement log store, crash recovery, boot sequence.
        .target(name: "VMV", dependencies: [
            "TPM", "TPMWire", "Introspection",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Pure Swift: the strict TOML subset of the configuration files, with line numbers.
        .target(name: "ConfigFile"),

        // The mTLS HTTP API of a VMV host: configuration, quote batching, limits, metrics, PKI.
        .target(name: "VMVServer", dependencies: [
            "VMV", "TPM", "TPMWire", "Introspection", "Verifier", "ConfigFile",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .executableTarget(name: "vmv", dependencies: [
            "VMV", "VMVServer", "ConfigFile", "TPM", "TPMWire", "Introspection", "Verifier",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        // Pure Swift: the HTTPS client of a VMV host (mutual TLS, the server certificate seen
        // in each handshake), attestation and enrollment runs.
        .target(name: "VerifierClient", dependencies: [
            "Verifier", "TPMWire",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Pure Swift: continuous attestation of a fleet (scheduler, storage in SQLite or
        // PostgreSQL, management API and web page over mTLS, webhooks, SSE, metrics).
        .target(name: "VerifierService", dependencies: [
            "Verifier", "VerifierClient", "TPMWire", "ConfigFile",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "vmv-verifier", dependencies: [
            "Verifier", "VerifierClient", "VerifierService", "ConfigFile", "TPMWire",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Release-built benchmarks (scripts/bench.sh NAME), each beside its reference tool.
        .executableTarget(name: "vmv-bench", dependencies: [
            "TPMWire", "Verifier", "TPM", "Introspection", "VMV", "VerifierClient", "VerifierService",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CryptoExtras", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Test harness shared by the test targets: a private swtpm, tpm2-tools, quote evidence.
        .target(name: "TestSupport", dependencies: ["CTSS2", "TPM"], path: "Tests/TestSupport"),
        .testTarget(name: "TPMWireTests", dependencies: ["TPMWire", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "VerifierTests", dependencies: [
            "Verifier", "TPMWire", "TestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        // The verifier against evidence from the real stack (swtpm, TPM actor, log store).
        .testTarget(name: "AttestationTests", dependencies: [
            "Verifier", "VerifierClient", "TPM", "VMV", "Introspection", "TPMWire", "TestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        .testTarget(name: "IntrospectionTests", dependencies: [
            "Introspection", "TPMWire",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "TPMTests", dependencies: [
            "TPM", "TPMWire", "TestSupport", "Verifier",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "VerifierServiceTests", dependencies: [
            "VerifierService", "Verifier", "VerifierClient", "TPMWire", "TestSupport",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "VMVTests", dependencies: [
            "VMV", "TPM", "TPMWire", "Verifier", "TestSupport", "Introspection",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "VMVServerTests", dependencies: [
            "VMVServer", "ConfigFile", "VMV", "Verifier", "VerifierClient", "TPM", "TPMWire", "TestSupport",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
    ]
)
