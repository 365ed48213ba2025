import X509

extension AttestationKey {
    /// The key as a certificate's SubjectPublicKeyInfo.
    public var certificatePublicKey: Certificate.PublicKey {
        switch publicKey {
        case .p256(let k): Certificate.PublicKey(k)
        case .p384(let k): Certificate.PublicKey(k)
        case .p521(let k): Certificate.PublicKey(k)
        case .rsa(let k): Certificate.PublicKey(k)
        }
    }

    /// Whether `certificate` is for this key (its subject public key is this key).
    public func certifies(_ certificate: Certificate) -> Bool {
        certificate.publicKey == certificatePublicKey
    }
}
