import CTSS2
import TPMWire

/// EK, AK, credential activation and quotes.
extension TPM {
    /// The EK of `kind`: the persistent one if the TPM has it (and it is the TCG template's
    /// key), else one created from the template for this call; with its certificate from NV
    /// if there is one.
    public func endorsementKey(_ kind: EndorsementKey.Kind = .rsa2048) throws(TPMError) -> EndorsementKey {
        try perform { esys throws(TPMError) in
            let (publicArea, name, persistent) = try withEndorsementKey(kind, esys) { ek throws(TPMError) in
                (ek.publicArea, ek.name, ek.persistentHandle)
            }
            return EndorsementKey(kind: kind, publicArea: publicArea, name: name, persistentHandle: persistent,
                                  certificate: try certificate(at: kind.certificateIndex, esys))
        }
    }

    /// The AK at `handle`, created under the `parent` EK and persisted there if it is missing
    /// and `createIfMissing`. A key found at `handle` must be a restricted signing key under
    /// that EK (its qualified name says so), or it is refused.
    public func attestationKey(
        at handle: UInt32 = AttestationKey.defaultHandle, kind: AttestationKey.Kind = .eccP256, parent: EndorsementKey.Kind = .rsa2048,
        createIfMissing: Bool = true
    ) throws(TPMError) -> AttestationKey {
        let operation = "AK at \(hex(handle))"
        try Self.checkPersistentHandle(handle, operation)
        return try perform { esys throws(TPMError) in
            try withEndorsementKey(parent, esys) { ek throws(TPMError) in
                var created = false
                if try !esys.hasHandle(handle) {
                    guard createIfMissing else {
                        throw TPMError(.invalidArgument, operation: operation, reason: "there is no key at \(hex(handle)); run `vmv tpm enroll`")
                    }
                    try createAttestationKey(kind, under: ek, at: handle, esys, operation)
                    created = true
                }
                let object = try esys.object(at: handle)
                let found = try esys.readPublic(object, operation)
                let publicArea = try Self.publicArea(found.publicArea, operation)
                if let reason = AttestationKey.disqualification(of: publicArea) {
                    throw TPMError(.unexpectedResponse, operation: operation, reason: "the key at \(hex(handle)) cannot be an AK: \(reason)")
                }
                // QN(AK) = nameAlg ‖ H(QN(parent) ‖ Name(AK)): the TPM's own record of the parent.
                guard let digest = publicArea.nameAlg.hash(ek.qualifiedName + found.name),
                      found.qualifiedName == Array(found.name.prefix(2)) + digest
                else {
                    throw TPMError(.unexpectedResponse, operation: operation,
                                   reason: "the key at \(hex(handle)) was not created under the \(parent)")
                }
                return AttestationKey(handle: handle, publicArea: publicArea, name: found.name, parent: parent, created: created)
            }
        }
    }

    /// Removes the AK at `handle` from the TPM (TPM2_EvictControl). Refuses to touch anything
    /// that is not an AK, such as an EK.
    public func removeAttestationKey(at handle: UInt32) throws(TPMError) {
        let operation = "remove AK at \(hex(handle))"
        try Self.checkPersistentHandle(handle, operation)
        try perform { esys throws(TPMError) in
            guard try esys.hasHandle(handle) else { return }
            let object = try esys.object(at: handle)
            let publicArea = try Self.publicArea(try esys.readPublic(object, operation).publicArea, operation)
            if let reason = AttestationKey.disqualification(of: publicArea) {
                throw TPMError(.invalidArgument, operation: operation, reason: "the key at \(hex(handle)) is not an AK (\(reason)); not removing it")
            }
            try esys.evictControl(object, persistentHandle: handle, operation)
            esys.forget(handle)
        }
    }

