import Crypto
import TPMWire

/// RSAES-OAEP encryption with a label (RFC 8017, 7.1.1), for MakeCredential.
///
/// The TPM encrypts a credential's seed to an RSA EK with OAEP, the EK's nameAlg, and the
/// label "IDENTITY\0". swift-crypto's `_RSA.Encryption` offers OAEP only with an empty label,
/// so the encoding (EME-OAEP with MGF1) is done here, and the public-key operation
/// m^e mod n by `RSAPublicKeyOperation` below. Only the public operation is needed: the
/// verifier never holds the EK's private key.
enum RSAOAEP {
    enum Failure: Error, Equatable {
        case messageTooLong(Int, max: Int)
        case unsupportedHash(TPMAlgorithm)
        case invalidKey(String)
    }

    static func encrypt(
        _ message: [UInt8], modulus: [UInt8], exponent: UInt32, hash: TPMAlgorithm, label: [UInt8],
        seed: [UInt8]? = nil
    ) throws(Failure) -> [UInt8] {
        guard let hLen = hash.digestSize, let lHash = hash.hash(label) else { throw .unsupportedHash(hash) }
        let key = try RSAPublicKeyOperation(modulus: modulus, exponent: exponent)
        let k = key.byteCount
        guard message.count <= k - 2 * hLen - 2 else { throw .messageTooLong(message.count, max: max(0, k - 2 * hLen - 2)) }
        // DB = lHash ‖ PS ‖ 01 ‖ M
        var db = lHash + [UInt8](repeating: 0, count: k - message.count - 2 * hLen - 2) + [0x01] + message
        let seed = seed ?? randomBytes(hLen)
        let dbMask = mgf1(hash, seed: seed, length: k - hLen - 1)
        for i in db.indices { db[i] ^= dbMask[i] }
        var maskedSeed = seed
        let seedMask = mgf1(hash, seed: db, length: hLen)
        for i in maskedSeed.indices { maskedSeed[i] ^= seedMask[i] }
        let encoded = [0x00] + maskedSeed + db
        return key.apply(encoded)
    }

    /// MGF1 (RFC 8017, B.2.1): H(seed ‖ counter) blocks, counter from 0.
    static func mgf1(_ hash: TPMAlgorithm, seed: [UInt8], length: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(length)
        var counter: UInt32 = 0
        while out.count < length {
            out += hash.hash(seed + TPMKDF.bigEndian32(counter)) ?? []
            counter += 1
        }
        return Array(out.prefix(length))
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}

/// x^e mod n for an RSA public key, with Montgomery multiplication over 64-bit limbs.
///
/// The message being encrypted holds a secret (the credential seed), so the arithmetic has no
/// branch or memory access that depends on it: the final subtraction of each Montgomery
/// product is selected with a mask. Branches depend only on the public exponent.
struct RSAPublicKeyOperation {
    /// Little-endian limbs of n.
    private let n: [UInt64]
    private let exponent: UInt32
    /// -n⁻¹ mod 2⁶⁴.
    private let nPrime: UInt64
    /// R² mod n, R = 2^(64·limbs).
    private let rSquared: [UInt64]
    let byteCount: Int

    init(modulus: [UInt8], exponent: UInt32) throws(RSAOAEP.Failure) {
        let trimmed = Array(modulus.drop(while: { $0 == 0 }))
        guard trimmed.count >= 128, trimmed.count <= 1024 else {
            throw .invalidKey("an RSA modulus of \(trimmed.count * 8) bits is outside 1024–8192")
        }
        guard let last = trimmed.last, last & 1 == 1 else { throw .invalidKey("the RSA modulus is even") }
        guard exponent >= 3, exponent & 1 == 1 else { throw .invalidKey("the RSA exponent \(exponent) is not an odd number ≥ 3") }
        byteCount = trimmed.count
        n = Self.limbs(trimmed, count: (trimmed.count + 7) / 8)
        self.exponent = exponent
        // Newton's iteration doubles the correct low bits each step: 1 → 64 in six steps.
        var inverse: UInt64 = 1
        for _ in 0..<6 { inverse = inverse &* (2 &- n[0] &* inverse) }
        nPrime = 0 &- inverse
        // R² mod n by doubling 1 modulo n, 2·64·limbs times.
        var x = [UInt64](repeating: 0, count: n.count)
        x[0] = 1
        for _ in 0..<(2 * 64 * n.count) { x = Self.doubleMod(x, n) }
        rSquared = x
    }

