import Testing
import TestSupport
@testable import TPMWire

@Suite struct TPMTPublicTests {
    static let akAttributes: TPMAObject = [.fixedTPM, .fixedParent, .sensitiveDataOrigin, .userWithAuth, .restricted, .sign]

    static let examples: [TPMTPublic] = [
        TPMTPublic(nameAlg: .sha256, objectAttributes: akAttributes,
                   key: .ecc(TPMSECCParms(scheme: TPMTScheme(scheme: .ecdsa, hash: .sha256), curve: .nistP256),
                             x: [UInt8](repeating: 1, count: 32), y: [UInt8](repeating: 2, count: 32))),
        TPMTPublic(nameAlg: .sha384, objectAttributes: [.fixedTPM, .restricted, .decrypt], authPolicy: [UInt8](repeating: 9, count: 48),
                   key: .rsa(TPMSRSAParms(symmetric: TPMTSymDefObject(algorithm: .aes, keyBits: 128, mode: .cfb), scheme: .null,
                                          keyBits: 2048, exponent: 3), modulus: [UInt8](repeating: 0xc3, count: 256))),
        TPMTPublic(nameAlg: .sha1, objectAttributes: [.sign, .decrypt, .noDA],
                   key: .ecc(TPMSECCParms(scheme: TPMTScheme(scheme: .ecdaa, hash: .sha256, count: 4), curve: .bnP256,
                                          kdf: TPMTScheme(scheme: .kdf2, hash: .sha256)), x: [], y: [])),
        TPMTPublic(nameAlg: .sha512, objectAttributes: [.x509sign, .stClear, .adminWithPolicy, .encryptedDuplication],
                   key: .rsa(TPMSRSAParms(scheme: TPMTScheme(scheme: .rsaes), keyBits: 3072), modulus: [UInt8](repeating: 1, count: 384))),
    ]

    @Test(arguments: examples)
    func roundTripsAndRefusesEveryTruncation(_ pub: TPMTPublic) throws {
        let inner = pub.wireBytes
        #expect(try TPMTPublic(wireBytes: inner) == pub)
        let sized = TPM2BPublic(pub).wireBytes
        #expect(Array(sized.prefix(2)) == [UInt8(inner.count >> 8), UInt8(inner.count & 0xff)])
        #expect(try TPM2BPublic(wireBytes: sized).publicArea == pub)
        Hostile.expectEveryTruncationRefused(sized) { b throws(WireError) in _ = try TPM2BPublic(wireBytes: b) }
        Hostile.expectEveryTruncationRefused(inner) { b throws(WireError) in _ = try TPMTPublic(wireBytes: b) }
        // The Name is nameAlg ‖ H(TPMT_PUBLIC)
        let name = try #require(pub.name)
        #expect(Array(name.prefix(2)) == [0, UInt8(pub.nameAlg.rawValue)])
        #expect(Array(name.dropFirst(2)) == pub.nameAlg.hash(inner))
    }

    @Test func attributeNamesReadLikeTPM2Tools() {
        #expect(Self.akAttributes.description == "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign")
        #expect(Self.akAttributes.rawValue == 0x0005_0072)
        #expect(TPMAObject(rawValue: 0x8000_0002).description == "fixedtpm|0x80000000")
    }

