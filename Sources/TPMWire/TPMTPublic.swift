/// TPMA_OBJECT: an object's attributes. Reserved bits are refused when parsing, as a TPM
/// refuses them (TPM_RC_RESERVED_BITS).
public struct TPMAObject: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let fixedTPM = TPMAObject(rawValue: 1 << 1)
    public static let stClear = TPMAObject(rawValue: 1 << 2)
    public static let fixedParent = TPMAObject(rawValue: 1 << 4)
    public static let sensitiveDataOrigin = TPMAObject(rawValue: 1 << 5)
    public static let userWithAuth = TPMAObject(rawValue: 1 << 6)
    public static let adminWithPolicy = TPMAObject(rawValue: 1 << 7)
    public static let noDA = TPMAObject(rawValue: 1 << 10)
    public static let encryptedDuplication = TPMAObject(rawValue: 1 << 11)
    public static let restricted = TPMAObject(rawValue: 1 << 16)
    public static let decrypt = TPMAObject(rawValue: 1 << 17)
    /// TPMA_OBJECT_SIGN_ENCRYPT.
    public static let sign = TPMAObject(rawValue: 1 << 18)
    public static let x509sign = TPMAObject(rawValue: 1 << 19)

    /// Every defined attribute with the name tpm2-tools prints for it, in bit order.
    public static let named: [(TPMAObject, String)] = [
        (.fixedTPM, "fixedtpm"), (.stClear, "stclear"), (.fixedParent, "fixedparent"),
        (.sensitiveDataOrigin, "sensitivedataorigin"), (.userWithAuth, "userwithauth"),
        (.adminWithPolicy, "adminwithpolicy"), (.noDA, "noda"), (.encryptedDuplication, "encryptedduplication"),
        (.restricted, "restricted"), (.decrypt, "decrypt"), (.sign, "sign"), (.x509sign, "x509sign"),
    ]

    /// The bits the specification defines; the rest are reserved.
    public static let defined = TPMAObject(named.map(\.0))

    /// What an AK must be: a restricted signing key the TPM generated and that cannot leave
    /// it (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin). `restricted` is what
    /// stops it signing a digest that starts like a TPMS_ATTEST, i.e. a forged quote.
    public static let attestationKey: TPMAObject = [.restricted, .sign, .fixedTPM, .fixedParent, .sensitiveDataOrigin]

    /// The attribute names, tpm2-tools style: `fixedtpm|fixedparent|…`.
    public var names: [String] { Self.named.filter { contains($0.0) }.map(\.1) }

    public var description: String {
        let extra = rawValue & ~Self.defined.rawValue
        return (names + (extra == 0 ? [] : ["0x" + String(extra, radix: 16)])).joined(separator: "|")
    }
}

/// TPM_ECC_CURVE.
public struct TPMECCCurve: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let nistP192 = TPMECCCurve(rawValue: 0x0001)
    public static let nistP224 = TPMECCCurve(rawValue: 0x0002)
    public static let nistP256 = TPMECCCurve(rawValue: 0x0003)
    public static let nistP384 = TPMECCCurve(rawValue: 0x0004)
    public static let nistP521 = TPMECCCurve(rawValue: 0x0005)
    public static let bnP256 = TPMECCCurve(rawValue: 0x0010)
    public static let bnP638 = TPMECCCurve(rawValue: 0x0011)
    public static let sm2P256 = TPMECCCurve(rawValue: 0x0020)

    static let known: [UInt16: (name: String, bytes: Int)] = [
        0x0001: ("nist_p192", 24), 0x0002: ("nist_p224", 28), 0x0003: ("nist_p256", 32),
        0x0004: ("nist_p384", 48), 0x0005: ("nist_p521", 66), 0x0010: ("bn_p256", 32),
        0x0011: ("bn_p638", 80), 0x0020: ("sm2_p256", 32),
    ]

    /// Bytes in one coordinate; nil for an unknown curve.
    public var coordinateSize: Int? { Self.known[rawValue]?.bytes }

    public var description: String { Self.known[rawValue]?.name ?? "0x" + String(rawValue, radix: 16).leftPadded(to: 4) }
}

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key; NULL for a signing key.
public struct TPMTSymDefObject: Hashable, Sendable, TPMWireCodable {
    public var algorithm: TPMAlgorithm
    /// Key size and mode; nil when `algorithm` is NULL.
    public var keyBits: UInt16?
    public var mode: TPMAlgorithm?

