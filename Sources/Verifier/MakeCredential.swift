import Crypto
import CryptoExtras
import TPMWire

/// Why a credential cannot be made for an EK.
public struct MakeCredentialError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The verifier's half of credential activation (TPM2_MakeCredential, TPM 2.0 Part 1 §24),
/// done in software with only the EK's public area: a secret that only the TPM holding that
/// EK can recover, and only for an object whose Name is `objectName` (the AK's).
///
/// For an RSA EK the seed is encrypted with RSA-OAEP (the EK's nameAlg, label "IDENTITY");
/// for an ECC EK it comes from ECDH with an ephemeral key and KDFe. From the seed, KDFa
/// derives the AES key that encrypts the credential (CFB, zero IV) and the HMAC key that
/// binds it to the object's Name.
public struct CredentialChallenge: Sendable, Hashable {
    /// TPM2B_ID_OBJECT contents: the integrity HMAC (as TPM2B_DIGEST), then the encrypted
    /// credential.
    public let credentialBlob: [UInt8]
    /// TPM2B_ENCRYPTED_SECRET contents: the OAEP ciphertext, or the ephemeral TPMS_ECC_POINT.
    public let encryptedSecret: [UInt8]

    public init(credentialBlob: [UInt8], encryptedSecret: [UInt8]) {
        self.credentialBlob = credentialBlob
        self.encryptedSecret = encryptedSecret
    }

    /// At most a digest's worth of credential (TPM2B_DIGEST).
    public static let maxCredentialSize = TPMAlgorithm.maxDigestSize

    /// Makes the challenge for `credential` (the secret the TPM will return), bound to the
    /// object named `objectName` and readable only with the private part of `ek`.
    public init(ek: TPMTPublic, objectName: [UInt8], credential: [UInt8]) throws(MakeCredentialError) {
        guard !credential.isEmpty, credential.count <= Self.maxCredentialSize else {
            throw MakeCredentialError("a credential is 1 to \(Self.maxCredentialSize) bytes, not \(credential.count)")
        }
        guard ek.objectAttributes.contains([.restricted, .decrypt]), !ek.objectAttributes.contains(.sign) else {
            throw MakeCredentialError("the EK is not a restricted decryption key (attributes \(ek.objectAttributes))")
        }
        let nameAlg = ek.nameAlg
        guard let digestSize = nameAlg.digestSize, nameAlg.isComputableHash else {
            throw MakeCredentialError("the EK's nameAlg \(nameAlg.name) is not supported")
        }
        let symmetric: TPMTSymDefObject
        let seed: [UInt8]
        let encryptedSecret: [UInt8]
        switch ek.key {
        case .rsa(let parameters, let modulus):
            symmetric = parameters.symmetric
            seed = RSAOAEP.randomBytes(digestSize)
            do {
                encryptedSecret = try RSAOAEP.encrypt(seed, modulus: modulus, exponent: parameters.effectiveExponent,
                                                      hash: nameAlg, label: "IDENTITY".labelBytes)
            } catch {
                throw MakeCredentialError("RSA-OAEP to the EK failed: \(error)")
            }
        case .ecc(let parameters, let x, let y):
            symmetric = parameters.symmetric
            (seed, encryptedSecret) = try Self.eccSeed(curve: parameters.curve, x: x, y: y, nameAlg: nameAlg, bits: digestSize * 8)
        }
        guard symmetric.algorithm == .aes, symmetric.mode == .cfb, let keyBits = symmetric.keyBits,
              [128, 192, 256].contains(keyBits) else {
            throw MakeCredentialError("the EK's symmetric algorithm is not AES-CFB (\(symmetric.algorithm.name))")
        }
        guard let symmetricKey = TPMKDF.kdfa(nameAlg, key: seed, label: "STORAGE", contextU: objectName, contextV: [],
                                             bits: Int(keyBits)),
              let hmacKey = TPMKDF.kdfa(nameAlg, key: seed, label: "INTEGRITY", contextU: [], contextV: [],
                                        bits: digestSize * 8)
        else { throw MakeCredentialError("KDFa with \(nameAlg.name) failed") }

        // The credential is encrypted as a TPM2B_DIGEST, its size included.
        var sensitive = ByteWriter()
        sensitive.write(.digest, credential)
        let encryptedIdentity: [UInt8]
        do {
            encryptedIdentity = Array(try AES._CFB.encrypt(sensitive.bytes, using: SymmetricKey(data: symmetricKey),
                                                           iv: AES._CFB.IV(ivBytes: [UInt8](repeating: 0, count: 16))))
        } catch {
            throw MakeCredentialError("AES-CFB failed: \(error)")
        }
        guard let integrity = TPMKDF.hmac(nameAlg, key: hmacKey, encryptedIdentity + objectName) else {
            throw MakeCredentialError("HMAC with \(nameAlg.name) failed")
        }
        var blob = ByteWriter()
        blob.write(.digest, integrity)
        blob.write(bytes: encryptedIdentity)
        self.init(credentialBlob: blob.bytes, encryptedSecret: encryptedSecret)
    }

    /// ECDH between an ephemeral key and the EK's point: Z is the shared x-coordinate, the
    /// seed KDFe(nameAlg, Z, "IDENTITY", ephemeral x, EK x), and the encrypted secret the
    /// ephemeral public point as a TPMS_ECC_POINT.
    private static func eccSeed(curve: TPMECCCurve, x: [UInt8], y: [UInt8], nameAlg: TPMAlgorithm, bits: Int)
        throws(MakeCredentialError) -> (seed: [UInt8], secret: [UInt8])
    {
        guard let size = curve.coordinateSize, x.count <= size, y.count <= size else {
            throw MakeCredentialError("the EK's point does not fit curve \(curve)")
        }
        let ekPoint = AttestationKey.leftPadded(x, to: size) + AttestationKey.leftPadded(y, to: size)
        let z: [UInt8]
        let ephemeral: [UInt8]
        do {
            switch curve {
            case .nistP256:
                let key = P256.KeyAgreement.PrivateKey()
                z = try key.sharedSecretFromKeyAgreement(with: P256.KeyAgreement.PublicKey(rawRepresentation: ekPoint))
                    .withUnsafeBytes { Array($0) }
                ephemeral = Array(key.publicKey.rawRepresentation)
            case .nistP384:
                let key = P384.KeyAgreement.PrivateKey()
                z = try key.sharedSecretFromKeyAgreement(with: P384.KeyAgreement.PublicKey(rawRepresentation: ekPoint))
                    .withUnsafeBytes { Array($0) }
                ephemeral = Array(key.publicKey.rawRepresentation)
            default:
                throw MakeCredentialError("ECC curve \(curve) is not supported for MakeCredential")
            }
        } catch let error as MakeCredentialError {
            throw error
        } catch {
            throw MakeCredentialError("ECDH with the EK failed: \(error)")
        }
        let ephemeralX = Array(ephemeral.prefix(size))
        let ephemeralY = Array(ephemeral.suffix(size))
        guard let seed = TPMKDF.kdfe(nameAlg, z: z, label: "IDENTITY", partyU: ephemeralX, partyV: AttestationKey.leftPadded(x, to: size),
                                     bits: bits)
        else { throw MakeCredentialError("KDFe with \(nameAlg.name) failed") }
        var point = ByteWriter()
        point.write(.eccParameter, ephemeralX)
        point.write(.eccParameter, ephemeralY)
        return (seed, point.bytes)
    }
}
