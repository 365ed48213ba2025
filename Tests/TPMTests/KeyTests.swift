import Foundation
import TestSupport
import Testing
import TPM
import TPMWire

/// EKs and AKs on a swtpm, checked against what tpm2-tools read from the same TPM.
@Suite struct KeyTests {
    @Test func theRSAEKIsTheProvisionedTemplateKeyWithItsCertificate() async throws {
        let simulator = try TPMSimulator.ephemeral()
        let scratch = try TemporaryDirectory.make(prefix: "ek")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let tools = TPM2Tools(simulator, directory: scratch)
        let tpm = try await TPM.open(simulator: simulator)

        let ek = try await tpm.endorsementKey(.rsa2048)
        #expect(ek.persistentHandle == 0x8101_0001)
        #expect(ek.name == ek.publicArea.name)
        #expect(TPM.EndorsementKey.Kind.rsa2048.template.objectAttributes == ek.publicArea.objectAttributes)
        try tools.run("tpm2_readpublic", ["-c", "0x81010001", "-o", "ek.pub"])
        #expect(try TPM2BPublic(wireBytes: tools.read("ek.pub")).publicArea == ek.publicArea)
        // The certificate swtpm_setup wrote, as tpm2_nvread reads it.
        try tools.run("tpm2_nvread", ["0x01c00002", "-o", "ek.crt"])
        let certificate = try #require(ek.certificate)
        #expect(certificate == NVCertificate.trimmingPadding(try tools.read("ek.crt")))
        #expect(certificate.first == 0x30)

        // swtpm has no ECC P-256 EK: it is made from template L-2, the same key every time,
        // and flushed after each use.
        let ecc = try await tpm.endorsementKey(.eccP256)
        #expect(ecc.persistentHandle == nil)
        #expect(ecc.certificate == nil)
        #expect(try await tpm.endorsementKey(.eccP256).publicArea == ecc.publicArea)
        #expect(try await tpm.handles().isEmpty)
        await tpm.close()
    }

    @Test func theAKIsCreatedUnderTheEKPersistedAndReusedAcrossRestarts() async throws {
        let simulator = try TPMSimulator.ephemeral()
        defer { simulator.stop() }
        var tpm = try await TPM.open(simulator.tcti)
        let ak = try await tpm.attestationKey()
        #expect(ak.created)
        #expect(ak.handle == TPM.AttestationKey.defaultHandle)
        #expect(ak.parent == .rsa2048)
        #expect(TPM.AttestationKey.disqualification(of: ak.publicArea) == nil)
        #expect(ak.publicArea.objectAttributes.isSuperset(of: [.restricted, .sign, .fixedTPM, .fixedParent]))
        #expect(ak.publicArea.key.scheme == TPMTScheme(scheme: .ecdsa, hash: .sha256))
        #expect(ak.name == ak.publicArea.name)

        let again = try await tpm.attestationKey()
        #expect(!again.created)
        #expect(again.name == ak.name)
        await tpm.close()

        // A power cycle of the same TPM: the AK is still there and is reused.
        simulator.kill()
        let restarted = try simulator.restart()
        defer { restarted.stop() }
        tpm = try await TPM.open(restarted.tcti)
        let reused = try await tpm.attestationKey()
        #expect(!reused.created)
        #expect(reused.name == ak.name)
        let scratch = try TemporaryDirectory.make(prefix: "ak")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let tools = TPM2Tools(restarted, directory: scratch)
        try tools.run("tpm2_readpublic", ["-c", "0x81010003", "-n", "ak.name"])
        #expect(try tools.read("ak.name") == ak.name)

        // An RSA AK, and an AK under the ECC EK, at handles of their own.
        let rsa = try await tpm.attestationKey(at: 0x8101_0004, kind: .rsa2048)
        #expect(rsa.publicArea.key.scheme == TPMTScheme(scheme: .rsassa, hash: .sha256))
        let underECC = try await tpm.attestationKey(at: 0x8101_0005, parent: .eccP256)
        #expect(underECC.parent == .eccP256)
        // The TPM's qualified name tells an AK's parent: asking for it under the RSA EK fails.
        let wrongParent = await #expect(throws: TPMError.self) {
            try await tpm.attestationKey(at: 0x8101_0005, parent: .rsa2048, createIfMissing: false)
        }
        #expect(wrongParent?.reason == "the key at 0x81010005 was not created under the RSA-2048 EK")
        let missing = await #expect(throws: TPMError.self) {
            try await tpm.attestationKey(at: 0x8101_0006, createIfMissing: false)
        }
        #expect(missing?.code == .invalidArgument)

        try await tpm.removeAttestationKey(at: 0x8101_0004)
        #expect(try await !tpm.handles(first: 0x8100_0000).contains(0x8101_0004))
        #expect(try await tpm.handles().isEmpty)
        await tpm.close()
    }

    @Test func aKeyThatIsNotRestrictedIsRefusedAsAnAK() async throws {
        let simulator = try TPMSimulator.ephemeral()
        let scratch = try TemporaryDirectory.make(prefix: "unrestricted")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let tools = TPM2Tools(simulator, directory: scratch)
        // An ordinary signing key (no `restricted`: it would sign any digest, a forged
        // TPMS_ATTEST included), persisted where the AK belongs.
        try tools.run("tpm2_createprimary", ["-C", "o", "-c", "primary.ctx"])
        try tools.run("tpm2_create", ["-C", "primary.ctx", "-G", "ecc", "-u", "key.pub", "-r", "key.priv",
                                      "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"])
        try tools.run("tpm2_load", ["-C", "primary.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx"])
        try tools.run("tpm2_evictcontrol", ["-C", "o", "-c", "key.ctx", "0x81010003"])

        let tpm = try await TPM.open(simulator: simulator)
        let refused = await #expect(throws: TPMError.self) { try await tpm.attestationKey() }
        #expect(refused?.reason == "the key at 0x81010003 cannot be an AK: it is not restricted")
        let quote = await #expect(throws: TPMError.self) {
            try await tpm.quote(PCRSelection(parsing: "sha256:0"), qualifyingData: [1, 2, 3])
        }
        #expect(quote?.reason == "the key at 0x81010003 cannot be an AK: it is not restricted")
        // Nor is it, or the EK, removed as if it were an AK.
        await #expect(throws: TPMError.self) { try await tpm.removeAttestationKey(at: 0x8101_0003) }
        await #expect(throws: TPMError.self) { try await tpm.removeAttestationKey(at: 0x8101_0001) }
        #expect(try await tpm.handles(first: 0x8100_0000) == [0x8101_0001, 0x8101_0003, 0x8101_0016])
        await tpm.close()
    }

    @Test func handlesOutsideTheOwnersPersistentRangeAreRefused() async throws {
        let tpm = try await TPM.open(simulator: try TPMSimulator.ephemeral())
        for handle: UInt32 in [0x8000_0001, 0x8180_0000, 0x01C0_0002] {
            let error = await #expect(throws: TPMError.self) { try await tpm.attestationKey(at: handle) }
            #expect(error?.code == .invalidArgument)
        }
        await tpm.close()
    }
}
