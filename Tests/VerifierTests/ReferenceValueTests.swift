import Foundation
import Testing
import TestSupport
import TPMWire
@testable import Verifier

/// Reference-value documents: what they accept, what they refuse and why, and how appraisal
/// reads them (matched / mismatch / unknown).
struct ReferenceValueTests {
    static let root = String(repeating: "ab", count: 32)
    static let otherRoot = String(repeating: "cd", count: 32)

    static func kernel(_ id: String, text: String = root, release: String = "6.1.0-x") -> KernelReference {
        KernelReference(id: id, release: release, regions: ["kernel.text": RegionReference(merkleRoot: text, pages: 100)], source: "learned")
    }

    static func facts(_ name: String, text: String, release: String = "6.1.0-x") -> DomainFacts {
        let region = VMVEventRecord(seq: 1, epoch: 0, pcr: 15, time: 0, kind: .memoryRegion,
                                    domain: .init(uuid: Array(repeating: 7, count: 16), id: 3, name: name), subject: "kernel.text",
                                    region: .init(virtualStart: 0xffff_ffff_8100_0000, pageSize: 4096, pageCount: 100,
                                                  merkleRoot: TCGDigest(algorithm: .sha256, bytes: (try? Hex.decode(text)) ?? [])),
                                    attributes: [.init("kernel.release", release)])
        var e = EpochFacts(epoch: 0)
        e.add(region)
        return e.domains.values.first!
    }

    @Test func documentsRoundTripThroughJSON() throws {
        for doc in [ReferenceDocument.kernel(Self.kernel("k1")),
                    .vmv(VMVReference(id: "v1", binary: DigestSet(["sha256": Self.root]), config: nil)),
                    .hypervisor(HypervisorReference(id: "h1", subjects: ["hypervisor": .init(digest: nil, attributes: ["xen.version": "4.17"])])),
                    .policy(PolicyDocument(id: "p", domains: [.init(name: "g", kernels: ["k1"])]))] {
            let again = try ReferenceDocument(json: doc.json(), name: "doc")
            #expect(again == doc)
            #expect(again.json() == doc.json())
        }
    }

