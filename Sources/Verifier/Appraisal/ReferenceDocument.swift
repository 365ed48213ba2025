import FoundationEssentials
import TPMWire

/// Why a reference-value document cannot be used: the file and the field, in words.
public struct ReferenceError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Digests of one thing in one or more hash algorithms: `{"sha256": "<hex>"}`.
/// Matching uses the algorithm the measurement used; a set without it cannot speak for it.
public struct DigestSet: Codable, Hashable, Sendable {
    public var values: [String: String]

    public init(_ values: [String: String]) { self.values = values }

    public init(_ digest: TCGDigest) {
        values = [digest.algorithm.name: Hex.encode(digest.bytes)]
    }

    /// The digest in `algorithm`, if this set has one.
    public func digest(_ algorithm: TPMAlgorithm) -> [UInt8]? {
        values[algorithm.name].flatMap { try? Hex.decode($0) }
    }

    public init(from decoder: any Decoder) throws {
        values = try decoder.singleValueContainer().decode([String: String].self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(values)
    }

    func validate(_ field: String) throws(ReferenceError) {
        guard !values.isEmpty else { throw ReferenceError("\(field): no digest") }
        for (name, hex) in values.sorted(by: { $0.key < $1.key }) {
            guard let alg = TPMAlgorithm(name: name), let size = alg.digestSize else {
                throw ReferenceError("\(field).\(name): not a hash algorithm (sha1, sha256, sha384, sha512)")
            }
            let bytes: [UInt8]
            do { bytes = try Hex.decode(hex, field: "\(field).\(name)") } catch { throw ReferenceError(error.reason) }
            guard bytes.count == size else {
                throw ReferenceError("\(field).\(name): \(bytes.count) bytes, a \(name) digest has \(size)")
            }
        }
    }
}

/// A kernel region's run-time reference: the Merkle root over its pages (SHA-256, RFC 6962
/// shape, as the VMV measures it) and the page count. A reference derived from the image alone
/// knows the page count but no root (Linux patches its text at boot).
public struct RegionReference: Codable, Hashable, Sendable {
    public var merkleRoot: String?
    public var pages: Int

    public init(merkleRoot: String?, pages: Int) {
        self.merkleRoot = merkleRoot
        self.pages = pages
    }
}

/// Where a document came from, for people: the command and its inputs.
public struct Provenance: Codable, Hashable, Sendable {
    public var by: String
    public var at: String
    /// The inputs: file names and their SHA-256, the evidence's host and epoch, …
    public var from: [String: String]

    public init(by: String, at: String, from: [String: String]) {
        self.by = by
        self.at = at
        self.from = from
    }
}

/// `kind: "kernel"`: one Linux kernel. Speaks for a domain's kernelImage (image), initrd and
/// commandLine (when set), and memoryRegion records (`regions`, by subject "kernel.text", …).
public struct KernelReference: Codable, Hashable, Sendable {
    public var id: String
    public var release: String?
    public var buildId: String?
    public var banner: String?
    /// The kernel file a domain is built from (vmlinuz).
    public var image: DigestSet?
    public var initrd: DigestSet?
    /// Digest of the command line's UTF-8 bytes.
    public var commandLine: DigestSet?
    /// Subject ("kernel.text", "kernel.rodata") → run-time reference.
    public var regions: [String: RegionReference]
    /// "image", "vmlinux", "system-map" or "learned".
    public var source: String
    public var generated: Provenance?

    public init(id: String, release: String? = nil, buildId: String? = nil, banner: String? = nil, image: DigestSet? = nil,
                initrd: DigestSet? = nil, commandLine: DigestSet? = nil, regions: [String: RegionReference] = [:],
                source: String, generated: Provenance? = nil) {
        self.id = id
        self.release = release
        self.buildId = buildId
        self.banner = banner
        self.image = image
        self.initrd = initrd
        self.commandLine = commandLine
        self.regions = regions
        self.source = source
        self.generated = generated
    }
}

/// `kind: "vmv"`: a VMV build. Speaks for the vmvBinary and vmvConfig records of the platform.
public struct VMVReference: Codable, Hashable, Sendable {
    public var id: String
    public var version: String?
    public var binary: DigestSet?
    public var config: DigestSet?
    public var generated: Provenance?