    /// `input` (big-endian, at most `byteCount` bytes, less than n) to the power e mod n, as
    /// `byteCount` big-endian bytes.
    func apply(_ input: [UInt8]) -> [UInt8] {
        let x = Self.limbs(input, count: n.count)
        let xMont = multiply(x, rSquared)
        var one = [UInt64](repeating: 0, count: n.count)
        one[0] = 1
        var result = multiply(one, rSquared)   // 1 in Montgomery form
        for bit in (0..<(32 - exponent.leadingZeroBitCount)).reversed() {
            result = multiply(result, result)
            if exponent >> UInt32(bit) & 1 == 1 { result = multiply(result, xMont) }
        }
        return Self.bytes(multiply(result, one), count: byteCount)
    }

    /// Montgomery product a·b·R⁻¹ mod n (CIOS), for a, b < n.
    private func multiply(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] {
        let s = n.count
        var t = [UInt64](repeating: 0, count: s + 2)
        for i in 0..<s {
            var carry: UInt64 = 0
            for j in 0..<s { (carry, t[j]) = Self.multiplyAdd(a[j], b[i], t[j], carry) }
            let (sum, overflow) = t[s].addingReportingOverflow(carry)
            t[s] = sum
            t[s + 1] = overflow ? 1 : 0
            let m = t[0] &* nPrime
            (carry, _) = Self.multiplyAdd(m, n[0], t[0], 0)
            for j in 1..<s { (carry, t[j - 1]) = Self.multiplyAdd(m, n[j], t[j], carry) }
            let (top, topOverflow) = t[s].addingReportingOverflow(carry)
            t[s - 1] = top
            t[s] = t[s + 1] &+ (topOverflow ? 1 : 0)
        }
        // t < 2n: subtract n, and keep the difference unless that borrowed beyond t's top limb.
        var difference = [UInt64](repeating: 0, count: s)
        var borrow: UInt64 = 0
        for j in 0..<s {
            let (d1, b1) = t[j].subtractingReportingOverflow(n[j])
            let (d2, b2) = d1.subtractingReportingOverflow(borrow)
            difference[j] = d2
            borrow = (b1 ? 1 : 0) | (b2 ? 1 : 0)
        }
        let keepT = 0 &- (borrow & ~t[s] & 1)   // all ones when t < n
        return (0..<s).map { (t[$0] & keepT) | (difference[$0] & ~keepT) }
    }

    /// a·b + c + d as (high, low); cannot overflow 128 bits.
    @inline(__always)
    private static func multiplyAdd(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) -> (UInt64, UInt64) {
        let (high, low) = a.multipliedFullWidth(by: b)
        let (low1, o1) = low.addingReportingOverflow(c)
        let (low2, o2) = low1.addingReportingOverflow(d)
        return (high &+ (o1 ? 1 : 0) &+ (o2 ? 1 : 0), low2)
    }

    /// 2x mod n for x < n (used only on public values while setting up).
    private static func doubleMod(_ x: [UInt64], _ n: [UInt64]) -> [UInt64] {
        var doubled = [UInt64](repeating: 0, count: x.count)
        var carry: UInt64 = 0
        for i in x.indices {
            doubled[i] = x[i] << 1 | carry
            carry = x[i] >> 63
        }
        var difference = [UInt64](repeating: 0, count: x.count)
        var borrow: UInt64 = 0
        for i in x.indices {
            let (d1, b1) = doubled[i].subtractingReportingOverflow(n[i])
            let (d2, b2) = d1.subtractingReportingOverflow(borrow)
            difference[i] = d2
            borrow = (b1 ? 1 : 0) | (b2 ? 1 : 0)
        }
        return carry == 1 || borrow == 0 ? difference : doubled
    }

    private static func limbs(_ bytes: [UInt8], count: Int) -> [UInt64] {
        var limbs = [UInt64](repeating: 0, count: count)
        for (i, byte) in bytes.reversed().enumerated() where i < count * 8 {
            limbs[i / 8] |= UInt64(byte) << UInt64(8 * (i % 8))
        }
        return limbs
    }

    private static func bytes(_ limbs: [UInt64], count: Int) -> [UInt8] {
        (0..<count).reversed().map { i in UInt8(truncatingIfNeeded: limbs[i / 8] >> UInt64(8 * (i % 8))) }
    }
}
