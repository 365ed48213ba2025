import Crypto
import Dispatch
import TPMWire

/// Hashes guest pages into Merkle leaves, several workers at once.
public enum PageHasher {
    /// Frames per mapping call: large enough that a Xen source amortises its hypercall, small
    /// enough that a worker's batch stays in cache-friendly reach.
    public static let batchFrames = 256

    /// The leaf digest of every frame, in order, 32 bytes each. Each worker takes a contiguous
    /// share of the frames; a frame that cannot be read fails the whole call, naming it.
    public static func leafDigests(of frames: [UInt64], in source: any GuestMemorySource, workers: Int = 1) throws -> [UInt8] {
        let digestSize = MerkleTree.digestSize
        var out = [UInt8](repeating: 0, count: frames.count * digestSize)
        let workers = max(1, min(workers, frames.count))
        let batch = min(batchFrames, source.maxBatchFrames)
        let failures = FailureSlots(count: workers)
        out.withUnsafeMutableBytes { buffer in
            let shared = SendableBuffer(buffer)
            let share = (frames.count + workers - 1) / max(workers, 1)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let lo = w * share, hi = min(frames.count, lo + share)
                guard lo < hi else { return }
                do {
                    var i = lo
                    while i < hi {
                        let n = min(batch, hi - i)
                        let start = i
                        try source.withMappedFrames(Array(frames[start..<(start + n)])) { mapped in
                            for k in 0..<n {
                                let page = try mapped.page(k)
                                let d = MerkleTree.leaf(page)
                                d.withUnsafeBytes { shared.write($0, at: (start + k) * digestSize) }
                            }
                        }
                        i += n
                    }
                } catch {
                    failures.set(w, error)
                }
            }
        }
        if let e = failures.first { throw e }
        return out
    }
}

/// One slot per worker, each written by its own worker only, read after all have finished.
private final class FailureSlots: @unchecked Sendable {
    private var slots: [(any Error)?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ e: any Error) { slots[i] = e }
    var first: (any Error)? { slots.compactMap { $0 }.first }
}

/// A buffer that workers write at disjoint offsets.
private struct SendableBuffer: @unchecked Sendable {
    let base: UnsafeMutableRawBufferPointer
    init(_ b: UnsafeMutableRawBufferPointer) { base = b }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        UnsafeMutableRawBufferPointer(rebasing: base[offset..<(offset + bytes.count)]).copyMemory(from: bytes)
    }
}

/// The measurement of one region of one guest: the Merkle root over its pages and, kept beside
/// it, the per-page leaf digests that name the pages when the root changes.
///
/// This is the unit the measurement log records: one `memoryRegion` event per region and domain
/// (TPMWire's `VMVEventRecord`): `subject` ("kernel.text"), `virtualStart`, `physicalStart`,
/// page size 4096, `pageCount` and `root` map one to one onto its `MemoryRegion` fields.
public struct RegionMeasurement: Sendable, Hashable, Codable {
    public static let hashAlgorithm = "sha256"
    public static let treeKind = "rfc6962"

    public var region: KernelRegion.Name
    public var virtualStart: UInt64
    /// Where the region starts in the source's frame space (informational: frames move between
    /// boots and migrations, the virtual layout does not).
    public var physicalStart: UInt64?
    public var pageCount: Int
    public var root: [UInt8]
    /// Leaf digests back to back (32 bytes each), or nil when not kept.
    public var pageDigests: [UInt8]?

    public init(region: KernelRegion.Name, virtualStart: UInt64, physicalStart: UInt64? = nil, pageCount: Int,
                root: [UInt8], pageDigests: [UInt8]?) {
        self.region = region
        self.virtualStart = virtualStart
        self.physicalStart = physicalStart
        self.pageCount = pageCount
        self.root = root
        self.pageDigests = pageDigests
    }

    /// Measures a located region: hashes every page and builds the tree.
    public init(measuring region: KernelRegion, in source: any GuestMemorySource, workers: Int = 1) throws {
        let leaves = try PageHasher.leafDigests(of: region.frames, in: source, workers: workers)
        self.init(region: region.name, virtualStart: region.virtualStart, physicalStart: region.runs.first?.physicalStart,
                  pageCount: region.pageCount,
                  root: MerkleTree.root(leaves: leaves), pageDigests: leaves)
    }

    /// The log's name for the region: "kernel.text", "kernel.rodata".
    public var subject: String { "kernel.\(region.rawValue)" }

    public var withoutPages: RegionMeasurement {
        var m = self
        m.pageDigests = nil
        return m
    }

    public func pageDigest(_ i: Int) -> [UInt8]? {
        guard let d = pageDigests, i >= 0, i < pageCount else { return nil }
        return Array(d[(i * MerkleTree.digestSize)..<((i + 1) * MerkleTree.digestSize)])
    }

