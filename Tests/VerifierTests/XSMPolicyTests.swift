import Testing
import TPMWire
@testable import Verifier

/// The policy's `platform.xsm` (issue 8 item 5): the platform verdict requires the expected
/// FLASK policy in the expected mode and names the part that failed — mode or policy hash.
struct XSMPolicyTests {
    static let binary = [UInt8](repeating: 0x42, count: 32)
    static let policyHash = String(repeating: "5a", count: 32)
    static let otherHash = String(repeating: "a5", count: 32)

    static func references(mode: String = "enforcing", policy: String? = policyHash) throws -> ReferenceSet {
        try ReferenceSet(documents: [
            ("v", .vmv(VMVReference(id: "v", binary: DigestSet(["sha256": Hex.encode(binary)]), config: nil))),
            ("p", .policy(PolicyDocument(id: "p", platform: .init(xsm: .init(mode: mode, policy: policy.map { DigestSet(["sha256": $0]) }))))),
        ])
    }

    /// The platform records a VMV on a FLASK hypervisor writes: its binary, the mode, the
    /// policy's launch event (nil: left out).
    static func facts(mode: String? = "enforcing", launch: String? = "vmv-launch/1 xsm-policy sha256=\(policyHash) size=1234 file=vmv.pol",
                      launchDigest: [UInt8]? = nil, extra: [VMVEventRecord] = []) -> EpochFacts {
        var e = EpochFacts(epoch: 0)
        var seq: UInt64 = 1
        func add(_ subject: String, _ attributes: [(String, String)], kind: VMVEventRecord.Kind = .platform, digest: [UInt8]? = nil) {
            e.add(VMVEventRecord(seq: seq, epoch: 0, pcr: 15, time: 0, kind: kind, subject: subject,
                                 contentDigest: digest.map { TCGDigest(algorithm: .sha256, bytes: $0) },
                                 attributes: VMVEventRecord.Attribute.canonical(attributes)))
            seq += 1
        }
        add("/usr/sbin/vmv", [], kind: .vmvBinary, digest: binary)
        if let mode { add("xsm", [("xsm.mode", mode), ("xsm.label", "system_u:system_r:vmv_t")]) }
        if let launch {
            let digest = (try? LaunchEvent(parsing: launch))?.sha256
            add("launch.xsm-policy", [("tpm.event", launch), ("tpm.pcr", "13")], digest: launchDigest ?? digest)
        }
        for r in extra { e.add(r) }
        return e
    }

    static func platform(_ facts: EpochFacts, _ refs: ReferenceSet) -> Verdict { Appraiser(references: refs).appraisePlatform(facts) }

    @Test func expectedPolicyEnforcingIsTrusted() throws {
        let v = Self.platform(Self.facts(), try Self.references())
        #expect(v.level == .trusted, "\(v.reasons)")
        #expect(v.appraisals.filter { $0.result == .matched }.count == 3)
    }

    @Test func permissiveModeIsUntrustedAndSaysSo() throws {
        let v = Self.platform(Self.facts(mode: "permissive"), try Self.references())
        #expect(v.level == .untrusted)
        #expect(v.reasons == ["XSM mode is permissive (platform record xsm, seq 2), policy p platform.xsm requires enforcing"])
    }

    @Test func anotherPolicyIsUntrustedAndNamesBothHashes() throws {
        let v = Self.platform(Self.facts(launch: "vmv-launch/1 xsm-policy sha256=\(Self.otherHash) size=99 file=other.pol"), try Self.references())
        #expect(v.level == .untrusted)
        #expect(v.reasons.count == 1)
        #expect(v.reasons.first?.hasPrefix("XSM policy hash is sha256:\(Self.otherHash) (platform record launch.xsm-policy, seq 3)") == true)
        #expect(v.reasons.first?.contains("requires sha256:\(Self.policyHash)") == true)
    }

    @Test func bothPartsWrongGiveTwoReasons() throws {
        let v = Self.platform(Self.facts(mode: "permissive", launch: "vmv-launch/1 xsm-policy sha256=\(Self.otherHash) size=99 file=o"),
                              try Self.references())
        #expect(v.level == .untrusted)
        #expect(v.reasons.count == 2)
        #expect(v.reasons.contains { $0.hasPrefix("XSM mode is permissive") })
        #expect(v.reasons.contains { $0.hasPrefix("XSM policy hash is sha256:\(Self.otherHash)") })
    }

    @Test func aModeThatChangedWithinTheEpochIsUntrusted() throws {
        // setenforce 0, then 1 again: the epoch saw permissive, whatever the mode is now.
        let later = VMVEventRecord(seq: 9, epoch: 0, pcr: 15, time: 0, kind: .platform, subject: "xsm",
                                   attributes: VMVEventRecord.Attribute.canonical([("xsm.mode", "permissive"), ("xsm.label", "system_u:system_r:vmv_t")]))
        let v = Self.platform(Self.facts(extra: [later]), try Self.references())
        #expect(v.level == .untrusted)
        #expect(v.reasons == ["XSM mode is permissive (platform record xsm, seq 9), policy p platform.xsm requires enforcing"])
    }

