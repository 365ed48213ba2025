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

        .executableTarget(name: "vmv", dependencies: [
            "VMV", "TPM", "TPMWire", "Introspection", "Verifier",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        .executableTarget(name: "vmv-verifier", dependencies: [
            "Verifier", "TPMWire",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Release-built benchmarks (scripts/bench.sh NAME), each beside its reference tool.
        .executableTarget(name: "vmv-bench", dependencies: [
            "TPMWire", "Verifier", "TPM", "Introspection",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CryptoExtras", package: "swift-crypto"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Test harness shared by the test targets: a private swtpm, tpm2-tools, quote evidence.
        .target(name: "TestSupport", dependencies: ["CTSS2"], path: "Tests/TestSupport"),
        .testTarget(name: "TPMWireTests", dependencies: ["TPMWire", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "VerifierTests", dependencies: [
            "Verifier", "TPMWire", "TestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        .testTarget(name: "IntrospectionTests", dependencies: [
            "Introspection", "TPMWire",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "TPMTests", dependencies: [
            "TPM", "TPMWire", "TestSupport", "Verifier",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ]
)
