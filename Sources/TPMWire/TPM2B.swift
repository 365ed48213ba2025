/// The sized buffers (TPM2B_*) that TPM structures carry, with the capacity tpm2-tss gives each.
/// A size above its capacity is an inflated size and is refused before any byte is read, so a
/// parser never allocates more than the structure could hold.
public enum TPM2B: Sendable, Hashable, CustomStringConvertible {
    /// TPM2B_DIGEST (also TPM2B_NONCE, TPM2B_AUTH): sizeof(TPMU_HA).
    case digest
    /// TPM2B_DATA: qualifying data, extraData.
    case data
    /// TPM2B_NAME: sizeof(TPMU_NAME), a hash-algorithm-tagged digest or a handle.
    case name
    /// TPM2B_ECC_PARAMETER: one coordinate or signature half.
    case eccParameter
    /// TPM2B_PUBLIC_KEY_RSA: a modulus or an RSA signature.
    case publicKeyRSA
    /// TPM2B_MAX_NV_BUFFER: NV contents in an NV certification.
    case maxNVBuffer

    public var capacity: Int {
        switch self {
        case .digest, .data: TPMAlgorithm.maxDigestSize
        case .name: 68
        case .eccParameter: 128
        case .publicKeyRSA: 512
        case .maxNVBuffer: 2048
        }
    }

    public var description: String {
        switch self {
        case .digest: "TPM2B_DIGEST"
        case .data: "TPM2B_DATA"
        case .name: "TPM2B_NAME"
        case .eccParameter: "TPM2B_ECC_PARAMETER"
        case .publicKeyRSA: "TPM2B_PUBLIC_KEY_RSA"
        case .maxNVBuffer: "TPM2B_MAX_NV_BUFFER"
        }
    }
}

extension ByteReader {
    /// Reads a TPM2B of the given kind: its size is checked against the kind's capacity and
    /// against the bytes left.
    public mutating func read(_ kind: TPM2B, _ field: @autoclosure () -> String) throws(WireError) -> [UInt8] {
        try readSized(field(), max: kind.capacity)
    }
}

extension ByteWriter {
    /// Writes a TPM2B of the given kind (size, then bytes). Values parsed by `ByteReader` always
    /// fit; a caller that builds an oversized one has a bug, hence the precondition.
    public mutating func write<C: Collection>(_ kind: TPM2B, _ bytes: C) where C.Element == UInt8 {
        precondition(bytes.count <= kind.capacity, "\(kind) payload of \(bytes.count) bytes exceeds \(kind.capacity)")
        writeSized(bytes)
    }
}

/// TPML_DIGEST: up to eight digests (what one TPM2_PCR_Read returns).
public struct TPMLDigest: Hashable, Sendable, TPMWireCodable {
    /// The most digests a TPML_DIGEST carries (TPM2_PCR_Read returns at most eight).
    public static let maxCount = 8

    public var digests: [[UInt8]]

    public init(_ digests: [[UInt8]]) {
        self.digests = digests
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let count = try reader.readUInt32("TPML_DIGEST.count")
        guard count <= UInt32(Self.maxCount) else {
            throw WireError(.countTooLarge, "TPML_DIGEST.count: \(count) digests, at most \(Self.maxCount) allowed")
        }
        var digests: [[UInt8]] = []
        digests.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            digests.append(try reader.read(.digest, "TPML_DIGEST.digests[\(i)]"))
        }
        self.digests = digests
    }

    public func write(to writer: inout ByteWriter) {
        precondition(digests.count <= Self.maxCount, "TPML_DIGEST with \(digests.count) digests")
        writer.write(UInt32(digests.count))
        for d in digests { writer.write(.digest, d) }
    }
}