    public init(id: String, version: String? = nil, binary: DigestSet?, config: DigestSet?, generated: Provenance? = nil) {
        self.id = id
        self.version = version
        self.binary = binary
        self.config = config
        self.generated = generated
    }
}

/// What one platform record must say: its content digest and/or some of its attributes.
public struct PlatformExpectation: Codable, Hashable, Sendable {
    public var digest: DigestSet?
    /// Attributes the record must carry with exactly these values (others are not compared).
    public var attributes: [String: String]?

    public init(digest: DigestSet?, attributes: [String: String]?) {
        self.digest = digest
        self.attributes = attributes
    }
}

/// `kind: "hypervisor"`: the platform a VMV runs on (Xen, dom0's kernel, XSM policy, …).
/// Speaks for `platform` records by subject.
public struct HypervisorReference: Codable, Hashable, Sendable {
    public var id: String
    public var subjects: [String: PlatformExpectation]
    public var generated: Provenance?

    public init(id: String, subjects: [String: PlatformExpectation], generated: Provenance? = nil) {
        self.id = id
        self.subjects = subjects
        self.generated = generated
    }
}

/// `kind: "policy"`: which references apply to what. Without a policy every reference in the
/// directory applies to every domain and to the platform ("open"), and a VM must have its
/// kernel text measured to be trusted.
public struct PolicyDocument: Codable, Hashable, Sendable {
    public struct Platform: Codable, Hashable, Sendable {
        /// Ids of the vmv references the platform may run; nil: any in the directory.
        public var vmv: [String]?
        /// Ids of the hypervisor references; nil: any.
        public var hypervisor: [String]?
        /// The XSM/Flask state the platform must be in; nil: not judged.
        public var xsm: XSMRequirement?
        public init(vmv: [String]? = nil, hypervisor: [String]? = nil, xsm: XSMRequirement? = nil) {
            self.vmv = vmv
            self.hypervisor = hypervisor
            self.xsm = xsm
        }
    }

    /// `platform.xsm`: the FLASK mode the hypervisor must run in and the policy it must have
    /// loaded (docs/verification.md, "XSM"). Judged against the platform records `xsm`
    /// (attribute `xsm.mode`) and `launch.xsm-policy` (the launch event of the policy load).
    public struct XSMRequirement: Codable, Hashable, Sendable {
        /// "enforcing" (what confines the VMV and dom0), or "permissive".
        public var mode: String
        /// The loaded policy file's digest (sha256: the launch event records SHA-256); nil: the
        /// mode alone is judged.
        public var policy: DigestSet?

        public init(mode: String, policy: DigestSet?) {
            self.mode = mode
            self.policy = policy
        }

        public static let modes = ["enforcing", "permissive"]
    }

    public struct Domain: Codable, Hashable, Sendable {
        /// Matches the domain's name, or its UUID; at least one is set (both: both must match).
        public var name: String?
        public var uuid: String?
        /// Kernel reference ids this domain may run.
        public var kernels: [String]
        /// Digests its domain configuration may have (domainConfig records).
        public var domainConfig: [DigestSet]?
        /// Subjects that must have been measured for a trusted verdict; nil: the policy's `require`.
        public var require: [String]?

        public init(name: String? = nil, uuid: String? = nil, kernels: [String], domainConfig: [DigestSet]? = nil, require: [String]? = nil) {
            self.name = name
            self.uuid = uuid
            self.kernels = kernels
            self.domainConfig = domainConfig
            self.require = require
        }
    }