    @Test func aRecordWhoseDigestAndEventDisagreeIsUntrusted() throws {
        let v = Self.platform(Self.facts(launchDigest: try Hex.decode(Self.otherHash)), try Self.references())
        #expect(v.level == .untrusted)
        #expect(v.reasons == ["XSM policy hash: platform record launch.xsm-policy, seq 3: its content digest sha256:\(Self.otherHash) differs from its launch event's sha256:\(Self.policyHash)"])
    }

    @Test func unmeasuredPartsAreUnknownAndNamed() throws {
        let v = Self.platform(Self.facts(mode: nil, launch: nil), try Self.references())
        #expect(v.level == .unknown)
        #expect(v.reasons.contains { $0.hasPrefix("XSM mode: not measured") })
        #expect(v.reasons.contains { $0.hasPrefix("XSM policy hash: not measured") && $0.contains(Self.policyHash) })
        // A mode-only requirement does not ask for the policy's launch event.
        let modeOnly = Self.platform(Self.facts(launch: nil), try Self.references(policy: nil))
        #expect(modeOnly.level == .trusted, "\(modeOnly.reasons)")
    }

    @Test func aPolicyThatFailedToLoadOrAGarbledEventIsUntrusted() throws {
        let failed = VMVEventRecord(seq: 7, epoch: 0, pcr: 15, time: 0, kind: .platform, subject: "launch.xsm-policy-load-failed",
                                    attributes: [.init("tpm.event", "vmv-launch/1 xsm-policy-load-failed")])
        let v = Self.platform(Self.facts(extra: [failed]), try Self.references())
        #expect(v.level == .untrusted)
        #expect(v.reasons == ["XSM policy: the policy measured at launch did not load (platform record launch.xsm-policy-load-failed, seq 7)"])
        for (garbled, why) in [("vmv-launch/1 xsm-policy size=1 file=x", "launch event xsm-policy.sha256: missing"),
                               ("vmv-launch/1 xsm-policy sha256=abcd size=1 file=x", "launch event xsm-policy.sha256: not 64 hex digits"),
                               ("vmv-launch/1 domp-kernel sha256=\(Self.policyHash) size=1 file=x", "its launch event is domp-kernel, not xsm-policy"),
                               ("vmv-launch/1 xsm-policy sha256=\(Self.policyHash) sha256=\(Self.policyHash) size=1 file=x", "given twice")] {
            let g = Self.platform(Self.facts(launch: garbled), try Self.references())
            #expect(g.level == .untrusted, "\(garbled)")
            #expect(g.reasons.count == 1)
            #expect(g.reasons.first?.hasPrefix("XSM policy hash: platform record launch.xsm-policy, seq 3: ") == true, "\(g.reasons)")
            #expect(g.reasons.first?.contains(why) == true, "\(g.reasons)")
        }
        let mode = Self.platform(Self.facts(mode: nil, extra: [VMVEventRecord(seq: 8, epoch: 0, pcr: 15, time: 0, kind: .platform, subject: "xsm")]),
                                 try Self.references())
        #expect(mode.level == .untrusted)
        #expect(mode.reasons.first?.hasPrefix("XSM mode: platform record xsm, seq 8: no xsm.mode attribute; policy p platform.xsm requires enforcing") == true)
    }

    @Test func withoutTheRequirementTheRecordsAreOrdinaryPlatformFacts() throws {
        let refs = try ReferenceSet(documents: [("v", .vmv(VMVReference(id: "v", binary: DigestSet(["sha256": Hex.encode(Self.binary)]), config: nil)))])
        let v = Self.platform(Self.facts(mode: "permissive"), refs)
        #expect(v.level == .unknown)
        #expect(v.reasons.contains("platform xsm: no hypervisor reference speaks for platform subject 'xsm'"))
    }

    @Test(arguments: [
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[],"platform":{"xsm":{"mode":"enforced"}}}"#, "f.json.platform.xsm.mode: 'enforced'"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[],"platform":{"xsm":{"mode":"enforcing","policy":{"sha1":"\#(String(repeating: "00", count: 20))"}}}}"#, "platform.xsm.policy: no sha256"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[],"platform":{"xsm":{"mode":"enforcing","polcy":{}}}}"#, "f.json.platform.xsm: unknown key 'polcy'"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[],"platform":{"xms":{}}}"#, "f.json.platform: unknown key 'xms'"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[],"otherDomains":{"kernel":[]}}"#, "f.json.otherDomains: unknown key 'kernel'"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[],"platform":{"xsm":{"policy":{}}}}"#, "platform.xsm.mode: missing"),
    ])
    func badXSMRequirementsAreRefusedWithTheField(json: String, expected: String) {
        #expect {
            _ = try ReferenceDocument(json: Array(json.utf8), name: "f.json")
        } throws: { error in
            (error as? ReferenceError)?.reason.contains(expected) == true
        }
    }

    @Test func theRequirementRoundTrips() throws {
        let doc = ReferenceDocument.policy(PolicyDocument(id: "p", platform: .init(vmv: ["v"], xsm: .init(mode: "enforcing", policy: DigestSet(["sha256": Self.policyHash])))))
        let again = try ReferenceDocument(json: doc.json(), name: "p")
        #expect(again == doc)
    }
}
