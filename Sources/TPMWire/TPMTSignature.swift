/// TPMT_SIGNATURE: a TPM signature and its scheme, as `tpm2_quote -s` writes it (the default
/// "tss" format, Tss2_MU_TPMT_SIGNATURE_Marshal).
///
/// Only the schemes an attestation key uses are accepted: RSASSA (PKCS#1 v1.5), RSAPSS and
/// ECDSA. Everything else (HMAC, ECDAA, SM2, EC-Schnorr, NULL) is refused with the scheme's name.
public enum TPMTSignature: Hashable, Sendable, TPMWireCodable {
    /// TPMS_SIGNATURE_RSA under TPM_ALG_RSASSA.
    case rsassa(hash: TPMAlgorithm, signature: [UInt8])
    /// TPMS_SIGNATURE_RSA under TPM_ALG_RSAPSS (salt length = digest length, as TPMs sign).
    case rsapss(hash: TPMAlgorithm, signature: [UInt8])
    /// TPMS_SIGNATURE_ECC under TPM_ALG_ECDSA: the two big-endian halves.
    case ecdsa(hash: TPMAlgorithm, r: [UInt8], s: [UInt8])

    public static let supportedSchemes: [TPMAlgorithm] = [.rsassa, .rsapss, .ecdsa]

    /// TPMT_SIGNATURE.sigAlg.
    public var scheme: TPMAlgorithm {
        switch self {
        case .rsassa: .rsassa
        case .rsapss: .rsapss
        case .ecdsa: .ecdsa
        }
    }

    /// The hash the signer digested the message with.
    public var hash: TPMAlgorithm {
        switch self {
        case .rsassa(let h, _), .rsapss(let h, _), .ecdsa(let h, _, _): h
        }
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let sigAlg = TPMAlgorithm(try reader.readUInt16("TPMT_SIGNATURE.sigAlg"))
        switch sigAlg {
        case .rsassa, .rsapss:
            let hash = try TPMAlgorithm.readHash(&reader, "TPMS_SIGNATURE_RSA.hash")
            let sig = try reader.read(.publicKeyRSA, "TPMS_SIGNATURE_RSA.sig")
            self = sigAlg == .rsassa ? .rsassa(hash: hash, signature: sig) : .rsapss(hash: hash, signature: sig)
        case .ecdsa:
            let hash = try TPMAlgorithm.readHash(&reader, "TPMS_SIGNATURE_ECC.hash")
            let r = try reader.read(.eccParameter, "TPMS_SIGNATURE_ECC.signatureR")
            let s = try reader.read(.eccParameter, "TPMS_SIGNATURE_ECC.signatureS")
            self = .ecdsa(hash: hash, r: r, s: s)
        default:
            throw WireError(.unknownAlgorithm,
                            "TPMT_SIGNATURE.sigAlg: \(sigAlg.name) is not a supported signature scheme (rsassa, rsapss, ecdsa)")
        }
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(scheme.rawValue)
        switch self {
        case .rsassa(let hash, let sig), .rsapss(let hash, let sig):
            writer.write(hash.rawValue)
            writer.write(.publicKeyRSA, sig)
        case .ecdsa(let hash, let r, let s):
            writer.write(hash.rawValue)
            writer.write(.eccParameter, r)
            writer.write(.eccParameter, s)
        }
    }
}