    public var id: String
    public var platform: Platform?
    public var domains: [Domain]
    /// What applies to domains no entry names; nil: their records are unknown.
    public var otherDomains: Domain?
    /// Subjects every VM must have measured to be trusted; nil: ["kernel.text"].
    public var require: [String]?
    public var generated: Provenance?

    public init(id: String, platform: Platform? = nil, domains: [Domain] = [], otherDomains: Domain? = nil,
                require: [String]? = nil, generated: Provenance? = nil) {
        self.id = id
        self.platform = platform
        self.domains = domains
        self.otherDomains = otherDomains
        self.require = require
        self.generated = generated
    }

    public static let defaultRequire = ["kernel.text"]
}

/// One reference-value document (`measurements/*.json`, schema `vmv-reference/v1`).
public enum ReferenceDocument: Hashable, Sendable {
    case kernel(KernelReference)
    case vmv(VMVReference)
    case hypervisor(HypervisorReference)
    case policy(PolicyDocument)

    public static let schema = "vmv-reference/v1"

    public var id: String {
        switch self {
        case .kernel(let k): k.id
        case .vmv(let v): v.id
        case .hypervisor(let h): h.id
        case .policy(let p): p.id
        }
    }

    public var kind: String {
        switch self {
        case .kernel: "kernel"
        case .vmv: "vmv"
        case .hypervisor: "hypervisor"
        case .policy: "policy"
        }
    }

    private struct Header: Decodable {
        var schema: String?
        var kind: String?
    }

    /// Parses and validates one document; `name` (a file name) prefixes every error.
    public init(json bytes: [UInt8], name: String) throws(ReferenceError) {
        let decoder = JSONDecoder()
        let data = Data(bytes)
        let header: Header
        do { header = try decoder.decode(Header.self, from: data) } catch {
            throw ReferenceError("\(name): not a JSON object: \(Self.describe(error))")
        }
        try Self.rejectUnknownKeys(data, kind: header.kind, name: name)
        guard header.schema == Self.schema else {
            throw ReferenceError("\(name): schema is \(header.schema.map { "'\($0)'" } ?? "missing"), expected '\(Self.schema)'")
        }
        do {
            switch header.kind {
            case "kernel": self = .kernel(try decoder.decode(Tagged<KernelReference>.self, from: data).body)
            case "vmv": self = .vmv(try decoder.decode(Tagged<VMVReference>.self, from: data).body)
            case "hypervisor": self = .hypervisor(try decoder.decode(Tagged<HypervisorReference>.self, from: data).body)
            case "policy": self = .policy(try decoder.decode(Tagged<PolicyDocument>.self, from: data).body)
            default:
                throw ReferenceError("\(name): kind is \(header.kind.map { "'\($0)'" } ?? "missing"), expected kernel, vmv, hypervisor or policy")
            }
        } catch let error as ReferenceError {
            throw error
        } catch {
            throw ReferenceError("\(name): \(Self.describe(error))")
        }
        try validate(name)
    }

    /// The document as the commands write it: sorted keys, indented, a final newline.
    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data?
        switch self {
        case .kernel(let k): data = try? encoder.encode(Tagged(kind: "kernel", body: k))
        case .vmv(let v): data = try? encoder.encode(Tagged(kind: "vmv", body: v))
        case .hypervisor(let h): data = try? encoder.encode(Tagged(kind: "hypervisor", body: h))
        case .policy(let p): data = try? encoder.encode(Tagged(kind: "policy", body: p))
        }
        // Strings, numbers and dictionaries always encode.
        return Array(data ?? Data()) + [0x0a]
    }

