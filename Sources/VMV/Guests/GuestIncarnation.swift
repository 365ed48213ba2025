import Introspection
import TPMWire

/// Which run of a domain a measurement belongs to. A domain id is not reused until Xen's ids
/// wrap, and a UUID is reused by every `xl create` of a config that sets one; with libxl's
/// `start_time` (`/vm/<uuid>/start_time`, seconds with two decimals) the three name one run.
public struct GuestIdentity: Sendable, Hashable {
    public var domainID: UInt32
    /// The 16 bytes of the domain handle.
    public var uuid: [UInt8]
    public var name: String?
    /// "pv", "pvh", "hvm".
    public var type: String?
    /// libxl's start_time, when xenstore has it.
    public var startTime: String?

    public init(domainID: UInt32, uuid: [UInt8], name: String?, type: String?, startTime: String?) {
        self.domainID = domainID
        self.uuid = uuid
        self.name = name
        self.type = type
        self.startTime = startTime
    }

    public var uuidString: String { VMVEventRecord.Domain.format(uuid: uuid) }

    /// "d3@1795827341.25": what records and status call the incarnation.
    public var incarnation: String { "d\(domainID)@\(startTime ?? "-")" }

    /// The log's view of the domain (name made loggable).
    var logDomain: Measurement.Domain {
        Measurement.Domain(uuid: uuid, id: domainID,
                           name: name.map { VMVEventRecord.sanitized($0, maxBytes: VMVEventRecord.maxDomainName) })
    }

    func sameIncarnation(_ other: GuestIdentity) -> Bool {
        domainID == other.domainID && uuid == other.uuid && startTime == other.startTime
    }
}

/// What the log holds for one incarnation of one domain, and the decisions that follow from
/// it: load-time facts once, a region when first seen and whenever its Merkle root changes.
/// An unchanged periodic result only updates the status.
struct GuestIncarnation: Sendable {
    var identity: GuestIdentity
    /// Load-time facts recorded (or found absent) for this incarnation.
    var loadTimeDone = false
    /// Subject → the measurement last recorded in the log (with its page digests, which name
    /// the pages of the next change).
    private(set) var recorded: [String: RegionMeasurement] = [:]
    var kernelRelease: String?
    var firstMeasured: UInt64?
    var lastMeasured: UInt64?
    var lastChanged: UInt64?
    var records = 0
    var lastError: GuestMeasurementError?
    /// When this VMV first saw the incarnation (Unix ms; 0: read back from the log).
    var firstSeen: UInt64 = 0
    /// The roots of the last pass that found the kernel not yet settled (nothing recorded).
    var unrecordedRoots: [String]?

    init(_ identity: GuestIdentity, firstSeen: UInt64 = 0) {
        self.identity = identity
        self.firstSeen = firstSeen
    }

    /// The regions the log does not hold yet for this incarnation, each with the pages that
    /// changed since the one it holds (empty for a first sighting or a moved region).
    func changes(_ regions: [RegionMeasurement]) -> [(region: RegionMeasurement, changedPages: [Int])] {
        regions.compactMap { r in
            guard let before = recorded[r.subject] else { return (r, []) }
            switch RegionDiff.between(before, r) {
            case .same: return nil
            case .pages(let changes): return (r, changes.map(\.index))
            case .rootOnly, .moved: return (r, [])
            }
        }
    }

    /// The log's epoch changed: nothing of this incarnation is in the new epoch's log yet.
    mutating func forgetRecords() {
        recorded = [:]
        loadTimeDone = false
    }

    /// Its regions are to be recorded again (under a name learned since).
    mutating func forgetRegions() {
        recorded = [:]
    }

    /// A region the log already holds (read back from it: root only, no page digests).
    mutating func adopt(_ region: RegionMeasurement) {
        recorded[region.subject] = region
    }

    mutating func didRecord(_ region: RegionMeasurement, at time: UInt64) {
        recorded[region.subject] = region
        records += 1
        lastChanged = time
    }

    var recordedRegions: [RegionMeasurement] { Array(recorded.values) }

    /// Subject → root (hex) as last recorded.
    var roots: [String: String] {
        recorded.mapValues { Hex.encode($0.root) }
    }

    func status() -> GuestStatus {
        GuestStatus(domainID: identity.domainID, name: identity.name, uuid: identity.uuidString, type: identity.type,
                    incarnation: identity.incarnation, kernelRelease: kernelRelease, firstMeasured: firstMeasured,
                    lastMeasured: lastMeasured, lastChanged: lastChanged, roots: roots, records: records, lastError: lastError)
    }
}

extension GuestIncarnation {
    /// What the log's records of one epoch say each domain's incarnation already has there:
    /// per domid the newest incarnation (its `incarnation` attribute), its load-time facts as
    /// done, and the last root of each region. So a restarted VMV records only what changed.
    static func fromLog(_ records: [VMVEventRecord]) -> [UInt32: GuestIncarnation] {
        var out: [UInt32: GuestIncarnation] = [:]
        for r in records {
            guard let domain = r.domain, let domid = domain.id, r.kind.isDomainKind,
                  let key = r.attributes.first(where: { $0.key == "incarnation" })?.value,
                  key.hasPrefix("d\(domid)@") else { continue }
            let start = String(key.dropFirst("d\(domid)@".count))
            let identity = GuestIdentity(domainID: domid, uuid: domain.uuid, name: domain.name,
                                         type: r.attributes.first(where: { $0.key == "domain.type" })?.value,
                                         startTime: start == "-" ? nil : start)
            var state = out[domid].flatMap { $0.identity.sameIncarnation(identity) ? $0 : nil } ?? GuestIncarnation(identity)
            state.loadTimeDone = true
            if state.firstMeasured == nil { state.firstMeasured = r.time }
            state.records += 1
            state.lastChanged = r.time
            if r.kind == .memoryRegion, let region = r.region, let subject = r.subject,
               subject.hasPrefix("kernel."), let name = KernelRegion.Name(rawValue: String(subject.dropFirst("kernel.".count))) {
                state.adopt(RegionMeasurement(region: name, virtualStart: region.virtualStart, physicalStart: region.physicalStart,
                                              pageCount: Int(region.pageCount), root: region.merkleRoot.bytes, pageDigests: nil))
                state.kernelRelease = r.attributes.first(where: { $0.key == "kernel.release" })?.value
            }
            out[domid] = state
        }
        return out
    }
}
