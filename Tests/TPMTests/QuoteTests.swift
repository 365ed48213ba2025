import Foundation
import TestSupport
import Testing
import TPM
import TPMWire

/// Quotes from the TPM actor, checked by tpm2_checkquote on the same swtpm's AK.
@Suite struct QuoteTests {
    static let selection = try! PCRSelection(parsing: "sha1:0,16+sha256:0,15,16,23")

    /// Writes a quote as tpm2-tools would and runs tpm2_checkquote on it.
    static func checkQuote(_ quote: TPM.Quote, ak: TPM.AttestationKey, nonce: [UInt8], tools: TPM2Tools) throws -> Tools.Result {
        try tools.write("ak.pub", TPM2BPublic(ak.publicArea).wireBytes)
        try tools.write("quote.msg", quote.attestBytes)
        try tools.write("quote.sig", quote.signature.wireBytes)
        try tools.write("quote.pcrs", PCRFile(selection: quote.selection, values: quote.pcrValues).bytes(format: .serialized))
        return try tools.attempt("tpm2_checkquote", ["-u", "ak.pub", "-m", "quote.msg", "-s", "quote.sig", "-f", "quote.pcrs",
                                                     "-g", "sha256", "-q", Hex.encode(nonce)])
    }

    @Test(arguments: TPM.AttestationKey.Kind.allCases)
    func aQuotePassesTpm2Checkquote(kind: TPM.AttestationKey.Kind) async throws {
        let simulator = try TPMSimulator.ephemeral()
        let scratch = try TemporaryDirectory.make(prefix: "quote")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let tools = TPM2Tools(simulator, directory: scratch)
        let tpm = try await TPM.open(simulator: simulator)
        let ak = try await tpm.attestationKey(kind: kind)
        try await tpm.extend(pcr: 16, hashing: Array("measured".utf8))

        let nonce = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let quote = try await tpm.quote(Self.selection, qualifyingData: nonce)
        #expect(quote.attest.magic == TPMSAttest.generatedValue)
        #expect(quote.attest.type == .quote)
        #expect(quote.attest.extraData == nonce)
        #expect(quote.attest.wireBytes == quote.attestBytes)
        #expect(quote.selection.isSameSelection(as: Self.selection))
        #expect(quote.pcrValues == (try await tpm.readPCRs(Self.selection)))
        #expect(quote.pcrValues[.sha256, 16] != [UInt8](repeating: 0, count: 32))
        // The AK is in the endorsement hierarchy (a child of the EK): its quotes carry the real
        // resetCount and restartCount, not obfuscated ones, so a verifier can check they only
        // move forward. tpm2_readclock reads them from the same TPM.
        let clock = try tools.run("tpm2_readclock", [])
        #expect(clock.contains("reset_count: \(quote.attest.clockInfo.resetCount)\n"), "\(clock)")
        #expect(clock.contains("restart_count: \(quote.attest.clockInfo.restartCount)\n"), "\(clock)")

        let good = try Self.checkQuote(quote, ak: ak, nonce: nonce, tools: tools)
        #expect(good.status == 0, "\(good.stderr)")
        let wrongNonce = try Self.checkQuote(quote, ak: ak, nonce: [UInt8](repeating: 0, count: 32), tools: tools)
        #expect(wrongNonce.status != 0)
        await tpm.close()
    }

    @Test func refusesOversizedQualifyingDataAndUnallocatedBanks() async throws {
        let tpm = try await TPM.open(simulator: try TPMSimulator.ephemeral())
        _ = try await tpm.attestationKey()
        let big = await #expect(throws: TPMError.self) {
            try await tpm.quote(Self.selection, qualifyingData: [UInt8](repeating: 1, count: 65))
        }
        #expect(big?.reason == "qualifying data of 65 bytes; at most 64")
        let bank = await #expect(throws: TPMError.self) {
            try await tpm.quote(PCRSelection(parsing: "sha512:0"), qualifyingData: [1])
        }
        #expect(bank?.code == .invalidArgument)
        #expect(try await tpm.handles().isEmpty)
        await tpm.close()
    }

    /// Another process extends PCR 16 all the while: every quote must still come with the
    /// values it covers (the actor re-quotes when a PCR moved between quote and read).
    @Test func quotesStayConsistentWhileAnotherProcessExtends() async throws {
        let simulator = try TPMSimulator.ephemeral()
        let tpm = try await TPM.open(simulator: simulator)
        let ak = try await tpm.attestationKey()
        let extender = Task.detached {
            let tools = TPM2Tools(simulator)
            var count = 0
            while !Task.isCancelled {
                _ = try? tools.attempt("tpm2_pcrextend", ["16:sha1=\(String(repeating: "ab", count: 20)),sha256=\(String(repeating: "cd", count: 32))"])
                count += 1
            }
            return count
        }
        var distinct = Set<[UInt8]>()
        for _ in 0..<60 {
            let quote = try await tpm.quote(Self.selection, qualifyingData: [7])
            let ordered = try #require(quote.pcrValues.values(in: quote.selection))
            #expect(quote.signature.hash.hash(ordered.flatMap { $0 }) == quote.attest.quote?.pcrDigest)
            distinct.insert(quote.pcrValues[.sha256, 16] ?? [])
        }
        extender.cancel()
        #expect(await extender.value > 0)
        #expect(distinct.count > 1, "PCR 16 moved during the run")
        _ = ak
        await tpm.close()
    }

    /// swtpm has no resource manager: a leaked transient object or session would stay until
    /// the TPM's few slots run out (TPM_RC_OBJECT_MEMORY, 0x902). 5,000 quotes, errors
    /// included, must leave none.
    @Test func fiveThousandQuotesLeaveNoTransientObjects() async throws {
        let simulator = try TPMSimulator.ephemeral()
        let tpm = try await TPM.open(simulator: simulator)
        _ = try await tpm.attestationKey()
        let selection = try PCRSelection(parsing: "sha256:0,1,2,3,15,16")
        var digests = Set<[UInt8]>()
        for i in 0..<5_000 {
            var nonce = [UInt8](repeating: 0, count: 8)
            for b in 0..<8 { nonce[b] = UInt8(truncatingIfNeeded: i >> (8 * b)) }
            let quote = try await tpm.quote(selection, qualifyingData: nonce)
            #expect(quote.attest.extraData == nonce)
            digests.insert(quote.attestBytes)
            if i % 1_000 == 999 {
                // error paths too: a refused quote and a failed credential activation
                await #expect(throws: TPMError.self) { try await tpm.quote(selection, qualifyingData: [UInt8](repeating: 0, count: 65)) }
                await #expect(throws: TPMError.self) {
                    try await tpm.activateCredential(credentialBlob: [0, 32] + [UInt8](repeating: 1, count: 40),
                                                     encryptedSecret: [UInt8](repeating: 2, count: 256))
                }
            }
        }
        #expect(digests.count == 5_000)
        let tools = TPM2Tools(simulator)
        #expect(try tools.run("tpm2_getcap", ["handles-transient"]).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        #expect(try tools.run("tpm2_getcap", ["handles-loaded-session"]).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        #expect(try await tpm.handles().isEmpty)
        await tpm.close()
    }
}