    public static let null = TPMTSymDefObject(algorithm: .null, keyBits: nil, mode: nil)

    public init(algorithm: TPMAlgorithm, keyBits: UInt16?, mode: TPMAlgorithm?) {
        self.algorithm = algorithm
        self.keyBits = keyBits
        self.mode = mode
    }

    static let modes: Set<TPMAlgorithm> = [.ctr, .ofb, .cbc, .cfb, .ecb, .null]

    public init(from reader: inout ByteReader) throws(WireError) {
        algorithm = TPMAlgorithm(try reader.readUInt16("TPMT_SYM_DEF_OBJECT.algorithm"))
        switch algorithm {
        case .null:
            keyBits = nil
            mode = nil
        case .aes, .sm4, .camellia:
            keyBits = try reader.readUInt16("TPMT_SYM_DEF_OBJECT.keyBits")
            let m = TPMAlgorithm(try reader.readUInt16("TPMT_SYM_DEF_OBJECT.mode"))
            guard Self.modes.contains(m) else {
                throw WireError(.unknownAlgorithm, "TPMT_SYM_DEF_OBJECT.mode: \(m.name) is not a block cipher mode")
            }
            mode = m
        default:
            throw WireError(.unknownAlgorithm, "TPMT_SYM_DEF_OBJECT.algorithm: \(algorithm.name) is not a symmetric object algorithm (aes, sm4, camellia, null)")
        }
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(algorithm.rawValue)
        if let keyBits, let mode {
            writer.write(keyBits)
            writer.write(mode.rawValue)
        }
    }
}

/// TPMT_RSA_SCHEME, TPMT_ECC_SCHEME and TPMT_KDF_SCHEME: a scheme and, for most, its hash
/// (ECDAA adds a commit count).
public struct TPMTScheme: Hashable, Sendable {
    public var scheme: TPMAlgorithm
    public var hash: TPMAlgorithm?
    /// TPMS_SCHEME_ECDAA.count.
    public var count: UInt16?

    public static let null = TPMTScheme(scheme: .null)

    public init(scheme: TPMAlgorithm, hash: TPMAlgorithm? = nil, count: UInt16? = nil) {
        self.scheme = scheme
        self.hash = hash
        self.count = count
    }

    /// Which schemes a field allows and which of them carry a hash.
    struct Kind {
        let structure: String
        let withHash: Set<TPMAlgorithm>
        let withoutHash: Set<TPMAlgorithm>
        let withCount: Set<TPMAlgorithm>
    }

    static let rsa = Kind(structure: "TPMT_RSA_SCHEME", withHash: [.rsassa, .rsapss, .oaep], withoutHash: [.rsaes, .null], withCount: [])
    static let ecc = Kind(structure: "TPMT_ECC_SCHEME", withHash: [.ecdsa, .ecdh, .sm2, .ecschnorr, .ecmqv, .ecdaa],
                          withoutHash: [.null], withCount: [.ecdaa])
    static let kdf = Kind(structure: "TPMT_KDF_SCHEME", withHash: [.mgf1, .kdf1_sp800_56a, .kdf2, .kdf1_sp800_108],
                          withoutHash: [.null], withCount: [])

    init(from reader: inout ByteReader, _ kind: Kind) throws(WireError) {
        scheme = TPMAlgorithm(try reader.readUInt16("\(kind.structure).scheme"))
        if kind.withHash.contains(scheme) {
            hash = try TPMAlgorithm.readHash(&reader, "\(kind.structure).details.hashAlg")
            count = kind.withCount.contains(scheme) ? try reader.readUInt16("\(kind.structure).details.count") : nil
        } else if kind.withoutHash.contains(scheme) {
            hash = nil
            count = nil
        } else {
            let allowed = (kind.withHash.union(kind.withoutHash)).sorted().map(\.name).joined(separator: ", ")
            throw WireError(.unknownAlgorithm, "\(kind.structure).scheme: \(scheme.name) is not one of \(allowed)")
        }
    }

