import Crypto
import FoundationEssentials
import SwiftASN1
import TPMWire
import X509

/// A verifier's AK CA: after a credential activation proved that an AK lives in the TPM of a
/// genuine EK, it certifies the AK's key, so that other verifiers can trust the AK through the
/// CA (`attest --ak-ca`) instead of a pin. ECDSA P-256 CA keys (PEM, as `openssl ecparam
/// -genkey` or `vmv certs init` write them).
public struct AKCertificateIssuer: Sendable {
    public let certificate: Certificate
    let key: P256.Signing.PrivateKey

    public init(certificatePEM: String, keyPEM: String) throws(EvidenceError) {
        do { certificate = try Certificate(pemEncoded: certificatePEM) } catch {
            throw EvidenceError("AK CA certificate: not a PEM X.509 certificate (\(error))")
        }
        do { key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM) } catch {
            throw EvidenceError("AK CA key: not a PEM P-256 private key (\(error))")
        }
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw EvidenceError("AK CA key: does not belong to the AK CA certificate")
        }
    }

    /// A new self-signed AK CA (for tests and first set-ups).
    public static func makeCA(commonName: String = "vmv AK CA", days: Int = 3650) throws -> (certificate: Certificate, key: P256.Signing.PrivateKey) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { OrganizationName("vmv"); CommonName(commonName) }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: Date().addingTimeInterval(-300), notValidAfter: Date().addingTimeInterval(Double(days) * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        return (certificate, key)
    }

    /// The AK certificate: the AK's key, the host in the common name, digitalSignature only,
    /// valid for `days`.
    public func issue(ak: TPMTPublic, host: String, days: Int = 365) throws(EvidenceError) -> Certificate {
        let akKey = try AttestationKey(tpmPublic: ak)
        guard let name = ak.name else { throw EvidenceError("the AK's nameAlg cannot be computed") }
        do {
            let subject = try DistinguishedName {
                OrganizationName("vmv")
                CommonName(String("AK \(Hex.encode(name.prefix(8))) of \(host)".prefix(64)))
            }
            let authorityKeyID = try certificate.extensions.subjectKeyIdentifier?.keyIdentifier
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: akKey.certificatePublicKey,
                notValidBefore: Date().addingTimeInterval(-300), notValidAfter: Date().addingTimeInterval(Double(days) * 86400),
                issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    if let authorityKeyID { AuthorityKeyIdentifier(keyIdentifier: authorityKeyID) }
                },
                issuerPrivateKey: Certificate.PrivateKey(key))
        } catch {
            throw EvidenceError("cannot issue the AK certificate: \(error)")
        }
    }
}
