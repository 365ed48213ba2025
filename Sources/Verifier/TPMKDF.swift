import Crypto
import TPMWire

/// The TPM's key derivation functions (TPM 2.0 Part 1, 11.4.10), for the verifier's half of
/// credential activation.
enum TPMKDF {
    /// KDFa: SP 800-108 counter mode with HMAC. Each block is
    /// HMAC(key, counter ‖ label ‖ 00 ‖ contextU ‖ contextV ‖ bits), counter from 1.
    static func kdfa(
        _ hash: TPMAlgorithm, key: [UInt8], label: String, contextU: [UInt8], contextV: [UInt8], bits: Int
    ) -> [UInt8]? {
        derive(hash, bits: bits) { counter in
            hmac(hash, key: key, counter + label.labelBytes + contextU + contextV + bigEndian32(UInt32(bits)))
        }
    }

    /// KDFe: the SP 800-56A concatenation KDF. Each block is
    /// H(counter ‖ Z ‖ label ‖ 00 ‖ partyUInfo ‖ partyVInfo), counter from 1.
    static func kdfe(
        _ hash: TPMAlgorithm, z: [UInt8], label: String, partyU: [UInt8], partyV: [UInt8], bits: Int
    ) -> [UInt8]? {
        derive(hash, bits: bits) { counter in
            hash.hash(counter + z + label.labelBytes + partyU + partyV)
        }
    }

    /// HMAC with a TPM hash algorithm; nil for one swift-crypto does not implement.
    static func hmac(_ hash: TPMAlgorithm, key: [UInt8], _ data: [UInt8]) -> [UInt8]? {
        let key = SymmetricKey(data: key)
        switch hash {
        case .sha1: return Array(HMAC<Insecure.SHA1>.authenticationCode(for: data, using: key))
        case .sha256: return Array(HMAC<SHA256>.authenticationCode(for: data, using: key))
        case .sha384: return Array(HMAC<SHA384>.authenticationCode(for: data, using: key))
        case .sha512: return Array(HMAC<SHA512>.authenticationCode(for: data, using: key))
        default: return nil
        }
    }

    private static func derive(_ hash: TPMAlgorithm, bits: Int, _ block: ([UInt8]) -> [UInt8]?) -> [UInt8]? {
        guard bits > 0, bits % 8 == 0, hash.isComputableHash else { return nil }
        let count = bits / 8
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var counter: UInt32 = 1
        while out.count < count {
            guard let next = block(bigEndian32(counter)) else { return nil }
            out += next
            counter += 1
        }
        return Array(out.prefix(count))
    }

    static func bigEndian32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
    }
}

extension String {
    /// A TPM KDF label: its bytes and the terminating zero the specification includes.
    var labelBytes: [UInt8] { Array(utf8) + [0] }
}