    @Test(arguments: [
        (#"{"schema":"vmv-reference/v2","kind":"kernel","id":"k"}"#, "schema is 'vmv-reference/v2'"),
        (#"{"schema":"vmv-reference/v1","kind":"firmware","id":"k"}"#, "kind is 'firmware'"),
        (#"{"schema":"vmv-reference/v1","kind":"kernel","id":"k","regions":{},"source":"x","imgae":{}}"#, "unknown key 'imgae'"),
        (#"{"schema":"vmv-reference/v1","kind":"kernel","id":"k","regions":{},"source":"x"}"#, "needs an image digest or at least one region"),
        (#"{"schema":"vmv-reference/v1","kind":"kernel","id":"k","regions":{},"source":"x","image":{"sha256":"abcd"}}"#, "2 bytes, a sha256 digest has 32"),
        (#"{"schema":"vmv-reference/v1","kind":"kernel","id":"k","regions":{},"source":"x","image":{"md5":"abcd"}}"#, "not a hash algorithm"),
        (#"{"schema":"vmv-reference/v1","kind":"kernel","id":"a b","regions":{"kernel.text":{"pages":1}},"source":"x"}"#, "is not an id"),
        (#"{"schema":"vmv-reference/v1","kind":"kernel","id":"k","regions":{"kernel.text":{"pages":0}},"source":"x"}"#, "pages: 0"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[{"kernels":[]}]}"#, "names no domain"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[{"name":"g","kernel":["k"]}]}"#, "unknown key 'kernel'"),
        (#"{"schema":"vmv-reference/v1","kind":"policy","id":"p","domains":[{"name":"g","uuid":"nope","kernels":[]}]}"#, "uuid"),
        (#"{"schema":"vmv-reference/v1","kind":"vmv","id":"v"}"#, "needs binary or config"),
        (#"[1,2]"#, "not a JSON object"),
        (#"{"schema":"vmv-reference/v1","kind":"kernel","id":"k","regions":{"kernel.text":{"pages":"many"}},"source":"x"}"#, "regions.kernel.text.pages"),
    ])
    func badDocumentsAreRefusedWithTheField(json: String, expected: String) {
        #expect {
            _ = try ReferenceDocument(json: Array(json.utf8), name: "f.json")
        } throws: { error in
            let reason = (error as? ReferenceError)?.reason ?? ""
            return reason.hasPrefix("f.json") && reason.contains(expected)
        }
    }

    @Test func aDirectoryRefusesDuplicateIdsAndDanglingPolicyIds() throws {
        #expect(throws: ReferenceError.self) {
            _ = try ReferenceSet(documents: [("a", .kernel(Self.kernel("k"))), ("b", .kernel(Self.kernel("k")))])
        }
        #expect {
            _ = try ReferenceSet(documents: [("p", .policy(PolicyDocument(id: "p", domains: [.init(name: "g", kernels: ["missing"])])))])
        } throws: { ($0 as? ReferenceError)?.reason.contains("no kernel reference with id 'missing'") == true }
    }

    @Test func openPolicyComparesOnlyWithAnIdentifiedKernel() throws {
        let refs = try ReferenceSet(documents: [("k", .kernel(Self.kernel("k")))])
        let appraiser = Appraiser(references: refs)
        #expect(appraiser.appraise(Self.facts("g", text: Self.root)).verdict.level == .trusted)
        // Same release (so the same kernel), other text: a mismatch naming both roots.
        let patched = appraiser.appraise(Self.facts("g", text: Self.otherRoot)).verdict
        #expect(patched.level == .untrusted)
        #expect(patched.reasons.first?.contains(Self.root) == true && patched.reasons.first?.contains(Self.otherRoot) == true)
        // Another release and other text: nothing identifies the kernel, nothing speaks for it.
        let foreign = appraiser.appraise(Self.facts("g", text: Self.otherRoot, release: "5.10.0")).verdict
        #expect(foreign.level == .unknown)
    }

    @Test func namedPolicyEntryMakesAnyOtherValueAMismatch() throws {
        let refs = try ReferenceSet(documents: [
            ("k", .kernel(Self.kernel("k"))), ("k2", .kernel(Self.kernel("k2", text: String(repeating: "ef", count: 32), release: "5.10"))),
            ("p", .policy(PolicyDocument(id: "p", domains: [.init(name: "web", kernels: ["k2"])]))),
        ])
        let appraiser = Appraiser(references: refs)
        // web must run k2; it runs k: untrusted, even though k is a known kernel.
        #expect(appraiser.appraise(Self.facts("web", text: Self.root)).verdict.level == .untrusted)
        // A domain the policy does not name, and no otherDomains: unknown.
        let other = appraiser.appraise(Self.facts("db", text: Self.root)).verdict
        #expect(other.level == .unknown)
        #expect(other.reasons.contains { $0.contains("no entry for domain db") })
    }

    @Test func requiredSubjectsMustBeMeasured() throws {
        let refs = try ReferenceSet(documents: [("k", .kernel(Self.kernel("k"))),
                                                ("p", .policy(PolicyDocument(id: "p", otherDomains: .init(kernels: ["k"]),
                                                                             require: ["kernel.text", "kernel.rodata"])))])
        let v = Appraiser(references: refs).appraise(Self.facts("g", text: Self.root)).verdict
        #expect(v.level == .unknown)
        #expect(v.reasons.contains("not measured yet: kernel.rodata"))
    }

    @Test func aNewIncarnationForgetsWhatTheOldOneMeasured() {
        let domain = VMVEventRecord.Domain(uuid: Array(repeating: 9, count: 16), id: 4, name: "g")
        var e = EpochFacts(epoch: 0)
        e.add(VMVEventRecord(seq: 1, epoch: 0, pcr: 15, time: 0, kind: .kernelImage, domain: domain, subject: "/boot/a",
                             contentDigest: TCGDigest(algorithm: .sha256, bytes: Array(repeating: 1, count: 32))))
        e.add(VMVEventRecord(seq: 2, epoch: 0, pcr: 15, time: 0, kind: .domainStop, domain: domain))
        #expect(e.domains.values.first?.running == false)
        e.add(VMVEventRecord(seq: 3, epoch: 0, pcr: 15, time: 0, kind: .domainStart, domain: domain))
        #expect(e.domains.values.first?.facts.isEmpty == true)
        #expect(e.domains.values.first?.running == true)
        #expect(e.domains.values.first?.startedAt == 3)
    }

    @Test func hostStateIsWrittenAtomicallyAndReadBack() async throws {
        let dir = try TemporaryDirectory.make(prefix: "vmv-state-store").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = JSONFileHostStateStore(directory: dir)
        #expect(try await store.load(host: "h:1") == nil)
        let state = HostState(host: "h:1", akName: "000b", clock: 5, resetCount: 1, restartCount: 0, epoch: 2, nextSeq: 9, pcr: 15,
                              pcrs: ["sha256": String(repeating: "00", count: 32)], facts: EpochFacts(epoch: 2), verdictAt: "t", platform: .trusted)
        try await store.save(state)
        #expect(try await store.load(host: "h:1") == state)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["h_1.json"])   // no temporary left
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: store.path(host: "h:1")))
        await #expect(throws: EvidenceError.self) { _ = try await store.load(host: "h:1") }
    }
}
