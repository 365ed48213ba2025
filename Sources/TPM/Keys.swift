import TPMWire

extension TPM {
    /// An EK as the TPM presents it.
    public struct EndorsementKey: Sendable, Hashable {
        public let kind: Kind
        public let publicArea: TPMTPublic
        /// The TPM Name: nameAlg ‖ H(publicArea).
        public let name: [UInt8]
        /// Where the TPM keeps it, or nil when it was created from the template for this call.
        public let persistentHandle: UInt32?
        /// The EK certificate from NV (DER, padding removed), or nil when the TPM has none.
        public let certificate: [UInt8]?

        /// The endorsement keys of the TCG EK Credential Profile for TPM 2.0 (low range,
        /// templates L-1 and L-2) that an AK can be created under and credentials activated with.
        ///
        /// swtpm_setup provisions the RSA one (persistent at 0x81010001, certificate in NV
        /// 0x01c00002) and an ECC P-384 one from the high range (0x81010016, NV 0x01c00016);
        /// the ECC P-256 EK is created from its template when asked for (no certificate on swtpm).
        public enum Kind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
            /// Template L-1: RSA 2048, AES-128-CFB, PolicySecret(TPM_RH_ENDORSEMENT).
            case rsa2048 = "rsa"
            /// Template L-2: ECC NIST P-256, AES-128-CFB, PolicySecret(TPM_RH_ENDORSEMENT).
            case eccP256 = "ecc"

            public var description: String {
                switch self {
                case .rsa2048: "RSA-2048 EK"
                case .eccP256: "ECC P-256 EK"
                }
            }

            /// Where the TCG Provisioning Guidance (and the handle registry) keeps this EK.
            public var persistentHandle: UInt32 {
                switch self {
                case .rsa2048: 0x8101_0001
                case .eccP256: 0x8101_0002
                }
            }

            /// The NV index of this EK's certificate (EK Credential Profile, 2.2.1.4).
            public var certificateIndex: UInt32 {
                switch self {
                case .rsa2048: 0x01C0_0002
                case .eccP256: 0x01C0_000A
                }
            }

            /// PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the authPolicy of both templates.
            static let policyA: [UInt8] = [
                0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
                0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
            ]

            /// The template (its `unique` zero-filled to the key size, as the profile asks, so
            /// that CreatePrimary yields the same key as the one the manufacturer certified).
            public var template: TPMTPublic {
                let attributes: TPMAObject = [.fixedTPM, .fixedParent, .sensitiveDataOrigin, .adminWithPolicy, .restricted, .decrypt]
                let aes128 = TPMTSymDefObject(algorithm: .aes, keyBits: 128, mode: .cfb)
                switch self {
                case .rsa2048:
                    return TPMTPublic(nameAlg: .sha256, objectAttributes: attributes, authPolicy: Self.policyA,
                                      key: .rsa(TPMSRSAParms(symmetric: aes128, scheme: .null, keyBits: 2048, exponent: 0),
                                                modulus: [UInt8](repeating: 0, count: 256)))
                case .eccP256:
                    return TPMTPublic(nameAlg: .sha256, objectAttributes: attributes, authPolicy: Self.policyA,
                                      key: .ecc(TPMSECCParms(symmetric: aes128, scheme: .null, curve: .nistP256, kdf: .null),
                                                x: [UInt8](repeating: 0, count: 32), y: [UInt8](repeating: 0, count: 32)))
                }
            }

