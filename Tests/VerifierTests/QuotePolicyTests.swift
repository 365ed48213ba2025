import Crypto
import Testing
import TPMWire
@testable import Verifier

/// The rules one by one, on quotes signed here with a software key standing in for a TPM:
/// a TPM never signs a bad magic or a mismatched digest, so these faults are made by hand.
@Suite struct QuotePolicyTests {
    static let key = P256.Signing.PrivateKey()
    static let selection = try! PCRSelection(parsing: "sha256:0,15")
    static let nonce: [UInt8] = Array(0..<16)

    static var values: PCRValues {
        PCRValues([.sha256: [0: [UInt8](repeating: 0, count: 32), 15: [UInt8](repeating: 7, count: 32)]])
    }

    static var akPublic: TPMTPublic {
        let point = Array(key.publicKey.x963Representation)
        return TPMTPublic(nameAlg: .sha256, objectAttributes: AKIsRestrictedSigningKey.required.union(.userWithAuth),
                          key: .ecc(TPMSECCParms(scheme: TPMTScheme(scheme: .ecdsa, hash: .sha256), curve: .nistP256),
                                    x: Array(point[1...32]), y: Array(point[33...64])))
    }

    /// Evidence for a quote of `selection` over `values`, with optional faults.
    static func evidence(magic: UInt32 = TPMSAttest.generatedValue, body: TPMSAttest.Attested? = nil,
                         digest: [UInt8]? = nil, ak: TPMTPublic = akPublic, pcrs: PCRFile? = nil) throws -> QuoteEvidence {
        let pcrDigest = digest ?? TPMAlgorithm.sha256.hash(values.values(in: selection)!.flatMap { $0 })!
        let attest = TPMSAttest(magic: magic, qualifiedSigner: [0, 0x0b] + [UInt8](repeating: 1, count: 32), extraData: nonce,
                                clockInfo: TPMSClockInfo(clock: 1, resetCount: 2, restartCount: 3, safe: true), firmwareVersion: 4,
                                attested: body ?? .quote(TPMSQuoteInfo(pcrSelect: selection, pcrDigest: pcrDigest)))
        let message = attest.wireBytes
        let sig = try key.signature(for: SHA256.hash(data: message)).rawRepresentation
        return QuoteEvidence(attest: attest, message: message,
                             signature: .ecdsa(hash: .sha256, r: Array(sig.prefix(32)), s: Array(sig.suffix(32))),
                             ak: try AttestationKey(tpmPublic: ak), pcrs: pcrs ?? PCRFile(selection: selection, values: values))
    }

    static func failures(_ e: QuoteEvidence) -> [QuoteRule] {
        QuoteVerifier.standard(nonce: nonce, selection: selection).check(e).failures.map(\.rule)
    }

    @Test func aGoodQuoteMeetsEveryRule() throws {
        #expect(QuoteVerifier.standard(nonce: Self.nonce, selection: Self.selection).check(try Self.evidence()) == .valid)
    }

    @Test func badMagicFailsTheMagicRuleAlone() throws {
        let verdict = QuoteVerifier.standard(nonce: Self.nonce, selection: Self.selection).check(try Self.evidence(magic: 0xff54_4348))
        #expect(verdict.failures == [QuoteFailure(rule: .magic, reason: "magic is 0xff544348, not TPM_GENERATED_VALUE (0xff544347)")])
    }

    @Test func pcrDigestOfOtherValuesFails() throws {
        #expect(Self.failures(try Self.evidence(digest: [UInt8](repeating: 9, count: 32))) == [.pcrDigest])
        // a PCR file that selects more than the quote
        var values = Self.values
        values[.sha256, 16] = [UInt8](repeating: 0, count: 32)
        let more = PCRFile(selection: try PCRSelection(parsing: "sha256:0,15,16"), values: values)
        let e = try Self.evidence(pcrs: more)
        let verdict = QuoteVerifier.standard(nonce: Self.nonce, selection: Self.selection).check(e)
        #expect(verdict.failures.map(\.reason) == ["the PCR file holds sha256:0,15,16, the quote covers sha256:0,15 (PCR file has extra sha256:16)"])
    }

