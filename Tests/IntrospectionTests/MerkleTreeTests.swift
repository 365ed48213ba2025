import Crypto
import Testing
import TPMWire
@testable import Introspection

@Suite struct MerkleTreeTests {
    /// The leaves of RFC 6962's reference test vectors (certificate-transparency's merkle tests).
    static let vectorLeaves: [[UInt8]] = [
        [], [0x00], [0x10], [0x20, 0x21], [0x30, 0x31], [0x40, 0x41, 0x42, 0x43],
        [0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57], Array(0x60...0x6f),
    ]
    static let vectorRoots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]

    func leaves(_ inputs: [[UInt8]]) -> [UInt8] {
        inputs.flatMap { bytes in bytes.withUnsafeBytes { Array(MerkleTree.leaf($0)) } }
    }

    @Test func matchesRFC6962Vectors() {
        #expect(Hex.encode(MerkleTree.root(leaves: [])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        for n in 1...8 {
            #expect(Hex.encode(MerkleTree.root(leaves: leaves(Array(Self.vectorLeaves.prefix(n))))) == Self.vectorRoots[n - 1], "n=\(n)")
        }
    }

    /// RFC 6962's definition, recursively, written independently of the iterative code.
    func recursiveRoot(_ l: ArraySlice<[UInt8]>) -> [UInt8] {
        if l.count == 1 { return l[l.startIndex] }
        var k = 1
        while k * 2 < l.count { k *= 2 }
        return Array(SHA256.hash(data: [1] + recursiveRoot(l.prefix(k)) + recursiveRoot(l.dropFirst(k))))
    }

    @Test func iterativeRootEqualsTheRecursiveDefinition() {
        for n in 1...70 {
            let leafDigests = (0..<n).map { i in Array(SHA256.hash(data: [0, UInt8(i), UInt8(i >> 8)])) }
            #expect(MerkleTree.root(leaves: leafDigests.flatMap { $0 }) == recursiveRoot(leafDigests[...]), "n=\(n)")
        }
    }

    @Test func changedLeavesNamesDifferencesAndLengthChanges() {
        let a = leaves((0..<6).map { [UInt8($0)] })
        var b = a
        b[2 * 32 + 5] ^= 1
        b[5 * 32] ^= 0x80
        #expect(MerkleTree.changedLeaves(a, b) == [2, 5])
        #expect(MerkleTree.changedLeaves(a, a).isEmpty)
        #expect(MerkleTree.changedLeaves(a, Array(a.prefix(4 * 32))) == [4, 5])
    }
}