    @Test func refusesHostileFields() {
        let ecc = Self.examples[0].wireBytes
        func error(_ offset: Int, _ patch: [UInt8]) -> WireError? {
            #expect(throws: WireError.self) { try TPMTPublic(wireBytes: Hostile.patched(ecc, at: offset, with: patch)) }
        }
        #expect(error(0, [0x00, 0x08]) == WireError(.unknownAlgorithm, "TPMT_PUBLIC.type: keyedhash is not a supported key type (rsa, ecc)"))
        #expect(error(2, [0x00, 0x10]) == WireError(.unknownAlgorithm, "TPMT_PUBLIC.nameAlg: null is not a hash algorithm this verifier knows"))
        #expect(error(4, [0x00, 0x05, 0x00, 0x73]) == WireError(.invalidValue, "TPMT_PUBLIC.objectAttributes: reserved bits 0x1 are set"))
        #expect(error(8, [0x00, 0x41]) == WireError(.sizeTooLarge, "TPMT_PUBLIC.authPolicy: size 65 exceeds the limit of 64"))
        #expect(error(10, [0x00, 0x0a]) == WireError(.unknownAlgorithm, "TPMT_SYM_DEF_OBJECT.algorithm: xor is not a symmetric object algorithm (aes, sm4, camellia, null)"))
        #expect(error(12, [0x00, 0x14])?.code == .unknownAlgorithm)   // rsassa is no ECC scheme
        #expect(error(14, [0x00, 0x10]) == WireError(.unknownAlgorithm, "TPMT_ECC_SCHEME.details.hashAlg: null is not a hash algorithm this verifier knows"))
        #expect(error(16, [0x00, 0x99]) == WireError(.unknownAlgorithm, "TPMS_ECC_PARMS.curveID: 0x0099 is not a known ECC curve"))
        #expect(error(18, [0x00, 0x0b])?.code == .unknownAlgorithm)   // sha256 is no KDF
        #expect(error(20, [0x00, 0x81]) == WireError(.sizeTooLarge, "TPMT_PUBLIC.unique.ecc.x: size 129 exceeds the limit of 128"))
        // TPM2B_PUBLIC whose size disagrees with its content
        let sized = TPM2BPublic(Self.examples[0]).wireBytes
        let short = #expect(throws: WireError.self) { try TPM2BPublic(wireBytes: Hostile.patched(sized, at: 0, with: [0, UInt8(sized.count - 3)]) + [0]) }
        #expect(short?.code == .truncated || short?.code == .sizeTooLarge)
        let long = #expect(throws: WireError.self) { try TPM2BPublic(wireBytes: Hostile.patched(sized, at: 0, with: [0, UInt8(sized.count - 1)]) + [0]) }
        #expect(long == WireError(.trailingBytes, "TPM2B_PUBLIC.publicArea (size \(sized.count - 1)): 1 unexpected bytes after the structure"))
        let inflated = #expect(throws: WireError.self) { try TPM2BPublic(wireBytes: Hostile.patched(sized, at: 0, with: [0xff, 0xff])) }
        #expect(inflated == WireError(.sizeTooLarge, "TPM2B_PUBLIC.size: 65535 exceeds the \(sized.count - 2) bytes left"))
    }

    /// The AKs tpm2_createak made: parse, serialise byte for byte, the Name equals the one
    /// tpm2_createak wrote, and the attributes read as tpm2_print prints them.
    @Test(arguments: AKKind.allCases)
    func realAKsMatchTPM2Tools(_ kind: AKKind) throws {
        let evidence = try QuoteEvidenceFixture.evidence(kind)
        let bytes = try evidence.read("ak.tss")
        let ak = try TPM2BPublic(wireBytes: bytes)
        #expect(ak.wireBytes == bytes)
        #expect(ak.publicArea.name == (try evidence.read("ak.name")))
        #expect(ak.publicArea.objectAttributes == Self.akAttributes)
        let printed = try Tools.run(try Tools.path("tpm2_print"), ["-t", "TPM2B_PUBLIC", evidence.path("ak.tss")])
        #expect(printed.stdout.contains("value: \(ak.publicArea.objectAttributes)\n"))
        switch (kind, ak.publicArea.key) {
        case (.eccP256ECDSA, .ecc(let p, let x, let y)):
            #expect(p.curve == .nistP256 && p.scheme == TPMTScheme(scheme: .ecdsa, hash: .sha256))
            #expect(printed.stdout.contains("x: \(Hex.encode(x))") && printed.stdout.contains("y: \(Hex.encode(y))"))
        case (.rsa2048RSASSA, .rsa(let p, let n)), (.rsa2048RSAPSS, .rsa(let p, let n)):
            #expect(p.keyBits == 2048 && n.count == 256 && p.effectiveExponent == 65537)
            #expect(p.scheme == TPMTScheme(scheme: kind == .rsa2048RSASSA ? .rsassa : .rsapss, hash: .sha256))
            #expect(printed.stdout.contains("rsa: \(Hex.encode(n))"))
        default: Issue.record("\(kind) AK is \(ak.publicArea.type)")
        }
    }
}