    func write(to writer: inout ByteWriter) {
        writer.write(scheme.rawValue)
        if let hash { writer.write(hash.rawValue) }
        if let count { writer.write(count) }
    }
}

/// TPMS_RSA_PARMS.
public struct TPMSRSAParms: Hashable, Sendable {
    public var symmetric: TPMTSymDefObject
    public var scheme: TPMTScheme
    public var keyBits: UInt16
    /// 0 means the default, 65537.
    public var exponent: UInt32

    public init(symmetric: TPMTSymDefObject = .null, scheme: TPMTScheme, keyBits: UInt16, exponent: UInt32 = 0) {
        self.symmetric = symmetric
        self.scheme = scheme
        self.keyBits = keyBits
        self.exponent = exponent
    }

    /// The public exponent with the TPM's default applied.
    public var effectiveExponent: UInt32 { exponent == 0 ? 65537 : exponent }
}

/// TPMS_ECC_PARMS.
public struct TPMSECCParms: Hashable, Sendable {
    public var symmetric: TPMTSymDefObject
    public var scheme: TPMTScheme
    public var curve: TPMECCCurve
    public var kdf: TPMTScheme

    public init(symmetric: TPMTSymDefObject = .null, scheme: TPMTScheme, curve: TPMECCCurve, kdf: TPMTScheme = .null) {
        self.symmetric = symmetric
        self.scheme = scheme
        self.curve = curve
        self.kdf = kdf
    }
}

/// TPMT_PUBLIC: the public area of an RSA or ECC key (keyed-hash and symmetric objects are
/// refused: an attestation key is never one).
public struct TPMTPublic: Hashable, Sendable, TPMWireCodable {
    /// TPMU_PUBLIC_PARMS with TPMU_PUBLIC_ID, selected by the object type.
    public enum Key: Hashable, Sendable {
        /// TPM_ALG_RSA: parameters and the big-endian modulus.
        case rsa(TPMSRSAParms, modulus: [UInt8])
        /// TPM_ALG_ECC: parameters and the point's big-endian coordinates.
        case ecc(TPMSECCParms, x: [UInt8], y: [UInt8])

        public var type: TPMAlgorithm {
            switch self {
            case .rsa: .rsa
            case .ecc: .ecc
            }
        }

        /// The signing scheme the key is restricted to (NULL: the caller chooses).
        public var scheme: TPMTScheme {
            switch self {
            case .rsa(let p, _): p.scheme
            case .ecc(let p, _, _): p.scheme
            }
        }
    }

    public var nameAlg: TPMAlgorithm
    public var objectAttributes: TPMAObject
    public var authPolicy: [UInt8]
    public var key: Key

    public var type: TPMAlgorithm { key.type }