    enum CodingKeys: String, CodingKey {
        case region, virtualStart, physicalStart, pageCount, hashAlgorithm, tree, root, pageDigests
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(region, forKey: .region)
        try c.encode("0x" + hex64(virtualStart), forKey: .virtualStart)
        try c.encodeIfPresent(physicalStart.map { "0x" + String($0, radix: 16) }, forKey: .physicalStart)
        try c.encode(pageCount, forKey: .pageCount)
        try c.encode(Self.hashAlgorithm, forKey: .hashAlgorithm)
        try c.encode(Self.treeKind, forKey: .tree)
        try c.encode(Hex.encode(root), forKey: .root)
        if let d = pageDigests {
            try c.encode((0..<pageCount).map { Hex.encode(d[($0 * 32)..<(($0 + 1) * 32)]) }, forKey: .pageDigests)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        region = try c.decode(KernelRegion.Name.self, forKey: .region)
        let start = try c.decode(String.self, forKey: .virtualStart)
        guard start.hasPrefix("0x"), let v = UInt64(start.dropFirst(2), radix: 16) else {
            throw DecodingError.dataCorruptedError(forKey: .virtualStart, in: c, debugDescription: "not a 0x-prefixed hex address: \(start)")
        }
        virtualStart = v
        if let p = try c.decodeIfPresent(String.self, forKey: .physicalStart) {
            guard p.hasPrefix("0x"), let value = UInt64(p.dropFirst(2), radix: 16) else {
                throw DecodingError.dataCorruptedError(forKey: .physicalStart, in: c, debugDescription: "not a 0x-prefixed hex address: \(p)")
            }
            physicalStart = value
        } else {
            physicalStart = nil
        }
        pageCount = try c.decode(Int.self, forKey: .pageCount)
        guard pageCount >= 0 else {
            throw DecodingError.dataCorruptedError(forKey: .pageCount, in: c, debugDescription: "negative page count")
        }
        for (key, expected) in [(CodingKeys.hashAlgorithm, Self.hashAlgorithm), (.tree, Self.treeKind)] {
            let value = try c.decode(String.self, forKey: key)
            guard value == expected else {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "\(value) is not \(expected)")
            }
        }
        root = try Hex.decode(try c.decode(String.self, forKey: .root), field: "root")
        guard root.count == MerkleTree.digestSize else {
            throw DecodingError.dataCorruptedError(forKey: .root, in: c, debugDescription: "root is \(root.count) bytes, SHA-256 is 32")
        }
        if let pages = try c.decodeIfPresent([String].self, forKey: .pageDigests) {
            guard pages.count == pageCount else {
                throw DecodingError.dataCorruptedError(forKey: .pageDigests, in: c, debugDescription: "\(pages.count) page digests for \(pageCount) pages")
            }
            var d = [UInt8]()
            d.reserveCapacity(pages.count * 32)
            for (i, p) in pages.enumerated() {
                let bytes = try Hex.decode(p, field: "pageDigests[\(i)]")
                guard bytes.count == 32 else {
                    throw DecodingError.dataCorruptedError(forKey: .pageDigests, in: c, debugDescription: "pageDigests[\(i)] is \(bytes.count) bytes")
                }
                d += bytes
            }
            guard MerkleTree.root(leaves: d) == root else {
                throw DecodingError.dataCorruptedError(forKey: .pageDigests, in: c, debugDescription: "the page digests do not hash to the root")
            }
            pageDigests = d
        } else {
            pageDigests = nil
        }
    }
}

/// A page that differs between two measurements of a region.
public struct PageChange: Sendable, Hashable, CustomStringConvertible {
    public var region: KernelRegion.Name
    public var index: Int
    public var virtualAddress: UInt64
    public var before: [UInt8]?
    public var after: [UInt8]?

    public var description: String {
        let b = before.map { Hex.encode($0) } ?? "(absent)"
        let a = after.map { Hex.encode($0) } ?? "(absent)"
        return "\(region) page \(index) at 0x\(hex64(virtualAddress)): \(b) -> \(a)"
    }
}

/// How two measurements of the same region differ.
public enum RegionDiff: Sendable, Hashable {
    case same
    /// The pages that changed, by index and address.
    case pages([PageChange])
    /// The roots differ but a side has no page digests to say where.
    case rootOnly(before: [UInt8], after: [UInt8])
    /// The regions start at different addresses (a different boot or kernel): pages do not pair.
    case moved(before: UInt64, after: UInt64)

    public static func between(_ a: RegionMeasurement, _ b: RegionMeasurement) -> RegionDiff {
        guard a.virtualStart == b.virtualStart else { return .moved(before: a.virtualStart, after: b.virtualStart) }
        if a.root == b.root && a.pageCount == b.pageCount { return .same }
        guard let da = a.pageDigests, let db = b.pageDigests else { return .rootOnly(before: a.root, after: b.root) }
        return .pages(MerkleTree.changedLeaves(da, db).map { i in
            PageChange(region: a.region, index: i, virtualAddress: a.virtualStart + UInt64(i) * UInt64(MappedFrames.pageSize),
                       before: a.pageDigest(i), after: b.pageDigest(i))
        })
    }
}

/// A whole kernel measurement: what was found, and one `RegionMeasurement` per region.
public struct KernelMeasurement: Sendable {
    public var domain: DomainIdentity
    public var kernel: LocatedKernel
    public var regions: [RegionMeasurement]

    /// Locates nothing: measures the regions of an already located kernel.
    public init(kernel: LocatedKernel, in source: any GuestMemorySource, workers: Int = 1) throws {
        domain = source.domain
        self.kernel = kernel
        regions = try source.withPaused {
            try kernel.regions.map { try RegionMeasurement(measuring: $0, in: source, workers: workers) }
        }
    }
}
