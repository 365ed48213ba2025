import Crypto
import CryptoExtras
import SwiftASN1
import TPMWire
import X509

/// Evidence that cannot be used as it is: unreadable key material, a structure that does not
/// parse. Distinct from a rejection: nothing was judged. The reason names the input and why.
public struct EvidenceError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// An attestation key (AK): its public key as swift-crypto sees it and, when it came as a
/// TPM2B_PUBLIC, the TPM's description of it (attributes, scheme), which the quote rules check.
public struct AttestationKey: @unchecked Sendable {
    // @unchecked: swift-crypto's public key types are immutable values but not all are
    // marked Sendable on Linux.

    /// The verification key.
    public enum PublicKey {
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case p521(P521.Signing.PublicKey)
        case rsa(_RSA.Signing.PublicKey)

        public var isRSA: Bool { if case .rsa = self { true } else { false } }

        public var description: String {
            switch self {
            case .p256: "ECC NIST P-256"
            case .p384: "ECC NIST P-384"
            case .p521: "ECC NIST P-521"
            case .rsa(let k): "RSA-\(k.keySizeInBits)"
            }
        }
    }

    public let publicKey: PublicKey
    /// The TPMT_PUBLIC the key came from; nil for a PEM/DER key (then no attribute is known).
    public let tpmPublic: TPMTPublic?

    public init(publicKey: PublicKey) {
        self.publicKey = publicKey
        self.tpmPublic = nil
    }

    /// The key of a TPMT_PUBLIC: RSA (at least 2048 bits) or ECC on NIST P-256/384/521.
    public init(tpmPublic: TPMTPublic) throws(EvidenceError) {
        self.tpmPublic = tpmPublic
        switch tpmPublic.key {
        case .rsa(let parms, let modulus):
            guard modulus.count * 8 == Int(parms.keyBits) else {
                throw EvidenceError("AK: RSA modulus of \(modulus.count) bytes does not match keyBits \(parms.keyBits)")
            }
            let e = parms.effectiveExponent
            let exponent: [UInt8] = [UInt8(e >> 24), UInt8((e >> 16) & 0xff), UInt8((e >> 8) & 0xff), UInt8(e & 0xff)]
            do {
                publicKey = .rsa(try _RSA.Signing.PublicKey(n: modulus, e: exponent))
            } catch {
                throw EvidenceError("AK: RSA-\(parms.keyBits) key with exponent \(e) is not usable (at least 2048 bits are required)")
            }
        case .ecc(let parms, let x, let y):
            guard let size = parms.curve.coordinateSize, x.count <= size, y.count <= size else {
                throw EvidenceError("AK: ECC point does not fit curve \(parms.curve)")
            }
            let point = [0x04] + Self.leftPadded(x, to: size) + Self.leftPadded(y, to: size)
            do {
                switch parms.curve {
                case .nistP256: publicKey = .p256(try P256.Signing.PublicKey(x963Representation: point))
                case .nistP384: publicKey = .p384(try P384.Signing.PublicKey(x963Representation: point))
                case .nistP521: publicKey = .p521(try P521.Signing.PublicKey(x963Representation: point))
                default: throw EvidenceError("AK: curve \(parms.curve) is not supported (nist_p256, nist_p384, nist_p521)")
                }
            } catch let error as EvidenceError {
                throw error
            } catch {
                throw EvidenceError("AK: the ECC point is not on curve \(parms.curve)")
            }
        }
    }