    @Test func akAttributesAndScheme() throws {
        var ak = Self.akPublic
        ak.objectAttributes.remove(.fixedTPM)
        ak.objectAttributes.remove(.sensitiveDataOrigin)
        let e = try Self.evidence(ak: ak)
        let verdict = QuoteVerifier.standard(nonce: Self.nonce, selection: Self.selection).check(e)
        #expect(verdict.failures == [QuoteFailure(rule: .akAttributes, reason: "the AK lacks fixedtpm|sensitivedataorigin (it has fixedparent|userwithauth|restricted|sign)")])
        // the key is restricted to ECDSA/SHA-384: a SHA-256 signature does not fit it
        var sha384 = Self.akPublic
        if case .ecc(var p, let x, let y) = sha384.key { p.scheme.hash = .sha384; sha384.key = .ecc(p, x: x, y: y) }
        #expect(Self.failures(try Self.evidence(ak: sha384)) == [.signature])
    }

    @Test func signatureSchemeMustFitTheKey() throws {
        let e = try Self.evidence()
        let rsaSig = TPMTSignature.rsassa(hash: .sha256, signature: [UInt8](repeating: 1, count: 256))
        #expect(e.ak.verificationFailure(of: rsaSig, over: e.message) == "a rsassa signature cannot come from an ECC NIST P-256 AK")
        let sha1 = TPMTSignature.ecdsa(hash: .sha1, r: [1], s: [1])
        #expect(e.ak.verificationFailure(of: sha1, over: e.message) == "signature hash sha1 is not accepted (sha256, sha384, sha512)")
        let long = TPMTSignature.ecdsa(hash: .sha256, r: [UInt8](repeating: 1, count: 33), s: [1])
        #expect(e.ak.verificationFailure(of: long, over: e.message) == "ECDSA signature halves of 33 and 1 bytes do not fit the AK's curve")
    }

    @Test func nonQuoteAttestationFailsTypeSelectionAndDigest() throws {
        let e = try Self.evidence(body: .time(TPMSTimeAttestInfo(time: 1, clockInfo: TPMSClockInfo(clock: 1, resetCount: 1, restartCount: 1, safe: true), firmwareVersion: 1)))
        #expect(Self.failures(e) == [.type, .selection, .pcrDigest])
    }

    @Test func constantTimeEquality() {
        #expect(constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2]))
        #expect(constantTimeEqual([], []))
    }

    @Test func akFilesAreRecognisedByContent() throws {
        let pem = Self.key.publicKey.pemRepresentation
        #expect(try AttestationKey(contents: Array(pem.utf8)).tpmPublic == nil)
        #expect(try AttestationKey(contents: Array(Self.key.publicKey.derRepresentation)).tpmPublic == nil)
        let tss = TPM2BPublic(Self.akPublic).wireBytes
        #expect(try AttestationKey(contents: tss).tpmPublic == Self.akPublic)
        let junk = #expect(throws: EvidenceError.self) { try AttestationKey(contents: Array("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".utf8)) }
        #expect(junk?.reason.hasPrefix("AK: not a PEM SubjectPublicKeyInfo") == true)
        let bad = #expect(throws: EvidenceError.self) { try AttestationKey(contents: [0, 2, 0, 8]) }
        #expect(bad?.reason == "AK: neither PEM, DER nor a valid TPM2B_PUBLIC: TPMT_PUBLIC.type: keyedhash is not a supported key type (rsa, ecc)")
        // a point that is not on the curve
        var off = Self.akPublic
        if case .ecc(let p, let x, _) = off.key { off.key = .ecc(p, x: x, y: [UInt8](repeating: 1, count: 32)) }
        #expect(throws: EvidenceError("AK: the ECC point is not on curve nist_p256")) { try AttestationKey(tpmPublic: off) }
    }
}

