import TPMWire

/// A verdict's three values. Unknown is never trusted: it means nothing spoke for something.
public enum TrustLevel: String, Codable, Hashable, Sendable, Comparable {
    case trusted, unknown, untrusted

    /// untrusted > unknown > trusted: combining takes the worst.
    public static func < (a: TrustLevel, b: TrustLevel) -> Bool { a.rank < b.rank }
    var rank: Int { switch self { case .trusted: 0; case .unknown: 1; case .untrusted: 2 } }
}

/// What appraisal said about one fact.
public struct FactAppraisal: Codable, Hashable, Sendable {
    public enum Result: String, Codable, Hashable, Sendable {
        /// A reference that applies has exactly this value.
        case matched
        /// References for this subject apply, and none has this value.
        case mismatch
        /// No reference that applies speaks for this subject.
        case unknown
    }

    public var fact: MeasuredFact
    public var result: Result
    /// The references that matched (matched), or that were compared (mismatch).
    public var references: [String]
    /// For a mismatch: the values the references have.
    public var expected: [String]
    public var reason: String
}

/// The verdict on the platform or on one VM, with every reason.
public struct Verdict: Codable, Hashable, Sendable {
    public var level: TrustLevel
    public var reasons: [String]
    public var appraisals: [FactAppraisal]

    public init(level: TrustLevel, reasons: [String], appraisals: [FactAppraisal] = []) {
        self.level = level
        self.reasons = reasons
        self.appraisals = appraisals
    }
}

public struct DomainVerdict: Codable, Hashable, Sendable {
    public var uuid: String
    public var name: String?
    public var domid: UInt32?
    public var running: Bool
    public var verdict: Verdict
}

/// Appraises an epoch's facts against reference values (docs/verification.md, "Appraisal"):
/// - a fact whose subject has a reference that applies with the same value is matched;
/// - a fact whose subject has references that apply, none with its value, is a mismatch
///   (untrusted, naming both values);
/// - a fact nothing speaks for is unknown, never trusted.
/// A VM is trusted only if every fact matched, the subjects its policy requires were measured,
/// and its matched kernel facts agree on one kernel reference; untrusted if any fact mismatched.
public struct Appraiser: Sendable {
    public let references: ReferenceSet

    public init(references: ReferenceSet) {
        self.references = references
    }

    // MARK: Platform

    /// The VMV's own records and the platform's. (The epoch's start and the evidence checks
    /// are judged by the attestation; this covers what the records measured.)
    public func appraisePlatform(_ facts: EpochFacts) -> Verdict {
        let xsm = references.policy?.platform?.xsm
        var appraisals: [FactAppraisal] = []
        for fact in facts.platform {
            appraisals.append(xsm.flatMap { appraiseXSMFact(fact, $0) } ?? appraisePlatformFact(fact))
        }
        var verdict = combine(appraisals, subject: "platform")
        if let xsm {
            for reason in missingXSMFacts(facts.platform, xsm) {
                verdict.level = max(verdict.level, .unknown)
                verdict.reasons.append(reason)
            }
        }
        for anomaly in facts.anomalies {
            verdict.level = .untrusted
            verdict.reasons.append(anomaly)
        }
        if !facts.platform.contains(where: { $0.kind == VMVEventRecord.Kind.vmvBinary.name }) {
            verdict.level = max(verdict.level, .unknown)
            verdict.reasons.append("the log has no measurement of the VMV binary")
        }
        return verdict
    }

    func appraisePlatformFact(_ fact: MeasuredFact) -> FactAppraisal {
        switch fact.kind {
        case VMVEventRecord.Kind.vmvBinary.name:
            return byDigest(fact, candidates: references.allowedVMVs.compactMap { v in v.binary.map { (v.id, $0) } },
                            what: "vmv binary")
        case VMVEventRecord.Kind.vmvConfig.name:
            return byDigest(fact, candidates: references.allowedVMVs.compactMap { v in v.config.map { (v.id, $0) } },
                            what: "vmv configuration")
        case VMVEventRecord.Kind.platform.name:
            guard let subject = fact.subject else { return unknown(fact, "a platform record without a subject") }
            let candidates = references.allowedHypervisors.compactMap { h in h.subjects[subject].map { (h.id, $0) } }
            guard !candidates.isEmpty else {
                return unknown(fact, "no hypervisor reference speaks for platform subject '\(subject)'")
            }
            var expected: [String] = []
            for (id, e) in candidates {
                if Self.platformMatches(fact, e) {
                    return FactAppraisal(fact: fact, result: .matched, references: [id], expected: [], reason: "\(fact.label) matches \(id)")
                }
                expected.append(Self.describe(e))
            }
            return mismatch(fact, candidates.map(\.0), expected)
        default:
            return unknown(fact, "a \(fact.kind) record outside any domain")
        }
    }