            /// Whether `publicArea` is a key made from this template: everything but the key
            /// itself (an exponent of 0 and 65537 are the same exponent).
            func matches(_ publicArea: TPMTPublic) -> Bool {
                var candidate = publicArea
                var expected = template
                switch (candidate.key, expected.key) {
                case (.rsa(var p, _), .rsa(var q, let modulus)):
                    p.exponent = p.effectiveExponent
                    q.exponent = q.effectiveExponent
                    candidate.key = .rsa(p, modulus: modulus)
                    expected.key = .rsa(q, modulus: modulus)
                case (.ecc(let p, _, _), .ecc(_, let x, let y)):
                    candidate.key = .ecc(p, x: x, y: y)
                default:
                    return false
                }
                return candidate == expected
            }
        }
    }

    /// An AK: a restricted signing key under an EK, persisted at `handle`.
    public struct AttestationKey: Sendable, Hashable {
        /// 0x81010002 is the TCG-registered handle of the ECC P-256 EK (see
        /// `EndorsementKey.Kind`), so the AK takes the next one. Configurable: any free handle
        /// in the owner's persistent range.
        public static let defaultHandle: UInt32 = 0x8101_0003

        public let handle: UInt32
        public let publicArea: TPMTPublic
        /// The TPM Name, which credential activation binds the credential to.
        public let name: [UInt8]
        /// The EK it was created under.
        public let parent: EndorsementKey.Kind
        /// True when this call created it; false when it was already at `handle`.
        public let created: Bool

        /// What makes a key an AK: a restricted signing key the TPM made itself and that
        /// cannot leave it (`TPMAObject.attestationKey`), signing with a scheme and hash a
        /// verifier can check. Nil when `publicArea` qualifies, else the reason it does not.
        public static func disqualification(of publicArea: TPMTPublic) -> String? {
            let missing = TPMAObject.attestationKey.subtracting(publicArea.objectAttributes)
            if !missing.isEmpty { return "it is not \(missing.names.joined(separator: ", "))" }
            if publicArea.objectAttributes.contains(.decrypt) { return "it is a decryption key too" }
            let scheme = publicArea.key.scheme
            guard [TPMAlgorithm.ecdsa, .rsassa, .rsapss].contains(scheme.scheme), let hash = scheme.hash, hash.isComputableHash else {
                return "its signing scheme \(scheme.scheme.name) is not ECDSA, RSASSA or RSAPSS with a known hash"
            }
            return nil
        }

        /// The attestation keys vmv creates: restricted signing keys under the EK.
        public enum Kind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
            /// ECC NIST P-256, ECDSA with SHA-256 (the default: small, fast on every TPM).
            case eccP256 = "ecc"
            /// RSA 2048, RSASSA-PKCS1-v1_5 with SHA-256.
            case rsa2048 = "rsa"

            public var description: String {
                switch self {
                case .eccP256: "ECC P-256 ECDSA-SHA256 AK"
                case .rsa2048: "RSA-2048 RSASSA-SHA256 AK"
                }
            }

            /// What `tpm2_createak` makes: the AK attributes plus userWithAuth.
            public var template: TPMTPublic {
                let attributes = TPMAObject.attestationKey.union(.userWithAuth)
                switch self {
                case .eccP256:
                    return TPMTPublic(nameAlg: .sha256, objectAttributes: attributes,
                                      key: .ecc(TPMSECCParms(scheme: TPMTScheme(scheme: .ecdsa, hash: .sha256), curve: .nistP256),
                                                x: [], y: []))
                case .rsa2048:
                    return TPMTPublic(nameAlg: .sha256, objectAttributes: attributes,
                                      key: .rsa(TPMSRSAParms(scheme: TPMTScheme(scheme: .rsassa, hash: .sha256), keyBits: 2048),
                                                modulus: []))
                }
            }
        }
    }

    /// A TPM2_Quote and the PCR values it covers.
    public struct Quote: Sendable, Hashable {
        /// The TPMS_ATTEST the TPM signed, as it signed it (`tpm2_quote -m`).
        public let attestBytes: [UInt8]
        public let attest: TPMSAttest
        /// The signature over `attestBytes` (`tpm2_quote -s`).
        public let signature: TPMTSignature
        /// The PCR selection the quote covers, in its order.
        public let selection: PCRSelection
        /// The PCR values whose digest is the quote's pcrDigest.
        public let pcrValues: PCRValues
    }
}
