import Crypto
import SwiftASN1
import TPMWire
import X509

/// How a VMV quote binds a verifier's nonce and the VMV's TLS server key (`vmv-merkle-sha256-v1`).
///
/// Quote requests that arrive together share one TPM quote. Each request becomes a leaf
///
///     leaf = SHA-256(0x00 ‖ "vmv-quote-v1" ‖ u8(len(nonce)) ‖ nonce ‖ tlsKeyHash)
///     tlsKeyHash = SHA-256(DER SubjectPublicKeyInfo of the VMV's TLS server certificate)
///
/// of a Merkle tree shaped as RFC 6962/9162 (inner node = SHA-256(0x01 ‖ left ‖ right), a lone
/// right-most node promoted, not duplicated), and the TPM's qualifying data (extraData) is the
/// root; a batch of one has the leaf as root. Each answer carries the audit path of its leaf.
///
/// The verifier takes tlsKeyHash from the certificate *it* saw in its own TLS handshake and the
/// nonce it sent itself: a host that relays another VMV's quote has another TLS key, so the
/// leaf, and with it the root, differs.
public enum QuoteBinding {
    public static let scheme = "vmv-merkle-sha256-v1"
    static let leafLabel: [UInt8] = Array("vmv-quote-v1".utf8)
    /// The nonce sizes a VMV accepts: at least 128 bits of freshness, at most a SHA-512 digest.
    public static let nonceSizes = 16...64
    /// The largest batch a proof may describe (2^16 leaves: an audit path of at most 16 nodes).
    public static let maxLeafCount = 1 << 16
    public static let digestSize = SHA256.byteCount

    /// SHA-256 of the DER SubjectPublicKeyInfo.
    public static func tlsKeyHash(subjectPublicKeyInfoDER der: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: der))
    }

    /// SHA-256 of the certificate's DER SubjectPublicKeyInfo.
    public static func tlsKeyHash(certificate: Certificate) throws(EvidenceError) -> [UInt8] {
        var serializer = DER.Serializer()
        do {
            try serializer.serialize(certificate.publicKey)
        } catch {
            throw EvidenceError("TLS certificate: cannot serialise its public key: \(error)")
        }
        return tlsKeyHash(subjectPublicKeyInfoDER: serializer.serializedBytes)
    }

    /// SHA-256 of the SubjectPublicKeyInfo of a DER certificate (as TLS stacks hand it over).
    public static func tlsKeyHash(certificateDER der: [UInt8]) throws(EvidenceError) -> [UInt8] {
        let certificate: Certificate
        do { certificate = try Certificate(derEncoded: der) } catch {
            throw EvidenceError("TLS certificate: not a DER X.509 certificate: \(error)")
        }
        return try tlsKeyHash(certificate: certificate)
    }

    /// The leaf of one quote request. `nonce` must be 1–255 bytes (the service takes 16–64).
    public static func leaf(nonce: [UInt8], tlsKeyHash: [UInt8]) -> [UInt8] {
        precondition(!nonce.isEmpty && nonce.count <= 255, "a nonce has 1–255 bytes")
        var h = SHA256()
        h.update(data: [0x00])
        h.update(data: leafLabel)
        h.update(data: [UInt8(nonce.count)])
        h.update(data: nonce)
        h.update(data: tlsKeyHash)
        return Array(h.finalize())
    }

    static func node(_ left: [UInt8], _ right: [UInt8]) -> [UInt8] {
        var h = SHA256()
        h.update(data: [0x01])
        h.update(data: left)
        h.update(data: right)
        return Array(h.finalize())
    }
}

/// A batch's Merkle tree: every level kept, so that each leaf's audit path is a lookup.
public struct BindingTree: Sendable {
    /// levels[0] are the leaves; the last level holds the root alone.
    private let levels: [[[UInt8]]]

    /// A tree over at least one leaf.
    public init(leaves: [[UInt8]]) {
        precondition(!leaves.isEmpty && leaves.count <= QuoteBinding.maxLeafCount, "a batch has 1–\(QuoteBinding.maxLeafCount) leaves")
        var levels = [leaves]
        var level = leaves
        // Pairing level by level and carrying an odd last node up unchanged gives the same tree
        // as RFC 6962's split at the largest power of two below n.
        while level.count > 1 {
            var next: [[UInt8]] = []
            next.reserveCapacity((level.count + 1) / 2)
            var i = 0
            while i + 1 < level.count {
                next.append(QuoteBinding.node(level[i], level[i + 1]))
                i += 2
            }
            if i < level.count { next.append(level[i]) }
            levels.append(next)
            level = next
        }
        self.levels = levels
    }

    public var leafCount: Int { levels[0].count }
    public var root: [UInt8] { levels[levels.count - 1][0] }

    /// The audit path of leaf `index` (RFC 9162 §2.1.3.1), bottom up.
    public func proof(for index: Int) -> BindingProof {
        precondition(index >= 0 && index < leafCount)
        var path: [[UInt8]] = []
        var i = index
        for level in levels.dropLast() {
            let sibling = i ^ 1
            if sibling < level.count { path.append(level[sibling]) }
            // A promoted node (no sibling) adds nothing to the path.
            i /= 2
        }
        return BindingProof(leafIndex: index, leafCount: leafCount, path: path)
    }
}

