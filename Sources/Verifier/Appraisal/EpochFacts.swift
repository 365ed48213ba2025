import TPMWire

/// What one verified record says, reduced to what appraisal compares: the unit a verifier keeps
/// between attestations, so that an incremental replay still appraises everything the epoch
/// measured. Records that say the same thing (a region measured again with the same root) fold
/// into one fact with the seq range they span.
public struct MeasuredFact: Codable, Hashable, Sendable {
    /// `VMVEventRecord.Kind` name: "memoryRegion", "kernelImage", "vmvBinary", "platform", …
    public var kind: String
    public var subject: String?
    /// The content digest, one algorithm.
    public var digest: DigestSet?
    /// For memory regions: the Merkle root (SHA-256, hex) and the page count.
    public var merkleRoot: String?
    public var pages: Int?
    public var attributes: [String: String]
    public var firstSeq: UInt64
    public var lastSeq: UInt64

    public init(_ record: VMVEventRecord) {
        kind = record.kind.name
        subject = record.subject
        digest = record.contentDigest.map { DigestSet($0) }
        merkleRoot = record.region.map { Hex.encode($0.merkleRoot.bytes) }
        pages = record.region.map { Int($0.pageCount) }
        attributes = Dictionary(record.attributes.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        firstSeq = record.seq
        lastSeq = record.seq
    }

    /// Same statement (everything but the seq range).
    func saysTheSame(as other: MeasuredFact) -> Bool {
        kind == other.kind && subject == other.subject && digest == other.digest && merkleRoot == other.merkleRoot
            && pages == other.pages && attributes == other.attributes
    }

    /// "kernel.text root 5f3a…(1234 pages)", "vmvBinary /usr/sbin/vmv sha256:ab12…"
    public var valueDescription: String {
        if let root = merkleRoot { return "root \(root) (\(pages ?? 0) pages)" }
        if let d = digest, let (alg, hex) = d.values.first { return "\(alg):\(hex)" }
        if !attributes.isEmpty { return attributes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") }
        return "no value"
    }

    public var label: String { subject.map { "\(kind) \($0)" } ?? kind }
}

/// One guest as the epoch's log describes it.
public struct DomainFacts: Codable, Hashable, Sendable {
    /// Canonical UUID (8-4-4-4-12).
    public var uuid: String
    /// The latest name and domid the log gave it.
    public var name: String?
    public var domid: UInt32?
    /// False after a domainStop record.
    public var running: Bool
    /// The seq of the domainStart that began this incarnation, if the log has one.
    public var startedAt: UInt64?
    public var facts: [MeasuredFact]

    public var displayName: String { name ?? uuid }
}

/// How an epoch began (its epochStart record).
public struct EpochStartFact: Codable, Hashable, Sendable {
    public var seq: UInt64
    public var resetCount: UInt32
    public var restartCount: UInt32
    public var reason: String
    public var previousEpoch: UInt32?
    public var previousEnd: String?
    /// Bank → hex of PCR values the epoch starts from that its log cannot explain; empty when the
    /// PCR started at its reset value.
    public var startPCRs: [String: String]
}

/// Everything the verified records of one epoch say, grouped by what they are about. Built
/// record by record, in seq order; kept in the per-host state between attestations.
public struct EpochFacts: Codable, Hashable, Sendable {
    public var epoch: UInt32
    public var start: EpochStartFact?
    /// The VMV's own records and the platform's (records without a domain, or the all-zero UUID).
    public var platform: [MeasuredFact]
    /// By canonical UUID.
    public var domains: [String: DomainFacts]
    /// Records that no appraisal rule covers and that are not lifecycle records: a second
    /// epochStart, for instance. Each is a reason for an untrusted platform.
    public var anomalies: [String]

    public init(epoch: UInt32) {
        self.epoch = epoch
        platform = []
        domains = [:]
        anomalies = []
    }

    static let zeroUUID = [UInt8](repeating: 0, count: 16)

    /// Adds one verified record (in seq order).
    public mutating func add(_ record: VMVEventRecord) {
        if record.kind == .epochStart {
            guard let e = record.epochStart, start == nil, record.seq == 0 else {
                anomalies.append("seq \(record.seq): an epochStart record that is not the epoch's first record")
                return
            }
            start = EpochStartFact(
                seq: record.seq, resetCount: e.resetCount, restartCount: e.restartCount, reason: e.reason,
                previousEpoch: e.previousEpoch, previousEnd: e.previousEnd?.description,
                startPCRs: Dictionary(e.startPCRs.map { ($0.algorithm.name, Hex.encode($0.bytes)) }, uniquingKeysWith: { a, _ in a }))
            return
        }
        guard let domain = record.domain, domain.uuid != Self.zeroUUID else {
            Self.fold(MeasuredFact(record), into: &platform)
            return
        }
        let uuid = domain.uuidString
        var d = domains[uuid] ?? DomainFacts(uuid: uuid, name: nil, domid: nil, running: true, startedAt: nil, facts: [])
        if let name = domain.name { d.name = name }
        if let id = domain.id { d.domid = id }
        switch record.kind {
        case .domainStart:
            // A new incarnation: what the previous one measured no longer describes the guest.
            d.facts = []
            d.running = true
            d.startedAt = record.seq
        case .domainStop:
            d.running = false
        default:
            Self.fold(MeasuredFact(record), into: &d.facts)
        }
        domains[uuid] = d
    }

    static func fold(_ fact: MeasuredFact, into facts: inout [MeasuredFact]) {
        if let i = facts.firstIndex(where: { $0.saysTheSame(as: fact) }) {
            facts[i].lastSeq = fact.lastSeq
        } else {
            facts.append(fact)
        }
    }
}
