import Crypto
import CryptoExtras
import SwiftASN1
import TPMWire
import X509

extension AttestationKey.PublicKey {
    /// The key as a certificate's SubjectPublicKeyInfo carries it.
    public var certificatePublicKey: Certificate.PublicKey {
        switch self {
        case .p256(let key): Certificate.PublicKey(key)
        case .p384(let key): Certificate.PublicKey(key)
        case .p521(let key): Certificate.PublicKey(key)
        case .rsa(let key): Certificate.PublicKey(key)
        }
    }
}

extension TPMTPublic {
    /// The public key of a TPM public area (RSA, or ECC on NIST P-256/384/521), as a
    /// certificate carries it: what an EK certificate must certify.
    public func certificatePublicKey() throws(EvidenceError) -> Certificate.PublicKey {
        try AttestationKey(tpmPublic: self).publicKey.certificatePublicKey
    }

    /// SubjectPublicKeyInfo in PEM, as `tpm2_readpublic -f pem` writes it (`ak.pem`).
    public func pemRepresentation() throws(EvidenceError) -> String {
        let key = try certificatePublicKey()
        do {
            var serializer = DER.Serializer()
            try serializer.serialize(key)
            return PEMDocument(type: "PUBLIC KEY", derBytes: serializer.serializedBytes).pemString + "\n"
        } catch {
            throw EvidenceError("cannot encode the \(type.name) public key: \(error)")
        }
    }
}