    /// Checks the document's values (digest sizes, ids, page counts); `name` prefixes errors.
    public func validate(_ name: String) throws(ReferenceError) {
        guard Self.isValidID(id) else {
            throw ReferenceError("\(name).id: '\(id)' is not an id (1–128 of a–z A–Z 0–9 . _ - +)")
        }
        switch self {
        case .kernel(let k):
            try k.image?.validate("\(name).image")
            try k.initrd?.validate("\(name).initrd")
            try k.commandLine?.validate("\(name).commandLine")
            for (subject, region) in k.regions.sorted(by: { $0.key < $1.key }) {
                guard region.pages >= 1 else { throw ReferenceError("\(name).regions.\(subject).pages: \(region.pages), at least 1") }
                if let root = region.merkleRoot {
                    try DigestSet(["sha256": root]).validate("\(name).regions.\(subject).merkleRoot")
                }
            }
            if let b = k.buildId {
                do { _ = try Hex.decode(b, field: "\(name).buildId") } catch { throw ReferenceError(error.reason) }
            }
            guard k.image != nil || !k.regions.isEmpty else {
                throw ReferenceError("\(name): a kernel reference needs an image digest or at least one region")
            }
        case .vmv(let v):
            try v.binary?.validate("\(name).binary")
            try v.config?.validate("\(name).config")
            guard v.binary != nil || v.config != nil else { throw ReferenceError("\(name): a vmv reference needs binary or config") }
        case .hypervisor(let h):
            guard !h.subjects.isEmpty else { throw ReferenceError("\(name).subjects: empty") }
            for (subject, e) in h.subjects.sorted(by: { $0.key < $1.key }) {
                try e.digest?.validate("\(name).subjects.\(subject).digest")
                guard e.digest != nil || !(e.attributes ?? [:]).isEmpty else {
                    throw ReferenceError("\(name).subjects.\(subject): neither a digest nor attributes")
                }
            }
        case .policy(let p):
            if let x = p.platform?.xsm {
                guard PolicyDocument.XSMRequirement.modes.contains(x.mode) else {
                    throw ReferenceError("\(name).platform.xsm.mode: '\(x.mode)', expected \(PolicyDocument.XSMRequirement.modes.joined(separator: " or "))")
                }
                if let d = x.policy {
                    try d.validate("\(name).platform.xsm.policy")
                    guard d.values["sha256"] != nil else {
                        throw ReferenceError("\(name).platform.xsm.policy: no sha256 digest (the policy's launch event records its SHA-256)")
                    }
                }
            }
            for (i, d) in (p.domains + (p.otherDomains.map { [$0] } ?? [])).enumerated() {
                let f = i < p.domains.count ? "\(name).domains[\(i)]" : "\(name).otherDomains"
                if i < p.domains.count, d.name == nil, d.uuid == nil {
                    throw ReferenceError("\(f): names no domain (set name or uuid)")
                }
                if let u = d.uuid {
                    do { _ = try VMVEventRecord.Domain.parse(uuid: u) } catch { throw ReferenceError("\(f).uuid: \(error.reason)") }
                }
                for (j, c) in (d.domainConfig ?? []).enumerated() { try c.validate("\(f).domainConfig[\(j)]") }
            }
        }
    }

    /// Keys a document kind has at its top level and in policy domain entries: a misspelt key
    /// would otherwise be ignored, and an ignored policy rule is a silent hole.
    static let topLevelKeys: [String: Set<String>] = [
        "kernel": ["schema", "kind", "id", "release", "buildId", "banner", "image", "initrd", "commandLine", "regions", "source", "generated"],
        "vmv": ["schema", "kind", "id", "version", "binary", "config", "generated"],
        "hypervisor": ["schema", "kind", "id", "subjects", "generated"],
        "policy": ["schema", "kind", "id", "platform", "domains", "otherDomains", "require", "generated"],
    ]
    static let policyDomainKeys: Set<String> = ["name", "uuid", "kernels", "domainConfig", "require"]
    static let policyPlatformKeys: Set<String> = ["vmv", "hypervisor", "xsm"]
    static let policyXSMKeys: Set<String> = ["mode", "policy"]

    private struct KeyNames: Decodable {
        var keys: [String]
        var domains: [[String]]?
        var platform: [String]?
        var xsm: [String]?
        var otherDomains: [String]?