    // MARK: XSM (policy platform.xsm)

    /// The platform record with the FLASK mode (attribute `xsm.mode`).
    public static let xsmSubject = "xsm"
    public static let xsmModeAttribute = "xsm.mode"
    /// The platform records of the policy's launch event (`vmv-launch/1 xsm-policy sha256=… size=…
    /// file=…` in attribute `tpm.event`, `LaunchEvent`), and of a policy measured but not loaded.
    public static let xsmPolicySubject = "launch." + LaunchEvent.Kind.xsmPolicy.rawValue
    public static let xsmPolicyLoadFailedSubject = "launch." + LaunchEvent.Kind.xsmPolicyLoadFailed.rawValue

    var xsmPolicyName: String { "policy \(references.policy?.id ?? "?") platform.xsm" }

    /// The XSM rule's appraisal of a platform fact it speaks for; nil for other facts. Every
    /// reason starts with the part that is judged: "XSM mode" or "XSM policy hash".
    func appraiseXSMFact(_ fact: MeasuredFact, _ xsm: PolicyDocument.XSMRequirement) -> FactAppraisal? {
        let at = "platform record \(fact.subject ?? "-"), seq \(fact.firstSeq)\(fact.lastSeq != fact.firstSeq ? "–\(fact.lastSeq)" : "")"
        func judged(_ ok: Bool, _ expected: String, _ reason: String) -> FactAppraisal {
            FactAppraisal(fact: fact, result: ok ? .matched : .mismatch, references: [xsmPolicyName], expected: ok ? [] : [expected], reason: reason)
        }
        guard fact.kind == VMVEventRecord.Kind.platform.name else { return nil }
        switch fact.subject {
        case Self.xsmSubject:
            guard let mode = fact.attributes[Self.xsmModeAttribute] else {
                return judged(false, xsm.mode, "XSM mode: \(at): no \(Self.xsmModeAttribute) attribute; \(xsmPolicyName) requires \(xsm.mode)")
            }
            return mode == xsm.mode
                ? judged(true, xsm.mode, "XSM mode is \(mode) (\(at))")
                : judged(false, xsm.mode, "XSM mode is \(mode) (\(at)), \(xsmPolicyName) requires \(xsm.mode)")
        case Self.xsmPolicySubject:
            guard let want = xsm.policy?.values["sha256"] else { return nil }
            let event: LaunchEvent
            do {
                event = try LaunchEvent(parsing: fact.attributes[LaunchEvent.recordAttribute] ?? "")
            } catch {
                return judged(false, "sha256:\(want)", "XSM policy hash: \(at): its \(LaunchEvent.recordAttribute) attribute is not a launch event: \(error.reason); \(xsmPolicyName) requires sha256:\(want)")
            }
            guard event.kind == .xsmPolicy, let digest = event.sha256 else {
                return judged(false, "sha256:\(want)", "XSM policy hash: \(at): its launch event is \(event.kind.rawValue), not xsm-policy; \(xsmPolicyName) requires sha256:\(want)")
            }
            let have = Hex.encode(digest)
            // The record's content digest is the policy's SHA-256 too (XSMMeasurements): two
            // values in one record that disagree are a VMV fault, not a policy to compare.
            if let recorded = fact.digest?.values["sha256"], recorded.lowercased() != have {
                return judged(false, "sha256:\(want)", "XSM policy hash: \(at): its content digest sha256:\(recorded) differs from its launch event's sha256:\(have)")
            }
            return constantTimeEqual(Array(have.utf8), Array(want.lowercased().utf8))
                ? judged(true, "sha256:\(want)", "XSM policy hash is sha256:\(have) (\(at))")
                : judged(false, "sha256:\(want)", "XSM policy hash is sha256:\(have) (\(at)), \(xsmPolicyName) requires sha256:\(want): another policy is loaded")
        case Self.xsmPolicyLoadFailedSubject:
            return judged(false, "a loaded policy", "XSM policy: the policy measured at launch did not load (\(at))")
        default:
            return nil
        }
    }

    /// Reasons for what the XSM rule needs and the log does not have.
    func missingXSMFacts(_ platform: [MeasuredFact], _ xsm: PolicyDocument.XSMRequirement) -> [String] {
        var out: [String] = []
        let platformRecords = platform.filter { $0.kind == VMVEventRecord.Kind.platform.name }
        if !platformRecords.contains(where: { $0.subject == Self.xsmSubject }) {
            out.append("XSM mode: not measured (no platform record '\(Self.xsmSubject)' with attribute \(Self.xsmModeAttribute)); \(xsmPolicyName) requires \(xsm.mode)")
        }
        if let want = xsm.policy?.values["sha256"], !platformRecords.contains(where: { $0.subject == Self.xsmPolicySubject }) {
            out.append("XSM policy hash: not measured (no platform record '\(Self.xsmPolicySubject)'); \(xsmPolicyName) requires sha256:\(want)")
        }
        return out
    }