    /// An AK file as tpm2-tools writes it, recognised from its content: PEM SubjectPublicKeyInfo
    /// (`-f pem`), DER SubjectPublicKeyInfo (`-f der`), or a TPM2B_PUBLIC (`-f tss`).
    public init(contents: [UInt8]) throws(EvidenceError) {
        let text = contents.drop { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
        if text.starts(with: Array("-----BEGIN".utf8)) {
            let pem = String(decoding: contents, as: UTF8.self)
            let key: Certificate.PublicKey
            do { key = try Certificate.PublicKey(pemEncoded: pem) } catch {
                throw EvidenceError("AK: not a PEM SubjectPublicKeyInfo (\(error))")
            }
            try self.init(spki: key)
            return
        }
        // A TPM2B_PUBLIC starts with its size, which would exceed any AK file if the first byte
        // were 0x30: such a file is DER.
        if contents.first == 0x30, contents.count < 0x3000 {
            let key: Certificate.PublicKey
            do { key = try Certificate.PublicKey(derEncoded: contents) } catch {
                throw EvidenceError("AK: not a DER SubjectPublicKeyInfo (\(error))")
            }
            try self.init(spki: key)
            return
        }
        let pub: TPM2BPublic
        do { pub = try TPM2BPublic(wireBytes: contents) } catch {
            throw EvidenceError("AK: neither PEM, DER nor a valid TPM2B_PUBLIC: \(error.reason)")
        }
        try self.init(tpmPublic: pub.publicArea)
    }

    private init(spki key: Certificate.PublicKey) throws(EvidenceError) {
        if let k = P256.Signing.PublicKey(key) {
            self.init(publicKey: .p256(k))
        } else if let k = P384.Signing.PublicKey(key) {
            self.init(publicKey: .p384(k))
        } else if let k = P521.Signing.PublicKey(key) {
            self.init(publicKey: .p521(k))
        } else if let k = _RSA.Signing.PublicKey(key), k.keySizeInBits >= 2048 {
            self.init(publicKey: .rsa(k))
        } else {
            throw EvidenceError("AK: \(key) is not an RSA (2048 bits or more) or NIST P-256/384/521 key")
        }
    }

    static func leftPadded(_ bytes: [UInt8], to size: Int) -> [UInt8] {
        [UInt8](repeating: 0, count: max(0, size - bytes.count)) + bytes
    }

    /// Whether `signature` is this key's signature over `message`. Says why not, or nil when it is.
    /// The scheme must fit the key type, and the hash must be SHA-256 or stronger.
    public func verificationFailure(of signature: TPMTSignature, over message: [UInt8]) -> String? {
        switch signature.hash {
        case .sha256, .sha384, .sha512: break
        default: return "signature hash \(signature.hash.name) is not accepted (sha256, sha384, sha512)"
        }
        switch (publicKey, signature) {
        case (.rsa(let key), .rsassa(let hash, let sig)), (.rsa(let key), .rsapss(let hash, let sig)):
            let padding: _RSA.Signing.Padding = signature.scheme == .rsassa ? .insecurePKCS1v1_5 : .PSS
            guard sig.count * 8 == key.keySizeInBits else {
                return "\(signature.scheme.name) signature of \(sig.count) bytes for an RSA-\(key.keySizeInBits) AK"
            }
            let rsaSig = _RSA.Signing.RSASignature(rawRepresentation: sig)
            let valid = Self.withDigest(hash, message) { key.isValidSignature(rsaSig, for: $0, padding: padding) }
            return valid ? nil : "\(signature.scheme.name)/\(hash.name) signature does not verify with the AK"
        case (.p256(let key), .ecdsa(let hash, let r, let s)):
            return Self.ecdsa(r, s, 32, hash, message, P256.Signing.ECDSASignature.init(rawRepresentation:)) { sig, d in
                key.isValidSignature(sig, for: d)
            }
        case (.p384(let key), .ecdsa(let hash, let r, let s)):
            return Self.ecdsa(r, s, 48, hash, message, P384.Signing.ECDSASignature.init(rawRepresentation:)) { sig, d in
                key.isValidSignature(sig, for: d)
            }
        case (.p521(let key), .ecdsa(let hash, let r, let s)):
            return Self.ecdsa(r, s, 66, hash, message, P521.Signing.ECDSASignature.init(rawRepresentation:)) { sig, d in
                key.isValidSignature(sig, for: d)
            }
        default:
            return "a \(signature.scheme.name) signature cannot come from an \(publicKey.description) AK"
        }
    }

    private static func ecdsa<Signature>(
        _ r: [UInt8], _ s: [UInt8], _ size: Int, _ hash: TPMAlgorithm, _ message: [UInt8],
        _ make: ([UInt8]) throws -> Signature, _ verify: (Signature, any Digest) -> Bool
    ) -> String? {
        guard r.count <= size, s.count <= size, let sig = try? make(leftPadded(r, to: size) + leftPadded(s, to: size)) else {
            return "ECDSA signature halves of \(r.count) and \(s.count) bytes do not fit the AK's curve"
        }
        let valid = withDigest(hash, message) { verify(sig, $0) }
        return valid ? nil : "ecdsa/\(hash.name) signature does not verify with the AK"
    }

    /// Runs `body` with the digest of `message` under `hash` (sha256/384/512; false otherwise).
    private static func withDigest(_ hash: TPMAlgorithm, _ message: [UInt8], _ body: (any Digest) -> Bool) -> Bool {
        switch hash {
        case .sha256: body(SHA256.hash(data: message))
        case .sha384: body(SHA384.hash(data: message))
        case .sha512: body(SHA512.hash(data: message))
        default: false
        }
    }
}