    public init(nameAlg: TPMAlgorithm, objectAttributes: TPMAObject, authPolicy: [UInt8] = [], key: Key) {
        self.nameAlg = nameAlg
        self.objectAttributes = objectAttributes
        self.authPolicy = authPolicy
        self.key = key
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let type = TPMAlgorithm(try reader.readUInt16("TPMT_PUBLIC.type"))
        guard type == .rsa || type == .ecc else {
            throw WireError(.unknownAlgorithm, "TPMT_PUBLIC.type: \(type.name) is not a supported key type (rsa, ecc)")
        }
        nameAlg = try TPMAlgorithm.readHash(&reader, "TPMT_PUBLIC.nameAlg")
        let attributes = TPMAObject(rawValue: try reader.readUInt32("TPMT_PUBLIC.objectAttributes"))
        let reserved = attributes.rawValue & ~TPMAObject.defined.rawValue
        guard reserved == 0 else {
            throw WireError(.invalidValue, "TPMT_PUBLIC.objectAttributes: reserved bits 0x\(String(reserved, radix: 16)) are set")
        }
        objectAttributes = attributes
        authPolicy = try reader.read(.digest, "TPMT_PUBLIC.authPolicy")
        if type == .rsa {
            let symmetric = try TPMTSymDefObject(from: &reader)
            let scheme = try TPMTScheme(from: &reader, TPMTScheme.rsa)
            let keyBits = try reader.readUInt16("TPMS_RSA_PARMS.keyBits")
            let exponent = try reader.readUInt32("TPMS_RSA_PARMS.exponent")
            let modulus = try reader.read(.publicKeyRSA, "TPMT_PUBLIC.unique.rsa")
            key = .rsa(TPMSRSAParms(symmetric: symmetric, scheme: scheme, keyBits: keyBits, exponent: exponent), modulus: modulus)
        } else {
            let symmetric = try TPMTSymDefObject(from: &reader)
            let scheme = try TPMTScheme(from: &reader, TPMTScheme.ecc)
            let curve = TPMECCCurve(rawValue: try reader.readUInt16("TPMS_ECC_PARMS.curveID"))
            guard curve.coordinateSize != nil else {
                throw WireError(.unknownAlgorithm, "TPMS_ECC_PARMS.curveID: \(curve) is not a known ECC curve")
            }
            let kdf = try TPMTScheme(from: &reader, TPMTScheme.kdf)
            let x = try reader.read(.eccParameter, "TPMT_PUBLIC.unique.ecc.x")
            let y = try reader.read(.eccParameter, "TPMT_PUBLIC.unique.ecc.y")
            key = .ecc(TPMSECCParms(symmetric: symmetric, scheme: scheme, curve: curve, kdf: kdf), x: x, y: y)
        }
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(type.rawValue)
        writer.write(nameAlg.rawValue)
        writer.write(objectAttributes.rawValue)
        writer.write(.digest, authPolicy)
        switch key {
        case .rsa(let p, let modulus):
            p.symmetric.write(to: &writer)
            p.scheme.write(to: &writer)
            writer.write(p.keyBits)
            writer.write(p.exponent)
            writer.write(.publicKeyRSA, modulus)
        case .ecc(let p, let x, let y):
            p.symmetric.write(to: &writer)
            p.scheme.write(to: &writer)
            writer.write(p.curve.rawValue)
            p.kdf.write(to: &writer)
            writer.write(.eccParameter, x)
            writer.write(.eccParameter, y)
        }
    }

    /// The TPM Name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC). Nil only when nameAlg is a hash
    /// swift-crypto does not implement (SM3, SHA-3).
    public var name: [UInt8]? {
        guard let digest = nameAlg.hash(wireBytes) else { return nil }
        var w = ByteWriter(capacity: 2 + digest.count)
        w.write(nameAlg.rawValue)
        w.write(bytes: digest)
        return w.bytes
    }
}

/// TPM2B_PUBLIC: a TPMT_PUBLIC behind its size, as `tpm2_createak -u` and
/// Tss2_MU_TPM2B_PUBLIC_Marshal write it. The size must match the structure exactly.
public struct TPM2BPublic: Hashable, Sendable, TPMWireCodable {
    public var publicArea: TPMTPublic

    public init(_ publicArea: TPMTPublic) {
        self.publicArea = publicArea
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let size = Int(try reader.readUInt16("TPM2B_PUBLIC.size"))
        guard size <= reader.remaining else {
            throw WireError(.sizeTooLarge, "TPM2B_PUBLIC.size: \(size) exceeds the \(reader.remaining) bytes left")
        }
        var inner = try reader.subReader(size, "TPM2B_PUBLIC.publicArea")
        publicArea = try TPMTPublic(from: &inner)
        try inner.expectEnd("TPM2B_PUBLIC.publicArea (size \(size))")
    }

    public func write(to writer: inout ByteWriter) {
        let inner = publicArea.wireBytes
        writer.writeSized(inner)
    }
}
