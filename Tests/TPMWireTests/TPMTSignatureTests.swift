import Testing
import TestSupport
@testable import TPMWire

@Suite struct TPMTSignatureTests {
    static let examples: [TPMTSignature] = [
        .rsassa(hash: .sha256, signature: [UInt8](repeating: 0x11, count: 256)),
        .rsapss(hash: .sha384, signature: [UInt8](repeating: 0x22, count: 384)),
        .ecdsa(hash: .sha256, r: [UInt8](repeating: 0x33, count: 32), s: [UInt8](repeating: 0x44, count: 31)),
    ]

    @Test(arguments: examples)
    func roundTripsAndRefusesEveryTruncation(_ sig: TPMTSignature) throws {
        let bytes = sig.wireBytes
        #expect(Array(bytes.prefix(4)) == [0, UInt8(sig.scheme.rawValue), 0, UInt8(sig.hash.rawValue)])
        #expect(try TPMTSignature(wireBytes: bytes) == sig)
        Hostile.expectEveryTruncationRefused(bytes) { b throws(WireError) in _ = try TPMTSignature(wireBytes: b) }
    }

    @Test(arguments: [(TPMAlgorithm.hmac, "hmac"), (.null, "null"), (.ecdaa, "ecdaa"), (.sm2, "sm2"),
                      (.ecschnorr, "ecschnorr"), (TPMAlgorithm(0x4242), "0x4242")])
    func refusesOtherSchemesByName(_ scheme: TPMAlgorithm, _ name: String) {
        let bytes: [UInt8] = [UInt8(scheme.rawValue >> 8), UInt8(scheme.rawValue & 0xff), 0, 0x0b, 0, 1, 0, 0, 1, 0]
        let error = #expect(throws: WireError.self) { try TPMTSignature(wireBytes: bytes) }
        #expect(error == WireError(.unknownAlgorithm, "TPMT_SIGNATURE.sigAlg: \(name) is not a supported signature scheme (rsassa, rsapss, ecdsa)"))
    }

    @Test func refusesInflatedSizesAndUnknownHashes() {
        let rsa = Self.examples[0].wireBytes
        let big = #expect(throws: WireError.self) { try TPMTSignature(wireBytes: Hostile.patched(rsa, at: 4, with: [0x02, 0x01])) }
        #expect(big == WireError(.sizeTooLarge, "TPMS_SIGNATURE_RSA.sig: size 513 exceeds the limit of 512"))
        let hash = #expect(throws: WireError.self) { try TPMTSignature(wireBytes: Hostile.patched(rsa, at: 2, with: [0x00, 0x10])) }
        #expect(hash == WireError(.unknownAlgorithm, "TPMS_SIGNATURE_RSA.hash: null is not a hash algorithm this verifier knows"))
        let ecc = Self.examples[2].wireBytes
        let r = #expect(throws: WireError.self) { try TPMTSignature(wireBytes: Hostile.patched(ecc, at: 4, with: [0x00, 0x81])) }
        #expect(r == WireError(.sizeTooLarge, "TPMS_SIGNATURE_ECC.signatureR: size 129 exceeds the limit of 128"))
        let s = #expect(throws: WireError.self) { try TPMTSignature(wireBytes: Hostile.patched(ecc, at: 38, with: [0x00, 0x40])) }
        #expect(s == WireError(.sizeTooLarge, "TPMS_SIGNATURE_ECC.signatureS: size 64 exceeds the 31 bytes left"))
    }

    @Test(arguments: AKKind.allCases)
    func realSignaturesParseAndRoundTrip(_ kind: AKKind) throws {
        let bytes = try QuoteEvidenceFixture.evidence(kind).read("quote.sig")
        let sig = try TPMTSignature(wireBytes: bytes)
        #expect(sig.wireBytes == bytes)
        #expect(sig.hash == .sha256)
        switch (kind, sig) {
        case (.eccP256ECDSA, .ecdsa(_, let r, let s)): #expect(r.count == 32 && s.count == 32)
        case (.rsa2048RSASSA, .rsassa(_, let s)), (.rsa2048RSAPSS, .rsapss(_, let s)): #expect(s.count == 256)
        default: Issue.record("\(kind) AK signed with \(sig.scheme)")
        }
    }
}