    /// TPM2_ActivateCredential: recovers the credential a verifier made for this TPM's `ek` and
    /// the AK at `akHandle` (see `CredentialChallenge` in Verifier). Fails if the challenge was
    /// made for another EK or another key's Name.
    public func activateCredential(
        credentialBlob: [UInt8], encryptedSecret: [UInt8], akHandle: UInt32 = AttestationKey.defaultHandle,
        ek: EndorsementKey.Kind = .rsa2048
    ) throws(TPMError) -> [UInt8] {
        try Self.checkPersistentHandle(akHandle, "ActivateCredential")
        return try perform { esys throws(TPMError) in
            let ak = try esys.object(at: akHandle)
            return try withEndorsementKey(ek, esys) { loaded throws(TPMError) in
                try esys.activateCredential(ak: ak, ek: loaded.handle, credentialBlob: credentialBlob,
                                            encryptedSecret: encryptedSecret)
            }
        }
    }

    /// The attempts a quote gets when PCRs in its selection keep changing.
    static let quoteAttempts = 5

    /// TPM2_Quote over `selection` with `qualifyingData` (at most 64 bytes: a nonce, or a
    /// digest binding a nonce and more), signed by the AK at `akHandle`; with the PCR values
    /// it covers. The values are read after the quote and checked against its pcrDigest; if a
    /// PCR moved in between, the quote is taken again.
    public func quote(
        _ selection: PCRSelection, qualifyingData: [UInt8], akHandle: UInt32 = AttestationKey.defaultHandle
    ) throws(TPMError) -> Quote {
        let operation = "quote \(selection)"
        guard qualifyingData.count <= TPMAlgorithm.maxDigestSize else {
            throw TPMError(.invalidArgument, operation: operation,
                           reason: "qualifying data of \(qualifyingData.count) bytes; at most \(TPMAlgorithm.maxDigestSize)")
        }
        try Self.checkPersistentHandle(akHandle, operation)
        return try perform { esys throws(TPMError) in
            try checkSelection(selection, esys, operation)
            let key = try esys.attestationKeyObject(at: akHandle)
            for attempt in 1...Self.quoteAttempts {
                let (attestBytes, signatureBytes) = try esys.quote(key, qualifyingData: qualifyingData, selection)
                let attest = try parse(attestBytes, as: TPMSAttest.self, operation)
                let signature = try parse(signatureBytes, as: TPMTSignature.self, operation)
                guard let info = attest.quote, attest.extraData == qualifyingData,
                      info.pcrSelect.isSameSelection(as: selection) else {
                    throw TPMError(.unexpectedResponse, operation: operation,
                                   reason: "the TPM returned an attestation that is not a quote of \(selection) with our qualifying data")
                }
                let values = try readPCRs(selection, esys)
                if let ordered = values.values(in: info.pcrSelect),
                   signature.hash.hash(ordered.flatMap { $0 }) == info.pcrDigest {
                    return Quote(attestBytes: attestBytes, attest: attest, signature: signature,
                                 selection: info.pcrSelect, pcrValues: values)
                }
                logger.debug("PCRs changed between quote and read; quoting again", metadata: ["attempt": "\(attempt)"])
            }
            throw TPMError(.pcrsKeptChanging, operation: operation,
                           reason: "the PCRs changed between the quote and the read \(Self.quoteAttempts) times in a row")
        }
    }

    // MARK: Helpers

    /// An EK loaded for one operation: `handle` is flushed afterwards unless persistent.
    struct LoadedEK {
        let handle: ESYS_TR
        let publicArea: TPMTPublic
        let name: [UInt8]
        let qualifiedName: [UInt8]
        let persistentHandle: UInt32?
    }

