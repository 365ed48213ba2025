import Testing
import TestSupport
@testable import TPMWire

@Suite struct TPMSAttestTests {
    static let clock = TPMSClockInfo(clock: 0x0102_0304_0506_0708, resetCount: 7, restartCount: 3, safe: true)
    static let name: [UInt8] = [0x00, 0x0b] + [UInt8](repeating: 0x5a, count: 32)

    /// One of each attestation type, with every field set to something recognisable.
    static let everyType: [TPMSAttest.Attested] = [
        .certify(TPMSCertifyInfo(name: name, qualifiedName: name.reversed())),
        .creation(TPMSCreationInfo(objectName: name, creationHash: [UInt8](repeating: 1, count: 32))),
        .quote(TPMSQuoteInfo(pcrSelect: try! PCRSelection(parsing: "sha1:0+sha256:0,1,15"), pcrDigest: [UInt8](repeating: 2, count: 32))),
        .commandAudit(TPMSCommandAuditInfo(auditCounter: 99, digestAlg: .sha384, auditDigest: [UInt8](repeating: 3, count: 48),
                                           commandDigest: [UInt8](repeating: 4, count: 48))),
        .sessionAudit(TPMSSessionAuditInfo(exclusiveSession: true, sessionDigest: [UInt8](repeating: 5, count: 20))),
        .time(TPMSTimeAttestInfo(time: 12345, clockInfo: clock, firmwareVersion: 0x2019_1023_0016_3636)),
        .nv(TPMSNVCertifyInfo(indexName: name, offset: 16, nvContents: Array(0..<200))),
        .nvDigest(TPMSNVDigestCertifyInfo(indexName: name, nvDigest: [UInt8](repeating: 6, count: 64))),
    ]

    static func attest(_ body: TPMSAttest.Attested) -> TPMSAttest {
        TPMSAttest(qualifiedSigner: name, extraData: [0xde, 0xad, 0xbe, 0xef], clockInfo: clock,
                   firmwareVersion: 0x2019_1023_0016_3636, attested: body)
    }

    @Test(arguments: everyType)
    func everyAttestationTypeRoundTrips(_ body: TPMSAttest.Attested) throws {
        let a = Self.attest(body)
        let bytes = a.wireBytes
        // header: magic, type
        #expect(Array(bytes.prefix(6)) == [0xff, 0x54, 0x43, 0x47, UInt8(body.type.rawValue >> 8), UInt8(body.type.rawValue & 0xff)])
        let parsed = try TPMSAttest(wireBytes: bytes)
        #expect(parsed == a)
        #expect(parsed.type == body.type)
        #expect(parsed.wireBytes == bytes)
        Hostile.expectEveryTruncationRefused(bytes) { b throws(WireError) in _ = try TPMSAttest(wireBytes: b) }
    }

    /// Found by the fuzzer: an empty bank with sizeofSelect 0 came back with sizeofSelect 1.
    @Test func emptyBankWithZeroSizeOfSelectRoundTrips() throws {
        let bytes: [UInt8] = [0, 0, 0, 2, 0x00, 0x04, 3, 0x01, 0x80, 0x00, 0x00, 0x0b, 0]
        let selection = try PCRSelection(wireBytes: bytes)
        #expect(selection.banks.map(\.sizeOfSelect) == [3, 0])
        #expect(selection.wireBytes == bytes)
        #expect(selection.isSameSelection(as: try PCRSelection(parsing: "sha1:0,15")))
    }

    @Test func clockInfoLayout() throws {
        let bytes = Self.clock.wireBytes
        #expect(bytes == [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 7, 0, 0, 0, 3, 1])
        #expect(try TPMSClockInfo(wireBytes: bytes) == Self.clock)
        let bad = #expect(throws: WireError.self) { try TPMSClockInfo(wireBytes: Hostile.patched(bytes, at: 16, with: [2])) }
        #expect(bad == WireError(.invalidValue, "TPMS_CLOCK_INFO.safe: 2 is not a TPMI_YES_NO (0 or 1)"))
    }

