import Crypto
import Foundation
import TPMWire

/// What was measured, as the caller of `MeasurementEngine.measure` describes it. The engine
/// adds seq, epoch, PCR and time, and turns it into a VMV event record.
public struct Measurement: Sendable, Hashable {
    public typealias Kind = VMVEventRecord.Kind
    public typealias Domain = VMVEventRecord.Domain
    public typealias Region = VMVEventRecord.MemoryRegion
    public typealias Attribute = VMVEventRecord.Attribute

    public var kind: Kind
    /// The domain measured; nil for the platform and the VMV itself.
    public var domain: Domain?
    /// What exactly: "kernel.text", "/usr/sbin/vmv", "xen", …
    public var subject: String?
    /// The hash of the measured content.
    public var contentDigest: TCGDigest?
    /// For `memoryRegion`.
    public var region: Region?
    public var attributes: [Attribute]

    /// Attributes may come in any order; they are sorted by key (a repeated key keeps its last value).
    public init(kind: Kind, domain: Domain? = nil, subject: String? = nil, contentDigest: TCGDigest? = nil,
                region: Region? = nil, attributes: [(String, String)] = []) {
        self.kind = kind
        self.domain = domain
        self.subject = subject
        self.contentDigest = contentDigest
        self.region = region
        self.attributes = Attribute.canonical(attributes)
    }

    /// A measurement of `content` by its SHA-256.
    public static func content(_ kind: Kind, subject: String, hashing content: [UInt8], domain: Domain? = nil,
                               attributes: [(String, String)] = []) -> Measurement {
        Measurement(kind: kind, domain: domain, subject: subject,
                    contentDigest: TCGDigest(algorithm: .sha256, bytes: Array(SHA256.hash(data: content))),
                    attributes: attributes)
    }

    /// A memory region measured page by page into a Merkle tree (SHA-256 root).
    public static func memoryRegion(domain: Domain, subject: String, virtualStart: UInt64, physicalStart: UInt64? = nil,
                                    pageSize: UInt32, pageCount: UInt32, merkleRoot: [UInt8],
                                    attributes: [(String, String)] = []) -> Measurement {
        Measurement(kind: .memoryRegion, domain: domain, subject: subject,
                    region: Region(virtualStart: virtualStart, physicalStart: physicalStart, pageSize: pageSize,
                                   pageCount: pageCount, merkleRoot: TCGDigest(algorithm: .sha256, bytes: merkleRoot)),
                    attributes: attributes)
    }

    /// The record this measurement becomes.
    func record(seq: UInt64, epoch: UInt32, pcr: Int, time: UInt64) -> VMVEventRecord {
        VMVEventRecord(seq: seq, epoch: epoch, pcr: UInt32(pcr), time: time, kind: kind, domain: domain, subject: subject,
                       contentDigest: contentDigest, region: region, attributes: attributes)
    }

    /// Refuses, before anything is written, what the record format would refuse, naming the field.
    func validate() throws(MeasurementLogError) {
        guard kind != .epochStart else {
            throw MeasurementLogError(.invalidMeasurement, "epochStart records are written by the engine itself")
        }
        do {
            _ = try record(seq: 1, epoch: 0, pcr: 0, time: 0).validated()
        } catch {
            throw MeasurementLogError(.invalidMeasurement, "\(kind.name) measurement of \(subject ?? domain?.uuidString ?? "?"): \(error.reason)")
        }
    }
}
