import Crypto
import Foundation
import Testing
import TPMWire
import Verifier

/// The batching Merkle tree against RFC 6962's recursive definition (written out here
/// independently), its audit paths for every leaf of every batch size up to 70, and the leaf
/// layout of `vmv-merkle-sha256-v1` byte by byte.
@Suite struct QuoteBindingTests {
    /// MTH of RFC 6962 §2.1, recursively, over leaf hashes.
    static func referenceRoot(_ leaves: ArraySlice<[UInt8]>) -> [UInt8] {
        if leaves.count == 1 { return leaves.first ?? [] }
        var k = 1
        while k * 2 < leaves.count { k *= 2 }
        let left = referenceRoot(leaves.prefix(k))
        let right = referenceRoot(leaves.dropFirst(k))
        return Array(SHA256.hash(data: [0x01] + left + right))
    }

    /// PATH(m, D[n]) of RFC 6962 §2.1.1.
    static func referencePath(_ m: Int, _ leaves: ArraySlice<[UInt8]>) -> [[UInt8]] {
        if leaves.count <= 1 { return [] }
        var k = 1
        while k * 2 < leaves.count { k *= 2 }
        if m < k {
            return referencePath(m, leaves.prefix(k)) + [referenceRoot(leaves.dropFirst(k))]
        }
        return referencePath(m - k, leaves.dropFirst(k)) + [referenceRoot(leaves.prefix(k))]
    }

    static func leaves(_ n: Int) -> [[UInt8]] {
        let key = Array(SHA256.hash(data: Array("server key".utf8)))
        return (0..<n).map { i in QuoteBinding.leaf(nonce: Array(repeating: UInt8(truncatingIfNeeded: i), count: 16 + i % 49), tlsKeyHash: key) }
    }

    @Test func leafLayoutIsAsSpecified() {
        let nonce = Array(0..<32).map { UInt8($0) }
        let key = [UInt8](repeating: 0xAB, count: 32)
        let expected = Array(SHA256.hash(data: [0x00] + Array("vmv-quote-v1".utf8) + [32] + nonce + key))
        #expect(QuoteBinding.leaf(nonce: nonce, tlsKeyHash: key) == expected)
        // The length prefix keeps (nonce, key) pairs apart that concatenate to the same bytes.
        let shifted = QuoteBinding.leaf(nonce: Array(nonce.dropLast()), tlsKeyHash: [nonce[31]] + key)
        #expect(shifted != expected)
    }

    @Test(arguments: Array(1...70))
    func rootsAndPathsMatchRFC6962(count: Int) throws {
        let leaves = Self.leaves(count)
        let tree = BindingTree(leaves: leaves)
        #expect(tree.root == Self.referenceRoot(leaves[...]))
        if count == 1 { #expect(tree.root == leaves[0]) }
        for index in 0..<count {
            let proof = tree.proof(for: index)
            #expect(proof.path == Self.referencePath(index, leaves[...]), "leaf \(index) of \(count)")
            #expect(try proof.root(from: leaves[index]).get() == tree.root, "leaf \(index) of \(count)")
            // Another leaf at the same place does not reach the root.
            let other = Array(SHA256.hash(data: leaves[index]))
            #expect(try proof.root(from: other).get() != tree.root)
        }
    }

    @Test func hostileProofsAreRejectedWithAReason() {
        let leaves = Self.leaves(5)
        let tree = BindingTree(leaves: leaves)
        let good = tree.proof(for: 2)
        let cases: [(BindingProof, String)] = [
            (BindingProof(leafIndex: 5, leafCount: 5, path: good.path), "outside the batch"),
            (BindingProof(leafIndex: -1, leafCount: 5, path: good.path), "outside the batch"),
            (BindingProof(leafIndex: 0, leafCount: 0, path: []), "leafCount 0"),
            (BindingProof(leafIndex: 0, leafCount: Int.max, path: []), "leafCount"),
            (BindingProof(leafIndex: 2, leafCount: 5, path: good.path + [good.path[0]]), "more than"),
            (BindingProof(leafIndex: 2, leafCount: 5, path: Array(good.path.dropLast())), "fewer than"),
            (BindingProof(leafIndex: 2, leafCount: 5, path: [Array(good.path[0].dropLast())] + good.path.dropFirst()), "proof node 0 has 31 bytes"),
        ]
        for (proof, reason) in cases {
            switch proof.root(from: leaves[2]) {
            case .success(let root): Issue.record("accepted \(proof) with root \(Hex.encode(root))")
            case .failure(let error): #expect(error.reason.contains(reason), "\(error.reason)")
            }
        }
        // A proof for a different index in the same batch leads elsewhere.
        let moved = BindingProof(leafIndex: 3, leafCount: 5, path: good.path)
        #expect((try? moved.root(from: leaves[2]).get()) != tree.root)
    }
}
