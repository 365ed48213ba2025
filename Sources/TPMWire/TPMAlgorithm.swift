/// A TPM_ALG_ID. Known identifiers have names; anything else stays representable so that a
/// parser can say exactly which identifier it refused.
public struct TPMAlgorithm: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    public static let rsa = TPMAlgorithm(0x0001)
    public static let sha1 = TPMAlgorithm(0x0004)
    public static let hmac = TPMAlgorithm(0x0005)
    public static let mgf1 = TPMAlgorithm(0x0007)
    public static let aes = TPMAlgorithm(0x0006)
    public static let keyedHash = TPMAlgorithm(0x0008)
    public static let xor = TPMAlgorithm(0x000A)
    public static let sha256 = TPMAlgorithm(0x000B)
    public static let sha384 = TPMAlgorithm(0x000C)
    public static let sha512 = TPMAlgorithm(0x000D)
    public static let null = TPMAlgorithm(0x0010)
    public static let sm3_256 = TPMAlgorithm(0x0012)
    public static let sm4 = TPMAlgorithm(0x0013)
    public static let rsassa = TPMAlgorithm(0x0014)
    public static let rsaes = TPMAlgorithm(0x0015)
    public static let rsapss = TPMAlgorithm(0x0016)
    public static let oaep = TPMAlgorithm(0x0017)
    public static let ecdsa = TPMAlgorithm(0x0018)
    public static let ecdh = TPMAlgorithm(0x0019)
    public static let ecdaa = TPMAlgorithm(0x001A)
    public static let sm2 = TPMAlgorithm(0x001B)
    public static let ecschnorr = TPMAlgorithm(0x001C)
    public static let ecmqv = TPMAlgorithm(0x001D)
    public static let kdf1_sp800_56a = TPMAlgorithm(0x0020)
    public static let kdf2 = TPMAlgorithm(0x0021)
    public static let kdf1_sp800_108 = TPMAlgorithm(0x0022)
    public static let ecc = TPMAlgorithm(0x0023)
    public static let symcipher = TPMAlgorithm(0x0025)
    public static let camellia = TPMAlgorithm(0x0026)
    public static let sha3_256 = TPMAlgorithm(0x0027)
    public static let sha3_384 = TPMAlgorithm(0x0028)
    public static let sha3_512 = TPMAlgorithm(0x0029)
    public static let ctr = TPMAlgorithm(0x0040)
    public static let ofb = TPMAlgorithm(0x0041)
    public static let cbc = TPMAlgorithm(0x0042)
    public static let cfb = TPMAlgorithm(0x0043)
    public static let ecb = TPMAlgorithm(0x0044)

    static let names: [UInt16: String] = [
        0x0001: "rsa", 0x0004: "sha1", 0x0005: "hmac", 0x0006: "aes", 0x0007: "mgf1", 0x0008: "keyedhash",
        0x000A: "xor", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512", 0x0010: "null",
        0x0012: "sm3_256", 0x0013: "sm4", 0x0014: "rsassa", 0x0015: "rsaes", 0x0016: "rsapss",
        0x0017: "oaep", 0x0018: "ecdsa", 0x0019: "ecdh", 0x001A: "ecdaa", 0x001B: "sm2",
        0x001C: "ecschnorr", 0x001D: "ecmqv", 0x0020: "kdf1_sp800_56a", 0x0021: "kdf2",
        0x0022: "kdf1_sp800_108", 0x0023: "ecc", 0x0025: "symcipher", 0x0026: "camellia",
        0x0027: "sha3_256", 0x0028: "sha3_384", 0x0029: "sha3_512", 0x0040: "ctr", 0x0041: "ofb",
        0x0042: "cbc", 0x0043: "cfb", 0x0044: "ecb",
    ]

    /// The name tpm2-tools uses (`sha256`), or the hex identifier.
    public var name: String {
        Self.names[rawValue] ?? "0x" + String(rawValue, radix: 16, uppercase: false).leftPadded(to: 4)
    }

    public var description: String { name }

    /// Parses a tpm2-tools algorithm name (`sha256`) or a numeric identifier (`0xb`, `11`).
    public init?(name: String) {
        let lower = name.lowercased()
        if let (raw, _) = Self.names.first(where: { $0.value == lower }) {
            self.init(raw)
        } else if lower.hasPrefix("0x"), let v = UInt16(lower.dropFirst(2), radix: 16) {
            self.init(v)
        } else if let v = UInt16(lower) {
            self.init(v)
        } else {
            return nil
        }
    }

    /// Digest size in bytes for hash algorithms; nil for everything else.
    public var digestSize: Int? {
        switch self {
        case .sha1: 20
        case .sha256, .sm3_256, .sha3_256: 32
        case .sha384, .sha3_384: 48
        case .sha512, .sha3_512: 64
        default: nil
        }
    }

    public var isHash: Bool { digestSize != nil }

    /// The largest digest any known hash produces: the cap for TPM2B_DIGEST fields.
    public static let maxDigestSize = 64

    public static func < (a: TPMAlgorithm, b: TPMAlgorithm) -> Bool { a.rawValue < b.rawValue }

    /// Reads a TPMI_ALG_HASH: a known hash algorithm, else a precise error.
    public static func readHash(_ reader: inout ByteReader, _ field: @autoclosure () -> String) throws(WireError) -> TPMAlgorithm {
        let alg = TPMAlgorithm(try reader.readUInt16(field()))
        guard alg.isHash else {
            throw WireError(.unknownAlgorithm, "\(field()): \(alg.name) is not a hash algorithm this verifier knows")
        }
        return alg
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