/// One leaf's place in a batch and its audit path.
public struct BindingProof: Hashable, Sendable {
    public let leafIndex: Int
    public let leafCount: Int
    public let path: [[UInt8]]

    public init(leafIndex: Int, leafCount: Int, path: [[UInt8]]) {
        self.leafIndex = leafIndex
        self.leafCount = leafCount
        self.path = path
    }

    /// The root the path leads to from `leaf` (RFC 9162 §2.1.3.2), or why it leads nowhere.
    /// Every input is untrusted: sizes, the index and the path length are checked, never trusted.
    public func root(from leaf: [UInt8]) -> Result<[UInt8], EvidenceError> {
        guard leafCount >= 1, leafCount <= QuoteBinding.maxLeafCount else {
            return .failure(EvidenceError("binding: leafCount \(leafCount) is outside 1–\(QuoteBinding.maxLeafCount)"))
        }
        guard leafIndex >= 0, leafIndex < leafCount else {
            return .failure(EvidenceError("binding: leafIndex \(leafIndex) is outside the batch of \(leafCount)"))
        }
        guard leaf.count == QuoteBinding.digestSize else {
            return .failure(EvidenceError("binding: the leaf has \(leaf.count) bytes, not \(QuoteBinding.digestSize)"))
        }
        if let bad = path.firstIndex(where: { $0.count != QuoteBinding.digestSize }) {
            return .failure(EvidenceError("binding: proof node \(bad) has \(path[bad].count) bytes, not \(QuoteBinding.digestSize)"))
        }
        var fn = leafIndex
        var sn = leafCount - 1
        var r = leaf
        for node in path {
            guard sn > 0 else {
                return .failure(EvidenceError("binding: the proof has \(path.count) nodes, more than a batch of \(leafCount) needs"))
            }
            if fn & 1 == 1 || fn == sn {
                r = QuoteBinding.node(node, r)
                while fn & 1 == 0 && fn != 0 {
                    fn >>= 1
                    sn >>= 1
                }
            } else {
                r = QuoteBinding.node(r, node)
            }
            fn >>= 1
            sn >>= 1
        }
        guard sn == 0 else {
            return .failure(EvidenceError("binding: the proof has \(path.count) nodes, fewer than a batch of \(leafCount) needs"))
        }
        return .success(r)
    }
}

extension QuoteRule {
    public static let binding = QuoteRule(rawValue: "binding")
}

/// extraData is the root of a batch with this verifier's own nonce and the TLS key it saw,
/// at the place the proof says (compared in constant time). Replaces `NonceMatches` for quotes
/// from a VMV.
public struct BindingMatches: QuotePolicy {
    public let rule = QuoteRule.binding
    public let nonce: [UInt8]
    public let tlsKeyHash: [UInt8]
    public let proof: BindingProof

    public init(nonce: [UInt8], tlsKeyHash: [UInt8], proof: BindingProof) {
        self.nonce = nonce
        self.tlsKeyHash = tlsKeyHash
        self.proof = proof
    }

    public func evaluate(_ evidence: QuoteEvidence) -> QuotePolicyResult {
        guard QuoteBinding.nonceSizes.contains(nonce.count) else {
            return .failsToMeetPolicy(reason: "the nonce has \(nonce.count) bytes, not \(QuoteBinding.nonceSizes.lowerBound)–\(QuoteBinding.nonceSizes.upperBound)")
        }
        let leaf = QuoteBinding.leaf(nonce: nonce, tlsKeyHash: tlsKeyHash)
        switch proof.root(from: leaf) {
        case .failure(let error):
            return .failsToMeetPolicy(reason: error.reason)
        case .success(let root):
            if constantTimeEqual(root, evidence.attest.extraData) { return .meetsPolicy }
            return .failsToMeetPolicy(reason: "extraData is not the batch root of our nonce and the TLS key we saw "
                + "(a relayed quote, from a host with another TLS key, or a replayed answer)")
        }
    }
}

extension QuoteVerifier {
    /// `standard`, with the nonce rule replaced by the VMV binding of nonce and TLS key.
    public static func bound(nonce: [UInt8], tlsKeyHash: [UInt8], proof: BindingProof, selection: PCRSelection) -> QuoteVerifier {
        var verifier = standard(nonce: nonce, selection: selection)
        verifier.policies = verifier.policies.map { policy in
            policy.rule == .nonce ? BindingMatches(nonce: nonce, tlsKeyHash: tlsKeyHash, proof: proof) : policy
        }
        return verifier
    }
}

/// Proof of credential activation that keeps the credential on the host:
/// HMAC-SHA256(key: credential, message: "vmv-activate-v1" ‖ AK Name).
public enum ActivationProof {
    static let label: [UInt8] = Array("vmv-activate-v1".utf8)

    public static func compute(credential: [UInt8], akName: [UInt8]) -> [UInt8] {
        let key = SymmetricKey(data: credential)
        return Array(HMAC<SHA256>.authenticationCode(for: label + akName, using: key))
    }

    /// Whether `proof` is the host's answer for the credential this verifier made (constant time).
    public static func verify(_ proof: [UInt8], credential: [UInt8], akName: [UInt8]) -> Bool {
        constantTimeEqual(proof, compute(credential: credential, akName: akName))
    }
}
