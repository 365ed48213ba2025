import Foundation
import TPMWire

/// Why a guest could not be measured: a code for programs and a reason for operators that
/// names the domain and the step that failed.
public struct GuestMeasurementError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, Codable {
        /// No such domain (it went away, or XSM hides it).
        case noSuchDomain
        /// dom0 or the VMV's own domain: not a guest.
        case notAGuest
        /// Xen refused a call (domain info, vCPU registers, foreign mapping, xenstore).
        case xen
        /// The kernel could not be found in the guest's page tables.
        case kernelNotFound
        /// A page of a located region could not be read.
        case unreadable
        /// The measurement log refused or failed a record (the reason says whether it is durable).
        case log
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}

/// What one pass over one domain found and recorded.
public struct GuestMeasurementReport: Sendable, Hashable, Codable {
    public var domainID: UInt32
    public var name: String?
    /// Canonical lower-case UUID; nil when the domain could not be read at all.
    public var uuid: String?
    public var type: String?
    /// The incarnation this pass measured (see `GuestIncarnation`).
    public var incarnation: String?
    /// True when this pass saw the incarnation for the first time.
    public var newIncarnation: Bool
    /// When the pass ended, Unix ms.
    public var time: UInt64
    public var kernelRelease: String?
    /// KASLR slide of the kernel text, hex.
    public var slide: String?
    public var regions: [Region]
    public var loadTime: [LoadTimeFact]
    /// Seqs of the records this pass added to the log (none when nothing changed).
    public var recorded: [UInt64]
    /// Epoch of those records.
    public var epoch: UInt32?
    public var error: GuestMeasurementError?
    /// When the next pass should look (Unix ms) while the kernel has not settled: the domain
    /// started less than the settle time ago, or the last two passes found different roots. This
    /// pass recorded load-time facts only.
    public var settlingUntil: UInt64?

    public struct Region: Sendable, Hashable, Codable {
        /// "kernel.text", "kernel.rodata".
        public var subject: String
        /// Hex ("0xffffffff81000000"): JSON numbers lose precision above 2^53.
        public var virtualStart: String
        public var pageCount: Int
        /// Merkle root, hex.
        public var root: String
        /// The log record this pass made for it; nil when the root was already in the log.
        public var seq: UInt64?
        /// Pages that differ from the root last recorded in this incarnation (empty when new or same).
        public var changedPages: [Int]
    }

    public struct LoadTimeFact: Sendable, Hashable, Codable {
        /// "kernelImage", "initrd", "commandLine", "domainConfig".
        public var kind: String
        public var subject: String
        /// SHA-256 of the content, hex; nil when the content could not be read here.
        public var sha256: String?
        public var seq: UInt64?
        /// Why it was not measured (a file dom0 cannot read, …).
        public var note: String?
    }

    public init(domainID: UInt32, time: UInt64, error: GuestMeasurementError? = nil) {
        self.domainID = domainID
        self.time = time
        self.newIncarnation = false
        self.regions = []
        self.loadTime = []
        self.recorded = []
        self.error = error
    }
}

extension GuestMeasurementError: Codable {
    enum CodingKeys: String, CodingKey { case code, reason }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(try c.decode(Code.self, forKey: .code), try c.decode(String.self, forKey: .reason))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(code, forKey: .code)
        try c.encode(reason, forKey: .reason)
    }
}

/// What `GET /v1/domains` shows for one domain: its identity, when it was last measured, the
/// roots in the log for its current incarnation, and the last error.
public struct GuestStatus: Sendable, Hashable, Codable {
    public var domainID: UInt32
    public var name: String?
    public var uuid: String?
    public var type: String?
    public var incarnation: String?
    public var kernelRelease: String?
    /// First and last pass over this incarnation, Unix ms.
    public var firstMeasured: UInt64?
    public var lastMeasured: UInt64?
    /// When a pass last added a record for this incarnation, Unix ms.
    public var lastChanged: UInt64?
    /// Subject ("kernel.text", …) → Merkle root (hex) as last recorded in the log.
    public var roots: [String: String]
    /// Records added for this incarnation.
    public var records: Int
    public var lastError: GuestMeasurementError?
}