    @Test func refusesUnknownTypeInflatedSizesAndBadAlgorithms() {
        let quote = Self.attest(Self.everyType[2]).wireBytes
        let type = #expect(throws: WireError.self) { try TPMSAttest(wireBytes: Hostile.patched(quote, at: 4, with: [0x80, 0x1b])) }
        #expect(type == WireError(.invalidValue, "TPMS_ATTEST.type: 0x801b is not an attestation structure tag"))
        // qualifiedSigner claims 0xffff bytes
        let signer = #expect(throws: WireError.self) { try TPMSAttest(wireBytes: Hostile.patched(quote, at: 6, with: [0xff, 0xff])) }
        #expect(signer == WireError(.sizeTooLarge, "TPMS_ATTEST.qualifiedSigner: size 65535 exceeds the limit of 68"))
        // extraData claims 65 bytes (TPM2B_DATA holds 64)
        let extra = #expect(throws: WireError.self) { try TPMSAttest(wireBytes: Hostile.patched(quote, at: 8 + 34, with: [0, 65])) }
        #expect(extra == WireError(.sizeTooLarge, "TPMS_ATTEST.extraData: size 65 exceeds the limit of 64"))
        // pcrSelect count absurd; offset: 6 + 36 + 6 + 17 + 8
        let count = #expect(throws: WireError.self) { try TPMSAttest(wireBytes: Hostile.patched(quote, at: 73, with: [0x7f, 0xff, 0xff, 0xff])) }
        #expect(count?.code == .countTooLarge)
        // unknown bank hash algorithm
        let alg = #expect(throws: WireError.self) { try TPMSAttest(wireBytes: Hostile.patched(quote, at: 77, with: [0x12, 0x34])) }
        #expect(alg == WireError(.unknownAlgorithm, "TPML_PCR_SELECTION.pcrSelections[0].hash: 0x1234 is not a hash algorithm this verifier knows"))
        // command audit with a digest algorithm that is no hash
        let audit = Self.attest(Self.everyType[3]).wireBytes
        let digestAlg = #expect(throws: WireError.self) { try TPMSAttest(wireBytes: Hostile.patched(audit, at: 73 + 8, with: [0x00, 0x01])) }
        #expect(digestAlg == WireError(.unknownAlgorithm, "TPMS_COMMAND_AUDIT_INFO.digestAlg: rsa is not a hash algorithm this verifier knows"))
    }

    /// A quote made by tpm2_quote on swtpm parses, serialises byte for byte, and says what
    /// `tpm2_print -t TPMS_ATTEST` says.
    @Test(arguments: AKKind.allCases)
    func realQuoteMatchesTPM2Print(_ kind: AKKind) throws {
        let evidence = try QuoteEvidenceFixture.evidence(kind)
        let bytes = try evidence.read("quote.msg")
        let attest = try TPMSAttest(wireBytes: bytes)
        #expect(attest.wireBytes == bytes)
        #expect(attest.magic == TPMSAttest.generatedValue)
        #expect(attest.type == .quote)
        #expect(Hex.encode(attest.extraData) == QuoteEvidence.nonceHex)
        let quote = try #require(attest.quote)
        #expect(quote.pcrSelect.isSameSelection(as: try PCRSelection(parsing: QuoteEvidence.pcrList)))

        let printed = try Tools.run(try Tools.path("tpm2_print"), ["-t", "TPMS_ATTEST", evidence.path("quote.msg")])
        #expect(printed.status == 0)
        let fields = Self.yamlFields(printed.stdout)
        #expect(fields["magic"] == "ff544347")
        #expect(fields["qualifiedSigner"] == Hex.encode(attest.qualifiedSigner))
        #expect(fields["clock"] == String(attest.clockInfo.clock))
        #expect(fields["resetCount"] == String(attest.clockInfo.resetCount))
        #expect(fields["restartCount"] == String(attest.clockInfo.restartCount))
        #expect(fields["safe"] == (attest.clockInfo.safe ? "1" : "0"))
        #expect(fields["pcrDigest"] == Hex.encode(quote.pcrDigest))
        Hostile.expectEveryTruncationRefused(bytes) { b throws(WireError) in _ = try TPMSAttest(wireBytes: b) }
    }

    @Test func realCertifyIsACertification() throws {
        let evidence = try QuoteEvidenceFixture.evidence(.eccP256ECDSA)
        let bytes = try evidence.read("certify.msg")
        let attest = try TPMSAttest(wireBytes: bytes)
        #expect(attest.type == .certify)
        #expect(attest.wireBytes == bytes)
        guard case .certify(let info) = attest.attested else { Issue.record("not a certify body"); return }
        // TPM2_Certify of the AK names the AK
        #expect(info.name == (try evidence.read("ak.name")))
    }

    /// `key: value` lines of tpm2-tools' YAML output (last one wins).
    static func yamlFields(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            out[parts[0].trimmingCharacters(in: " ")] = parts[1].trimmingCharacters(in: " ")
        }
        return out
    }
}