        private struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: AnyKey.self)
            keys = c.allKeys.map(\.stringValue)
            let domainsKey = AnyKey(stringValue: "domains")
            if c.contains(domainsKey), var list = try? c.nestedUnkeyedContainer(forKey: domainsKey) {
                var all: [[String]] = []
                while !list.isAtEnd {
                    guard let entry = try? list.nestedContainer(keyedBy: AnyKey.self) else { break }
                    all.append(entry.allKeys.map(\.stringValue))
                }
                domains = all
            }
            let otherKey = AnyKey(stringValue: "otherDomains")
            if c.contains(otherKey), let o = try? c.nestedContainer(keyedBy: AnyKey.self, forKey: otherKey) {
                otherDomains = o.allKeys.map(\.stringValue)
            }
            let platformKey = AnyKey(stringValue: "platform")
            if c.contains(platformKey), let p = try? c.nestedContainer(keyedBy: AnyKey.self, forKey: platformKey) {
                platform = p.allKeys.map(\.stringValue)
                let xsmKey = AnyKey(stringValue: "xsm")
                if p.contains(xsmKey), let x = try? p.nestedContainer(keyedBy: AnyKey.self, forKey: xsmKey) {
                    xsm = x.allKeys.map(\.stringValue)
                }
            }
        }
    }

    static func rejectUnknownKeys(_ data: Data, kind: String?, name: String) throws(ReferenceError) {
        guard let kind, let allowed = topLevelKeys[kind], let names = try? JSONDecoder().decode(KeyNames.self, from: data) else { return }
        if let unknown = names.keys.filter({ !allowed.contains($0) }).sorted().first {
            throw ReferenceError("\(name): unknown key '\(unknown)' in a \(kind) document (known: \(allowed.sorted().joined(separator: ", ")))")
        }
        guard kind == "policy" else { return }
        for (i, keys) in (names.domains ?? []).enumerated() {
            if let unknown = keys.filter({ !policyDomainKeys.contains($0) }).sorted().first {
                throw ReferenceError("\(name).domains[\(i)]: unknown key '\(unknown)' (known: \(policyDomainKeys.sorted().joined(separator: ", ")))")
            }
        }
        for (field, keys, allowed) in [("platform", names.platform, policyPlatformKeys), ("platform.xsm", names.xsm, policyXSMKeys),
                                       ("otherDomains", names.otherDomains, policyDomainKeys)] {
            if let unknown = (keys ?? []).filter({ !allowed.contains($0) }).sorted().first {
                throw ReferenceError("\(name).\(field): unknown key '\(unknown)' (known: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
    }

    static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128 && id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2e || c == 0x5f || c == 0x2d || c == 0x2b
        }
    }

    /// A decoding error in words: the path of the field and what was wrong.
    public static func describe(_ error: any Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        func path(_ p: [any CodingKey]) -> String {
            p.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
        }
        switch e {
        case .keyNotFound(let key, let c): return "\(path(c.codingPath + [key])): missing"
        case .typeMismatch(let type, let c): return "\(path(c.codingPath)): expected \(type)"
        case .valueNotFound(let type, let c): return "\(path(c.codingPath)): expected \(type), found null"
        case .dataCorrupted(let c): return "\(path(c.codingPath).isEmpty ? "" : path(c.codingPath) + ": ")\(c.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}

/// `{"schema": …, "kind": …, <the body's fields>}` on the wire.
private struct Tagged<Body: Codable>: Codable {
    var kind: String
    var body: Body

    init(kind: String, body: Body) {
        self.kind = kind
        self.body = body
    }

    enum Keys: String, CodingKey { case schema, kind }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        kind = try c.decode(String.self, forKey: .kind)
        body = try Body(from: decoder)
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(ReferenceDocument.schema, forKey: .schema)
        try c.encode(kind, forKey: .kind)
        try body.encode(to: encoder)
    }
}
