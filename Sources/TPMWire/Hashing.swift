import Crypto

extension TPMAlgorithm {
    /// The digest of `data` with this hash algorithm, or nil when it is not a hash that
    /// swift-crypto implements (SM3, SHA-3). The one hashing entry point of TPMWire: TPM Names,
    /// PCR digests and PCR extends all go through it (or its in-place form below).
    public func hash(_ data: [UInt8]) -> [UInt8]? {
        guard isComputableHash, let size = digestSize else { return nil }
        var out = [UInt8](repeating: 0, count: size)
        data.withUnsafeBytes { d in out.withUnsafeMutableBytes { hash(d, nil, into: $0) } }
        return out
    }

    /// True when `hash(_:)` can compute this algorithm: sha1, sha256, sha384, sha512.
    /// SHA-1 is here because PCR banks and event logs still use it, never for signatures.
    public var isComputableHash: Bool {
        switch self {
        case .sha1, .sha256, .sha384, .sha512: true
        default: false
        }
    }

    /// A PCR extend: H(pcr ‖ digest). Nil when this algorithm cannot be computed or a size is wrong.
    public func extend(_ pcr: [UInt8], with digest: [UInt8]) -> [UInt8]? {
        guard isComputableHash, let size = digestSize, pcr.count == size, digest.count == size else { return nil }
        var out = pcr
        digest.withUnsafeBytes { d in out.withUnsafeMutableBytes { extend($0, with: d) } }
        return out
    }

    /// Extends `pcr` in place with `digest` (both the digest size): the event-log replay calls
    /// this once per event and bank, so it allocates nothing beyond swift-crypto's hasher.
    @inline(__always)
    func extend(_ pcr: UnsafeMutableRawBufferPointer, with digest: UnsafeRawBufferPointer) {
        hash(UnsafeRawBufferPointer(pcr), digest, into: pcr)
    }

    /// H(first ‖ second) into `out`, which must be the digest size. Does nothing for an
    /// algorithm that is not `isComputableHash` (callers check first).
    @inline(__always)
    func hash(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer?, into out: UnsafeMutableRawBufferPointer) {
        switch self {
        case .sha1: Self.hash(Insecure.SHA1.self, first, second, into: out)
        case .sha256: Self.hash(SHA256.self, first, second, into: out)
        case .sha384: Self.hash(SHA384.self, first, second, into: out)
        case .sha512: Self.hash(SHA512.self, first, second, into: out)
        default: break
        }
    }

    @inline(__always)
    private static func hash<H: HashFunction>(
        _: H.Type, _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer?,
        into out: UnsafeMutableRawBufferPointer
    ) {
        var hasher = H()
        hasher.update(bufferPointer: first)
        if let second { hasher.update(bufferPointer: second) }
        // Reads `first` before writing `out`: the two may be the same PCR buffer.
        hasher.finalize().withUnsafeBytes { d in
            if d.count == out.count { out.copyMemory(from: d) }
        }
    }
}
