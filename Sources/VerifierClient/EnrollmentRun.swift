import Crypto
import FoundationEssentials
import TPMWire
import Verifier
import X509

/// Enrollment of a host (`vmv-verifier enroll`): its EK certificate validated against the
/// verifier's trust anchors, its AK's attributes checked, a credential made in software for the
/// AK's Name under the EK, and the host's proof that its TPM activated it. Only then is the AK
/// pinned. Each failure names the step.
public struct EnrollmentRun: Sendable {
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let step: String
        public let reason: String
        public var description: String { "\(step): \(reason)" }
    }

    public var url: String
    public var tls: ClientTLSFiles
    public var ekAnchors: EKCertificateValidator
    /// When set, the AK is also certified by this AK CA and the certificate stored on the host
    /// (`POST /v1/enroll/certificate`), for verifiers that use `attest --ak-ca`.
    public var issuer: AKCertificateIssuer?

    public init(url: String, tls: ClientTLSFiles, ekAnchors: EKCertificateValidator, issuer: AKCertificateIssuer? = nil) {
        self.url = url
        self.tls = tls
        self.ekAnchors = ekAnchors
        self.issuer = issuer
    }

    public func run() async throws -> AKPin {
        try await VMVHostClient.with(url: url, tls: tls) { client in
            let keys = try await client.ak()
            let (akBytes, akPublic, akName) = try Self.checkAK(keys.ak)
            let (ekPublic, ekPEM, validated) = try await checkEK(keys.ek)

            // A fresh credential, made for the AK's Name under this EK: only the TPM holding the
            // EK's private part can recover it, and only for an object with that Name.
            let credential = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
            let challenge: CredentialChallenge
            do { challenge = try CredentialChallenge(ek: ekPublic, objectName: akName, credential: credential) } catch {
                throw Failure(step: "MakeCredential", reason: "\(error)")
            }
            let answer: ServiceAPI.ActivateResponse
            do {
                answer = try await client.activate(ServiceAPI.ActivateRequest(
                    credentialBlob: Base64.encode(challenge.credentialBlob), secret: Base64.encode(challenge.encryptedSecret)))
            } catch let e as HostError {
                throw Failure(step: "credential activation", reason: e.description)
            }
            guard let proof = try? Hex.decode(answer.proof), ActivationProof.verify(proof, credential: credential, akName: akName) else {
                throw Failure(step: "credential activation", reason: "the host's proof does not match the credential: its TPM did not activate it for AK \(Hex.encode(akName))")
            }
            let tlsKeyHash = try QuoteBinding.tlsKeyHash(certificateDER: try client.serverCertificate())
            if let issuer {
                let certificate = try issuer.issue(ak: akPublic, host: client.hostKey)
                let pem: String
                do { pem = try certificate.serializeAsPEM().pemString } catch {
                    throw Failure(step: "AK certificate", reason: "cannot encode it: \(error)")
                }
                do { try await client.storeAKCertificate(ServiceAPI.CertificateRequest(certificate: pem)) } catch let e as HostError {
                    throw Failure(step: "AK certificate", reason: e.description)
                }
            }
            return AKPin(host: client.hostKey, hostname: nil, akPublic: akBytes, akName: akName, akHandle: keys.ak.handle,
                         ekCertificate: ekPEM, tpmManufacturer: validated.tpmManufacturer, tpmModel: validated.tpmModel,
                         tpmVersion: validated.tpmVersion, tlsKeyHash: tlsKeyHash, enrolledAt: Date().formatted(.iso8601))
        }
    }

    /// The AK: a TPM2B_PUBLIC whose Name is the one the host gave, a restricted signing key
    /// that never left its TPM (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin,
    /// not decrypt) with a usable key.
    static func checkAK(_ ak: ServiceAPI.AK) throws(Failure) -> ([UInt8], TPMTPublic, [UInt8]) {
        let step = "AK"
        guard let bytes = Base64.decode(ak.publicArea) else { throw Failure(step: step, reason: "ak.public is not base64") }
        let pub: TPMTPublic
        do { pub = try TPM2BPublic(wireBytes: bytes).publicArea } catch {
            throw Failure(step: step, reason: "ak.public is not a TPM2B_PUBLIC: \(error.reason)")
        }
        guard let name = pub.name else { throw Failure(step: step, reason: "the AK's nameAlg \(pub.nameAlg.name) cannot be computed") }
        guard Hex.encode(name) == ak.name.lowercased() else {
            throw Failure(step: step, reason: "the host names its AK \(ak.name), its public area has Name \(Hex.encode(name))")
        }
        let missing = AKIsRestrictedSigningKey.required.subtracting(pub.objectAttributes)
        guard missing.isEmpty else { throw Failure(step: step, reason: "the AK lacks \(missing) (it has \(pub.objectAttributes))") }
        guard !pub.objectAttributes.contains(.decrypt) else { throw Failure(step: step, reason: "the AK is a decryption key too") }
        do { _ = try AttestationKey(tpmPublic: pub) } catch { throw Failure(step: step, reason: error.reason) }
        return (bytes, pub, name)
    }

    /// The EK certificate chains to a trust anchor and certifies the EK the host presents.
    func checkEK(_ ek: ServiceAPI.EK) async throws(Failure) -> (TPMTPublic, String, ValidatedEKCertificate) {
        let step = "EK certificate"
        guard let pem = ek.certificate else {
            throw Failure(step: step, reason: "the host has no EK certificate; enrollment needs one to know the TPM is genuine")
        }
        guard let b64 = ek.publicArea, let bytes = Base64.decode(b64) else {
            throw Failure(step: step, reason: "the host sent no EK public area (ek.public)")
        }
        let pub: TPMTPublic
        do { pub = try TPM2BPublic(wireBytes: bytes).publicArea } catch {
            throw Failure(step: step, reason: "ek.public is not a TPM2B_PUBLIC: \(error.reason)")
        }
        do {
            return (pub, pem, try await ekAnchors.validate(Array(pem.utf8), ek: pub))
        } catch {
            throw Failure(step: step, reason: error.reason)
        }
    }
}
