import Crypto

/// The Merkle tree hash of RFC 6962 (Certificate Transparency) §2.1 over SHA-256, with one leaf
/// per guest page:
///
///     leaf(page)  = SHA-256(0x00 || page)
///     node(l, r)  = SHA-256(0x01 || l || r)
///     MTH(n > 1)  = node(MTH(first k leaves), MTH(the rest)), k the largest power of two < n
///
/// The prefixes keep a leaf from being passed off as a node (second preimages). A leaf of a
/// 4096-byte page costs the same 65 SHA-256 blocks with or without its prefix byte. The empty
/// tree's root is SHA-256 of nothing.
public enum MerkleTree {
    public static let digestSize = SHA256.byteCount

    /// The leaf digest of one page (or any bytes).
    @inlinable
    public static func leaf(_ bytes: UnsafeRawBufferPointer) -> SHA256.Digest {
        var h = SHA256()
        withUnsafeBytes(of: UInt8(0)) { h.update(bufferPointer: $0) }
        h.update(bufferPointer: bytes)
        return h.finalize()
    }

    static func node(_ left: UnsafeRawBufferPointer, _ right: UnsafeRawBufferPointer) -> SHA256.Digest {
        var h = SHA256()
        withUnsafeBytes(of: UInt8(1)) { h.update(bufferPointer: $0) }
        h.update(bufferPointer: left)
        h.update(bufferPointer: right)
        return h.finalize()
    }

    /// The root over leaf digests stored back to back (32 bytes each).
    ///
    /// Pairs level by level, carrying an odd last node up unchanged: the same tree as RFC 6962's
    /// recursive split, without recursion.
    public static func root(leaves: [UInt8]) -> [UInt8] {
        precondition(leaves.count % digestSize == 0, "leaf digests are \(digestSize) bytes each")
        var level = leaves
        var count = leaves.count / digestSize
        if count == 0 { return Array(SHA256.hash(data: [UInt8]())) }
        while count > 1 {
            var next = [UInt8]()
            next.reserveCapacity((count + 1) / 2 * digestSize)
            level.withUnsafeBytes { buf in
                var i = 0
                while i + 1 < count {
                    let l = UnsafeRawBufferPointer(rebasing: buf[(i * digestSize)..<((i + 1) * digestSize)])
                    let r = UnsafeRawBufferPointer(rebasing: buf[((i + 1) * digestSize)..<((i + 2) * digestSize)])
                    next.append(contentsOf: node(l, r))
                    i += 2
                }
                if i < count { next.append(contentsOf: buf[(i * digestSize)..<((i + 1) * digestSize)]) }
            }
            level = next
            count = (count + 1) / 2
        }
        return level
    }

    /// Indices of the leaves that differ between two lists of the same length, plus those that
    /// one list has and the other has not.
    public static func changedLeaves(_ a: [UInt8], _ b: [UInt8]) -> [Int] {
        let na = a.count / digestSize, nb = b.count / digestSize
        var out: [Int] = []
        for i in 0..<max(na, nb) {
            if i >= na || i >= nb {
                out.append(i)
                continue
            }
            let r = (i * digestSize)..<((i + 1) * digestSize)
            if a[r] != b[r] { out.append(i) }
        }
        return out
    }
}