    static func platformMatches(_ fact: MeasuredFact, _ e: PlatformExpectation) -> Bool {
        if let want = e.digest {
            guard let have = fact.digest, digestsMatch(have, want) else { return false }
        }
        for (k, v) in e.attributes ?? [:] where fact.attributes[k] != v { return false }
        return true
    }

    static func describe(_ e: PlatformExpectation) -> String {
        var parts: [String] = []
        if let d = e.digest { parts += d.values.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" } }
        parts += (e.attributes ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return parts.joined(separator: ", ")
    }

    // MARK: Domains

    public func appraise(_ domain: DomainFacts) -> DomainVerdict {
        DomainVerdict(uuid: domain.uuid, name: domain.name, domid: domain.domid, running: domain.running,
                      verdict: appraiseDomain(domain))
    }

    func appraiseDomain(_ domain: DomainFacts) -> Verdict {
        guard let applicable = references.rules(forDomainNamed: domain.name, uuid: domain.uuid) else {
            let appraisals = domain.facts.map { unknown($0, "the policy names no kernels for domain \(domain.displayName)") }
            return Verdict(level: .unknown, reasons: ["the policy has no entry for domain \(domain.displayName) and no otherDomains"],
                           appraisals: appraisals)
        }
        var rules = applicable
        if !rules.named {
            // Which of the kernels it may run is it running? Those that one of its measurements
            // (a region root, the image, the release) identifies; its other measurements are
            // compared with these. A kernel nothing identifies is not known: unknown, not a mismatch.
            let identified = rules.kernels.filter { k in domain.facts.contains { Self.identifies(k, $0) } }
            rules = DomainRules(entry: rules.entry, named: false, kernels: identified, domainConfig: rules.domainConfig, require: rules.require)
        }
        let appraisals = domain.facts.map { appraiseDomainFact($0, rules: rules) }
        var verdict = combine(appraisals, subject: domain.displayName)
        // Measured at all?
        let measured = Set(domain.facts.compactMap(\.subject))
        let missing = rules.require.filter { !measured.contains($0) }
        if !missing.isEmpty {
            verdict.level = max(verdict.level, .unknown)
            verdict.reasons.append("not measured yet: \(missing.joined(separator: ", "))")
        }
        // One kernel: facts that matched kernel references must share at least one.
        let kernelMatches = appraisals.filter { $0.result == .matched && Self.kernelKinds.contains($0.fact.kind) }
        if let first = kernelMatches.first {
            var common = Set(first.references)
            for a in kernelMatches.dropFirst() { common.formIntersection(a.references) }
            if common.isEmpty {
                verdict.level = .untrusted
                verdict.reasons.append("its measurements match different kernels: "
                    + kernelMatches.map { "\($0.fact.label) → \($0.references.joined(separator: "|"))" }.joined(separator: "; "))
            }
        }
        return verdict
    }

    /// Whether a measurement says the domain runs kernel `k`: an equal region root or image
    /// digest, or the same release.
    static func identifies(_ k: KernelReference, _ f: MeasuredFact) -> Bool {
        if let release = k.release, let r = f.attributes["kernel.release"] ?? f.attributes["release"], r == release { return true }
        switch f.kind {
        case VMVEventRecord.Kind.memoryRegion.name:
            guard let s = f.subject, let root = f.merkleRoot, let want = k.regions[s]?.merkleRoot else { return false }
            return want.lowercased() == root.lowercased() && k.regions[s]?.pages == f.pages
        case VMVEventRecord.Kind.kernelImage.name:
            guard let have = f.digest, let want = k.image else { return false }
            return digestsMatch(have, want)
        default:
            return false
        }
    }

    static let kernelKinds: Set<String> = [
        VMVEventRecord.Kind.memoryRegion.name, VMVEventRecord.Kind.kernelImage.name,
        VMVEventRecord.Kind.initrd.name, VMVEventRecord.Kind.commandLine.name,
    ]

    func appraiseDomainFact(_ fact: MeasuredFact, rules: DomainRules) -> FactAppraisal {
        let kernels = rules.kernels
        switch fact.kind {
        case VMVEventRecord.Kind.memoryRegion.name:
            guard let subject = fact.subject, let root = fact.merkleRoot else { return unknown(fact, "a memory region without subject or root") }
            let candidates = kernels.compactMap { k in k.regions[subject].map { (k.id, $0) } }
            guard !candidates.isEmpty else {
                return unknown(fact, rules.named || !rules.kernels.isEmpty ? "no kernel reference that applies has a value for \(subject)"
                                                    : "no kernel reference matches any measurement of this domain (a kernel without reference values)")
            }
            let matched = candidates.filter { _, r in
                r.merkleRoot.map { constantTimeEqual(Array($0.lowercased().utf8), Array(root.lowercased().utf8)) } == true && r.pages == fact.pages
            }
            if !matched.isEmpty {
                return FactAppraisal(fact: fact, result: .matched, references: matched.map(\.0), expected: [],
                                     reason: "\(subject) matches \(matched.map(\.0).joined(separator: ", "))")
            }
            // A reference with the same page count but no root (from the image alone) cannot
            // say yes or no: the guest may run that kernel.
            let undecided = candidates.filter { $0.1.merkleRoot == nil && $0.1.pages == fact.pages }
            if !undecided.isEmpty {
                return unknown(fact, "\(undecided.map(\.0).joined(separator: ", ")) has the same page count but no run-time root (learn one from a known-good guest)")
            }
            return mismatch(fact, candidates.map(\.0), candidates.map { "\($0.1.merkleRoot.map { "root \($0)" } ?? "no root") (\($0.1.pages) pages)" })
        case VMVEventRecord.Kind.kernelImage.name:
            return byDigest(fact, candidates: kernels.compactMap { k in k.image.map { (k.id, $0) } }, what: "kernel image")
        case VMVEventRecord.Kind.initrd.name:
            return byDigest(fact, candidates: kernels.compactMap { k in k.initrd.map { (k.id, $0) } }, what: "initrd")
        case VMVEventRecord.Kind.commandLine.name:
            return byDigest(fact, candidates: kernels.compactMap { k in k.commandLine.map { (k.id, $0) } }, what: "command line")
        case VMVEventRecord.Kind.domainConfig.name:
            let id = rules.entry.map { "policy domain \($0.name ?? $0.uuid ?? "?")" } ?? "policy"
            return byDigest(fact, candidates: (rules.domainConfig ?? []).map { (id, $0) }, what: "domain configuration")
        default:
            return unknown(fact, "no reference kind speaks for \(fact.kind) records")
        }
    }

    // MARK: Helpers

    /// Matched when a candidate has the fact's digest in the fact's algorithm; unknown when no
    /// candidate has a digest in that algorithm; otherwise a mismatch.
    func byDigest(_ fact: MeasuredFact, candidates: [(String, DigestSet)], what: String) -> FactAppraisal {
        guard let have = fact.digest, let (algName, _) = have.values.first else {
            return unknown(fact, "the \(what) record has no content digest")
        }
        let comparable = candidates.filter { $0.1.values[algName] != nil }
        guard !comparable.isEmpty else {
            let others = candidates.isEmpty ? "no reference that applies has a \(what) digest"
                : "the references that apply have no \(algName) digest of the \(what)"
            return unknown(fact, others)
        }
        let matched = comparable.filter { Self.digestsMatch(have, $0.1) }
        if !matched.isEmpty {
            return FactAppraisal(fact: fact, result: .matched, references: matched.map(\.0), expected: [],
                                 reason: "\(fact.label) matches \(matched.map(\.0).joined(separator: ", "))")
        }
        return mismatch(fact, comparable.map(\.0), comparable.compactMap { c in c.1.values[algName].map { "\(algName):\($0)" } })
    }

    /// Equal in the algorithm the fact uses (constant time; hex case ignored).
    static func digestsMatch(_ have: DigestSet, _ want: DigestSet) -> Bool {
        guard let (alg, hex) = have.values.first, let other = want.values[alg] else { return false }
        return constantTimeEqual(Array(hex.lowercased().utf8), Array(other.lowercased().utf8))
    }

    func unknown(_ fact: MeasuredFact, _ reason: String) -> FactAppraisal {
        FactAppraisal(fact: fact, result: .unknown, references: [], expected: [], reason: "\(fact.label): \(reason)")
    }

    func mismatch(_ fact: MeasuredFact, _ ids: [String], _ expected: [String]) -> FactAppraisal {
        FactAppraisal(fact: fact, result: .mismatch, references: ids, expected: expected,
                      reason: "\(fact.label) is \(fact.valueDescription) (seq \(fact.firstSeq)\(fact.lastSeq != fact.firstSeq ? "–\(fact.lastSeq)" : "")), "
                        + "expected \(expected.joined(separator: " or ")) (\(ids.joined(separator: ", ")))")
    }

    /// Worst of the facts, with a reason for every fact that is not matched.
    func combine(_ appraisals: [FactAppraisal], subject: String) -> Verdict {
        var level = TrustLevel.trusted
        var reasons: [String] = []
        for a in appraisals {
            switch a.result {
            case .matched: break
            case .mismatch: level = .untrusted; reasons.append(a.reason)
            case .unknown: level = max(level, .unknown); reasons.append(a.reason)
            }
        }
        return Verdict(level: level, reasons: reasons, appraisals: appraisals)
    }
}
