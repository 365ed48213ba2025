import FoundationEssentials
import TPMWire

/// The reference values of one directory (`--refs DIR`): every `*.json` document in it, checked,
/// ids unique per kind, at most one policy, and every id the policy names present.
public struct ReferenceSet: Sendable {
    public private(set) var kernels: [String: KernelReference] = [:]
    public private(set) var vmvs: [String: VMVReference] = [:]
    public private(set) var hypervisors: [String: HypervisorReference] = [:]
    public private(set) var policy: PolicyDocument?
    /// File name of each document, by "kind/id", for messages.
    public private(set) var files: [String: String] = [:]

    public init() {}

    public init(documents: [(name: String, document: ReferenceDocument)]) throws(ReferenceError) {
        for (name, document) in documents { try add(document, name: name) }
        try checkPolicyReferences()
    }

    /// Loads every `*.json` file of `directory` (not recursively; other files are ignored).
    public init(directory: String) throws(ReferenceError) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }.sorted()
        } catch {
            throw ReferenceError("\(directory): cannot list the reference directory: \(error)")
        }
        var documents: [(String, ReferenceDocument)] = []
        for name in names {
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ReferenceError("\(path): cannot read")
            }
            guard data.count <= Self.maxDocumentSize else {
                throw ReferenceError("\(path): \(data.count) bytes, a reference document has at most \(Self.maxDocumentSize)")
            }
            documents.append((path, try ReferenceDocument(json: Array(data), name: path)))
        }
        try self.init(documents: documents)
    }

    public static let maxDocumentSize = 4 << 20

    public var isEmpty: Bool { kernels.isEmpty && vmvs.isEmpty && hypervisors.isEmpty && policy == nil }
    public var count: Int { kernels.count + vmvs.count + hypervisors.count + (policy == nil ? 0 : 1) }

    public mutating func add(_ document: ReferenceDocument, name: String) throws(ReferenceError) {
        let key = "\(document.kind)/\(document.id)"
        if let other = files[key] {
            throw ReferenceError("\(name): \(document.kind) id '\(document.id)' is already defined in \(other)")
        }
        switch document {
        case .kernel(let k): kernels[k.id] = k
        case .vmv(let v): vmvs[v.id] = v
        case .hypervisor(let h): hypervisors[h.id] = h
        case .policy(let p):
            if let existing = policy {
                throw ReferenceError("\(name): a second policy ('\(p.id)'); \(files["policy/\(existing.id)"] ?? "another file") is the policy already")
            }
            policy = p
        }
        files[key] = name
    }

    func checkPolicyReferences() throws(ReferenceError) {
        guard let policy else { return }
        let name = files["policy/\(policy.id)"] ?? "policy"
        for id in policy.platform?.vmv ?? [] where vmvs[id] == nil {
            throw ReferenceError("\(name).platform.vmv: no vmv reference with id '\(id)'")
        }
        for id in policy.platform?.hypervisor ?? [] where hypervisors[id] == nil {
            throw ReferenceError("\(name).platform.hypervisor: no hypervisor reference with id '\(id)'")
        }
        for (i, d) in policy.domains.enumerated() {
            for id in d.kernels where kernels[id] == nil {
                throw ReferenceError("\(name).domains[\(i)].kernels: no kernel reference with id '\(id)'")
            }
        }
        for id in policy.otherDomains?.kernels ?? [] where kernels[id] == nil {
            throw ReferenceError("\(name).otherDomains.kernels: no kernel reference with id '\(id)'")
        }
    }

    // MARK: What applies where

    /// The vmv references the platform may run (all of them without a policy, sorted by id).
    public var allowedVMVs: [VMVReference] {
        let ids = policy?.platform?.vmv ?? vmvs.keys.sorted()
        return ids.compactMap { vmvs[$0] }
    }

    public var allowedHypervisors: [HypervisorReference] {
        let ids = policy?.platform?.hypervisor ?? hypervisors.keys.sorted()
        return ids.compactMap { hypervisors[$0] }
    }

    /// What the policy says for a domain: the entry naming it (name and/or UUID), else
    /// `otherDomains`; without a policy, every kernel. Nil: nothing applies to the domain.
    public func rules(forDomainNamed name: String?, uuid: String) -> DomainRules? {
        guard let policy else {
            return DomainRules(entry: nil, named: false, kernels: kernels.keys.sorted().compactMap { kernels[$0] }, domainConfig: nil,
                               require: PolicyDocument.defaultRequire)
        }
        let named = policy.domains.first { d in
            (d.name == nil || d.name == name) && (d.uuid == nil || Self.sameUUID(d.uuid, uuid))
        }
        guard let entry = named ?? policy.otherDomains else { return nil }
        return DomainRules(entry: entry, named: named != nil, kernels: entry.kernels.compactMap { kernels[$0] }, domainConfig: entry.domainConfig,
                           require: entry.require ?? policy.require ?? PolicyDocument.defaultRequire)
    }

    static func sameUUID(_ a: String?, _ b: String) -> Bool {
        guard let a, let x = try? VMVEventRecord.Domain.parse(uuid: a), let y = try? VMVEventRecord.Domain.parse(uuid: b) else { return false }
        return x == y
    }
}

/// The references that apply to one domain.
public struct DomainRules: Sendable {
    /// The policy entry that named the domain (nil without a policy).
    public let entry: PolicyDocument.Domain?
    /// True when a policy entry names this domain: its kernels are the ones it must run, and a
    /// different value is a mismatch. Otherwise (no policy, or otherDomains) the kernels are
    /// the ones it may run, and a value is compared only with a kernel its other measurements
    /// identify.
    public let named: Bool
    public let kernels: [KernelReference]
    public let domainConfig: [DigestSet]?
    public let require: [String]
}