    func withEndorsementKey<T>(
        _ kind: EndorsementKey.Kind, _ esys: ESYSConnection, _ body: (LoadedEK) throws(TPMError) -> T
    ) throws(TPMError) -> T {
        let operation = "\(kind)"
        if try esys.hasHandle(kind.persistentHandle) {
            let object = try esys.object(at: kind.persistentHandle)
            let found = try esys.readPublic(object, operation)
            let publicArea = try Self.publicArea(found.publicArea, operation)
            if kind.matches(publicArea) {
                return try body(LoadedEK(handle: object, publicArea: publicArea, name: found.name,
                                         qualifiedName: found.qualifiedName, persistentHandle: kind.persistentHandle))
            }
            logger.warning("the key at the EK handle is not the TCG template's EK; using one created from the template",
                           metadata: ["handle": "\(hex(kind.persistentHandle))"])
        }
        let template = try Self.cPublic(kind.template, operation)
        let (object, _) = try esys.createPrimary(ESYS_TR_RH_ENDORSEMENT, template, operation)
        return try esys.withFlushing(object) { object throws(TPMError) in
            let found = try esys.readPublic(object, operation)
            return try body(LoadedEK(handle: object, publicArea: try Self.publicArea(found.publicArea, operation),
                                     name: found.name, qualifiedName: found.qualifiedName, persistentHandle: nil))
        }
    }

    /// Create under the EK, load, persist at `handle`, flush: three uses of the EK, each with
    /// a fresh PolicySecret(endorsement) session, and nothing left loaded on any path.
    private func createAttestationKey(
        _ kind: AttestationKey.Kind, under ek: LoadedEK, at handle: UInt32, _ esys: ESYSConnection, _ operation: String
    ) throws(TPMError) {
        let template = try Self.cPublic(kind.template, operation)
        let (privatePart, publicPart) = try esys.withFlushing(try esys.endorsementPolicySession()) { session throws(TPMError) in
            try esys.create(parent: ek.handle, session: session, template, operation)
        }
        let loaded = try esys.withFlushing(try esys.endorsementPolicySession()) { session throws(TPMError) in
            try esys.load(parent: ek.handle, session: session, privatePart, publicPart, operation)
        }
        try esys.withFlushing(loaded) { loaded throws(TPMError) in
            try esys.evictControl(loaded, persistentHandle: handle, operation)
        }
        logger.info("created an AK", metadata: ["handle": "\(hex(handle))", "kind": "\(kind)", "parent": "\(ek.publicArea.type.name) EK"])
    }

    /// The EK certificate in `index`, or nil when the TPM has no such NV index.
    private func certificate(at index: UInt32, _ esys: ESYSConnection) throws(TPMError) -> [UInt8]? {
        guard try esys.hasHandle(index) else { return nil }
        let chunk = Int(try esys.properties(from: CTSS2_PT_NV_BUFFER_MAX, count: 1)[CTSS2_PT_NV_BUFFER_MAX] ?? 512)
        return NVCertificate.trimmingPadding(try esys.nvRead(index: index, chunk: max(64, min(chunk, 1024))))
    }

    /// Persistent objects the owner can create live in 0x81000000–0x817FFFFF.
    static func checkPersistentHandle(_ handle: UInt32, _ operation: String) throws(TPMError) {
        guard (0x8100_0000...0x817F_FFFF).contains(handle) else {
            throw TPMError(.invalidArgument, operation: operation,
                           reason: "\(hex(handle)) is not a persistent handle in the owner's range 0x81000000–0x817fffff")
        }
    }

    static func publicArea(_ c: TPM2B_PUBLIC, _ operation: String) throws(TPMError) -> TPMTPublic {
        let bytes = try marshal(c, Tss2_MU_TPM2B_PUBLIC_Marshal, "\(operation): TPM2B_PUBLIC")
        return try parse(bytes, as: TPM2BPublic.self, operation).publicArea
    }

    static func cPublic(_ publicArea: TPMTPublic, _ operation: String) throws(TPMError) -> TPM2B_PUBLIC {
        try unmarshal(TPM2BPublic(publicArea).wireBytes, into: TPM2B_PUBLIC(), Tss2_MU_TPM2B_PUBLIC_Unmarshal,
                      "\(operation): TPM2B_PUBLIC")
    }
}

/// `0x81010003`
func hex(_ handle: UInt32) -> String {
    "0x" + String(String(handle, radix: 16)).leftPadded(8)
}
