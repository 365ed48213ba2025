import Foundation
import Testing
import TPM
import TPMWire
import Verifier

/// Enrollment end to end: the verifier's MakeCredential (pure Swift, from the EK's public area
/// only) against the TPM's ActivateCredential, and the EK certificate against the simulator's
/// CA, made fresh by swtpm_setup for this test run.
@Suite struct EnrollmentTests {
    static func validator(_ simulator: TPMSimulator) throws -> EKCertificateValidator {
        let ca = simulator.certificateAuthority
        return EKCertificateValidator(roots: try EKCertificateValidator.load(ca.root),
                                      intermediates: try EKCertificateValidator.load(ca.issuer))
    }

    @Test(arguments: TPM.EndorsementKey.Kind.allCases)
    func credentialActivationRecoversTheSecret(ek kind: TPM.EndorsementKey.Kind) async throws {
        let tpm = try await TPM.open(simulator: try TPMSimulator.ephemeral())
        let ek = try await tpm.endorsementKey(kind)
        let ak = try await tpm.attestationKey(parent: kind)
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let challenge = try CredentialChallenge(ek: ek.publicArea, objectName: ak.name, credential: secret)
        let recovered = try await tpm.activateCredential(credentialBlob: challenge.credentialBlob,
                                                         encryptedSecret: challenge.encryptedSecret, ek: kind)
        #expect(recovered == secret)
        #expect(try await tpm.handles().isEmpty)
        await tpm.close()
    }

    @Test func aCredentialForAnotherTPMsEKOrAnotherKeyFails() async throws {
        let tpm = try await TPM.open(simulator: try TPMSimulator.ephemeral())
        let foreign = try await TPM.open(simulator: try TPMSimulator.ephemeral(fresh: true))
        let ak = try await tpm.attestationKey()
        let foreignEK = try await foreign.endorsementKey()
        let ownEK = try await tpm.endorsementKey()
        #expect(foreignEK.publicArea != ownEK.publicArea)
        let secret = [UInt8](repeating: 0x5A, count: 32)

        // Made for the other TPM's EK: this TPM cannot recover the seed.
        let forForeign = try CredentialChallenge(ek: foreignEK.publicArea, objectName: ak.name, credential: secret)
        let wrongEK = await #expect(throws: TPMError.self) {
            try await tpm.activateCredential(credentialBlob: forForeign.credentialBlob, encryptedSecret: forForeign.encryptedSecret)
        }
        #expect(wrongEK?.code == .tpm)
        #expect(wrongEK?.operation == "Esys_ActivateCredential")

        // Made for this EK but another key's Name (the EK's): the integrity check fails.
        let forOtherKey = try CredentialChallenge(ek: ownEK.publicArea, objectName: ownEK.name, credential: secret)
        let wrongName = await #expect(throws: TPMError.self) {
            try await tpm.activateCredential(credentialBlob: forOtherKey.credentialBlob, encryptedSecret: forOtherKey.encryptedSecret)
        }
        #expect(wrongName?.code == .tpm)

        // Both failures flushed their sessions and EK objects.
        #expect(try await tpm.handles().isEmpty)
        #expect(try await tpm.handles(first: 0x0200_0000).isEmpty)
        await tpm.close()
        await foreign.close()
    }

    @Test func theEKCertificateChainsToTheSimulatorsCAAndCertifiesTheEK() async throws {
        let simulator = try TPMSimulator.ephemeral()
        let validator = try Self.validator(simulator)
        let tpm = try await TPM.open(simulator: simulator)
        let ek = try await tpm.endorsementKey()
        let certificate = try #require(ek.certificate)
        let validated = try await validator.validate(certificate, ek: ek.publicArea)
        #expect(validated.chain.count == 3)
        #expect(validated.tpmManufacturer == "id:00001014")
        #expect(validated.tpmModel == "swtpm")
        // The certificate of one TPM does not certify another TPM's EK.
        let other = try await TPM.open(simulator: try TPMSimulator.ephemeral(fresh: true))
        let otherEK = try await other.endorsementKey()
        let mismatch = await #expect(throws: EKCertificateError.self) {
            try await validator.validate(certificate, ek: otherEK.publicArea)
        }
        #expect(mismatch?.code == .keyMismatch)
        // Nor does the other TPM's CA vouch for this one.
        let otherValidator = try Self.validator(try TPMSimulator.ephemeral(fresh: true))
        let untrusted = await #expect(throws: EKCertificateError.self) {
            try await otherValidator.validate(certificate, ek: ek.publicArea)
        }
        #expect(untrusted?.code == .untrusted)
        await tpm.close()
        await other.close()
    }
}
