import FoundationEssentials
import Verifier

/// The verdict the service holds for a host or a VM. `trusted`, `untrusted` and `unknown` come
/// from appraisal of sound evidence; `failed` means the evidence was rejected (or the host
/// answered with an error); `unreachable` means the host could not be asked; `pending` means it
/// was never attested. A host or VM is only ever shown `trusted` on the strength of a recent
/// sound attestation: a failure, a silence, or a verdict older than `stale_after` is never
/// reported as trusted.
public enum FleetVerdict: String, Codable, Sendable, CaseIterable, Comparable {
    case pending, trusted, unknown, untrusted, failed, unreachable

    public init(_ level: TrustLevel) {
        switch level {
        case .trusted: self = .trusted
        case .unknown: self = .unknown
        case .untrusted: self = .untrusted
        }
    }

    var rank: Int {
        switch self {
        case .trusted: 0
        case .pending: 1
        case .unknown: 2
        case .unreachable: 3
        case .failed: 4
        case .untrusted: 5
        }
    }

    /// Ordered from good to bad, so `max` of several is the worst.
    public static func < (a: FleetVerdict, b: FleetVerdict) -> Bool { a.rank < b.rank }
}

/// What an operator registers: a VMV host, how its AK is trusted, and which reference set
/// appraises it.
public struct HostRegistration: Codable, Sendable, Equatable {
    /// The operator's name for the host (unique): letters, digits, '.', '-', '_'.
    public var name: String
    /// `https://HOST:PORT` of its VMV API.
    public var url: String
    /// The AK pin written by `vmv-verifier enroll` (nil: the AK must chain to the service's AK CA).
    public var akPin: AKPin?
    /// The name of a reference set in the service's configuration.
    public var referenceSet: String
    /// Seconds between attestations; nil: the service's default.
    public var intervalSeconds: Int?

    public init(name: String, url: String, akPin: AKPin?, referenceSet: String, intervalSeconds: Int? = nil) {
        self.name = name
        self.url = url
        self.akPin = akPin
        self.referenceSet = referenceSet
        self.intervalSeconds = intervalSeconds
    }

    /// Why the registration cannot be stored, or nil.
    public var problem: String? {
        if name.isEmpty || name.count > 128 { return "name: 1–128 characters" }
        if let bad = name.unicodeScalars.first(where: { !($0.properties.isAlphabetic && $0.isASCII) && !("0"..."9").contains($0) && !".-_".unicodeScalars.contains($0) }) {
            return "name '\(name)': the character '\(bad)' is not allowed (letters, digits, '.', '-', '_')"
        }
        guard url.hasPrefix("https://") else { return "url '\(url)': the VMV API is HTTPS only (https://HOST:PORT)" }
        if let i = intervalSeconds, !(1...86_400).contains(i) { return "intervalSeconds \(i): outside 1–86400" }
        if referenceSet.isEmpty { return "referenceSet is empty" }
        return nil
    }
}

/// A host as stored: its registration and its current verdict.
public struct HostStatus: Codable, Sendable, Equatable {
    public var name: String
    public var url: String
    public var referenceSet: String
    public var intervalSeconds: Int?
    /// The AK's Name (hex) when pinned.
    public var akName: String?
    public var addedAt: Double
    public var verdict: FleetVerdict
    /// When the host entered this verdict (unix seconds), and the reasons.
    public var verdictSince: Double?
    public var reasons: [String]
    /// The platform's own verdict at the last sound attestation.
    public var platform: FleetVerdict
    /// Last attempt and last sound attestation (unix seconds).
    public var lastAttempt: Double?
    public var lastSuccess: Double?
    /// Consecutive failed attempts (drives the backoff).
    public var failures: Int
    public var nextDue: Double
    /// The verifier process that holds the host now, if any.
    public var leaseOwner: String?
    public var vms: [VMStatus]
}

/// A VM as the service last judged it.
public struct VMStatus: Codable, Sendable, Equatable {
    public var uuid: String
    public var name: String?
    public var domid: UInt32?
    public var running: Bool
    public var verdict: FleetVerdict
    public var since: Double
    public var reasons: [String]
    public var updatedAt: Double
}

/// One change of verdict, kept forever (the audit trail): what changed, when, why, and the log
/// records behind it.
public struct VerdictChange: Codable, Sendable, Equatable {
    public enum Subject: String, Codable, Sendable {
        case host, vm
    }
    /// Monotonic per store (the SSE event id).
    public var id: Int64
    public var host: String
    public var subject: Subject
    /// For a VM: its UUID and name.
    public var vmUUID: String?
    public var vmName: String?
    /// Unix seconds.
    public var at: Double
    public var previous: FleetVerdict?
    public var verdict: FleetVerdict
    public var reasons: [String]
    /// The appraised facts (with their log seq ranges) and the decoded log records of this
    /// attestation that the verdict rests on.
    public var evidence: ChangeEvidence
    /// The verifier process that saw it.
    public var owner: String
}

/// The log records behind a change.
public struct ChangeEvidence: Codable, Sendable, Equatable {
    public struct Fact: Codable, Sendable, Equatable {
        /// "memoryRegion kernel.text", "kernelImage vmlinuz"
        public var label: String
        public var value: String
        /// matched / mismatch / unknown
        public var result: String
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        public var expected: [String]
        public var reason: String
    }
    /// The epoch the seqs belong to.
    public var epoch: UInt32?
    public var facts: [Fact]
    /// The TCG records of this attestation's log delta about the subject, in their JSON form
    /// (`vmv log show --json`), at most `ChangeEvidence.maxRecords`.
    public var records: [String]
    /// The failed evidence checks, rule and reason.
    public var failedChecks: [AttestationReport.Check]

    public static let maxRecords = 64
    public static let none = ChangeEvidence(epoch: nil, facts: [], records: [], failedChecks: [])

    public init(epoch: UInt32?, facts: [Fact], records: [String], failedChecks: [AttestationReport.Check]) {
        self.epoch = epoch
        self.facts = facts
        self.records = records
        self.failedChecks = failedChecks
    }
}

/// One attestation attempt (kept for `retention.attestations_hours`): who ran it, when, and
/// what came of it. Two verifier processes never hold one host at once; these rows show it.
public struct AttestationAttempt: Codable, Sendable, Equatable {
    public var host: String
    public var owner: String
    public var started: Double
    public var finished: Double
    public var verdict: FleetVerdict
    /// The failure reason label (metrics' `reason`), nil when trusted.
    public var reason: String?
}

/// What the verdict-at-T query answers.
public struct VerdictAt: Codable, Sendable, Equatable {
    public var host: String
    public var vm: String?
    public var at: Double
    /// The change in force at `at` (nil: nothing was known about the subject then).
    public var change: VerdictChange?
    /// The last attestation attempt at or before `at` still kept, if any.
    public var lastAttempt: AttestationAttempt?
    /// True only if the verdict in force was `trusted`.
    public var trusted: Bool
}

/// A time as the API and page show it.
public enum Timestamp {
    public static func iso(_ unix: Double) -> String {
        Date(timeIntervalSince1970: unix).formatted(.iso8601)
    }

    /// ISO 8601 (with or without fractional seconds, `Z` or an offset) or unix seconds.
    public static func parse(_ text: String) -> Double? {
        if let n = Double(text), n.isFinite { return n }
        if let d = try? Date(text, strategy: .iso8601) { return d.timeIntervalSince1970 }
        if let d = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return d.timeIntervalSince1970 }
        return nil
    }

    public static var now: Double { Date().timeIntervalSince1970 }
}
