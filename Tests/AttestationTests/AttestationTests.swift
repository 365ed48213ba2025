import Foundation
import Introspection
import NIOSSL
import TestSupport
import Testing
import TPMWire
import Verifier
import VerifierClient
import VMV

/// The verifier's checks and appraisal against evidence the real stack makes: a swtpm through
/// the TPM actor, the measurement engine and its log store (RealStack.swift).
@Suite(.serialized)
struct AttestationTests {
    /// Runs `body` with a host, and stops it (swtpm included) on every path.
    func withHost(fresh: Bool = false, _ body: (RealStackHost) async throws -> Void) async throws {
        let host = try await RealStackHost.start(fresh: fresh)
        do { try await body(host) } catch {
            await host.stop()
            throw error
        }
        await host.stop()
    }

    /// Learns references from a first attestation of a known-good host (two guests), as an
    /// operator would with `refs learn`, and returns the verifier with them.
    static func knownGood(_ host: RealStackHost) async throws -> TestVerifier {
        try await host.measurePlatform()
        try await host.measureGuest("guest1", kernel: "6.1.0-a")
        try await host.measureGuest("guest2", kernel: "6.1.0-b")
        var verifier = TestVerifier(pin: host.pin)
        let (first, _) = try await verifier.attest(host)
        #expect(first.failedChecks.isEmpty, "\(first.failedChecks)")
        // Nothing speaks for anything yet: unknown, never trusted.
        #expect(first.platform.level == .unknown)
        #expect(first.verdict("guest1")?.verdict.level == .unknown)
        #expect(!first.trusted)
        let facts = try #require(verifier.state?.facts)
        var documents: [(name: String, document: ReferenceDocument)] = []
        for name in ["guest1", "guest2"] {
            let domain = try #require(facts.domains.values.first { $0.name == name })
            documents.append((name, .kernel(try ReferenceLearning.kernel(learnedFrom: domain, evidence: [:], id: "kernel-\(name)"))))
        }
        let (vmv, hypervisor) = ReferenceLearning.platform(learnedFrom: facts, evidence: [:])
        documents.append(("vmv", .vmv(try #require(vmv))))
        documents.append(("hypervisor", .hypervisor(try #require(hypervisor))))
        verifier.references = try ReferenceSet(documents: documents)
        return verifier
    }

    @Test func knownGoodHostIsTrustedAndReplaysIncrementally() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            let before = try #require(verifier.state)

            // Measured again, same roots: the next attestation replays only the new records.
            try await host.measureRegion("guest1", "kernel.text", root: "text 6.1.0-a", release: "6.1.0-a")
            let (report, response) = try await verifier.attest(host)
            #expect(report.failedChecks.isEmpty, "\(report.failedChecks)")
            #expect(report.evidence.replay == "incremental")
            #expect(response.log?.since == before.nextSeq)
            #expect(report.evidence.records == 1)
            #expect(report.platform.level == .trusted, "\(report.platform.reasons)")
            #expect(report.verdict("guest1")?.verdict.level == .trusted)
            #expect(report.verdict("guest2")?.verdict.level == .trusted)
            #expect(report.trusted)
            let after = try #require(verifier.state)
            #expect(after.nextSeq == before.nextSeq + 1)
            #expect(after.clock >= before.clock)
        }
    }

    @Test func vmWithoutReferenceIsUnknownNotTrusted() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            try await host.measureGuest("guest3", kernel: "6.1.0-c")
            let (report, _) = try await verifier.attest(host)
            #expect(report.failedChecks.isEmpty)
            #expect(report.platform.level == .trusted)
            #expect(report.verdict("guest1")?.verdict.level == .trusted)
            let g3 = try #require(report.verdict("guest3"))
            #expect(g3.verdict.level == .unknown)
            #expect(g3.verdict.reasons.contains { $0.contains("kernel.text") })
            #expect(!report.trusted)
            // Asking only about the others: trusted.
            verifier.requested = ["guest1", "guest2"]
            let (again, _) = try await verifier.attest(host)
            #expect(again.trusted)
        }
    }

    @Test func changedKernelTextIsUntrustedWithBothValues() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            try await host.measureRegion("guest2", "kernel.text", root: "text 6.1.0-b with a patched page", release: "6.1.0-b")
            let (report, _) = try await verifier.attest(host)
            #expect(report.failedChecks.isEmpty)
            #expect(report.verdict("guest1")?.verdict.level == .trusted)
            let g2 = try #require(report.verdict("guest2"))
            #expect(g2.verdict.level == .untrusted)
            let reason = try #require(g2.verdict.reasons.first)
            let expected = try #require(verifier.references.kernels["kernel-guest2"]?.regions["kernel.text"]?.merkleRoot)
            #expect(reason.contains(expected))
            #expect(reason.contains("kernel.text is root"))
            #expect(!report.trusted)
        }
    }

    @Test func replayedOldAnswerIsRejectedByTheNonce() async throws {
        try await withHost { host in
            let verifier = try await Self.knownGood(host)
            let old = try await host.answer(nonces: [TestVerifier.nonce()])
            // A later attestation with a fresh nonce receives the old answer.
            let (report, state) = await AttestationVerifier().verify(old, context: verifier.context(nonce: TestVerifier.nonce(), tlsKeyHash: host.tlsKeyHash))
            #expect(report.rules.contains("binding"))
            #expect(report.platform.level == .untrusted)
            #expect(!report.trusted)
            #expect(state == nil)
        }
    }

    @Test func quoteBoundToAnotherTLSKeyIsRejected() async throws {
        try await withHost { host in
            let verifier = try await Self.knownGood(host)
            let nonce = TestVerifier.nonce()
            // The genuine host answered a relay, whose TLS key the verifier saw.
            let answer = try await host.answer(nonces: [nonce])
            let relayKey = Array(repeating: UInt8(0x42), count: 32)
            let (report, _) = await AttestationVerifier().verify(answer, context: verifier.context(nonce: nonce, tlsKeyHash: relayKey))
            #expect(report.rules.contains("binding"))
            #expect(report.failedChecks.contains { $0.reason.contains("relayed") })
            #expect(!report.trusted)
        }
    }

    @Test func batchedQuoteVerifiesAtEveryLeaf() async throws {
        try await withHost { host in
            let verifier = try await Self.knownGood(host)
            let nonces = (0..<5).map { _ in TestVerifier.nonce() }
            for i in [0, 3, 4] {
                let answer = try await host.answer(nonces: nonces, index: i)
                let (ok, _) = await AttestationVerifier().verify(answer, context: verifier.context(nonce: nonces[i], tlsKeyHash: host.tlsKeyHash))
                #expect(ok.failedChecks.isEmpty, "leaf \(i): \(ok.failedChecks)")
                #expect(ok.evidence.batch == 5)
                // Another verifier's nonce at this leaf's place does not fold to the root.
                let (bad, _) = await AttestationVerifier().verify(answer, context: verifier.context(nonce: nonces[(i + 1) % 5], tlsKeyHash: host.tlsKeyHash))
                #expect(bad.rules.contains("binding"))
            }
        }
    }

    @Test func tamperedLogRecordIsRejected() async throws {
        try await withHost { host in
            let verifier = try await Self.knownGood(host)
            let nonce = TestVerifier.nonce()
            var answer = try await host.answer(nonces: [nonce])
            let encoded = try #require(answer.log?.records)
            var records = try #require(Base64.decode(encoded))
            // Change one byte of the last record's event data (its final byte).
            records[records.count - 1] ^= 0x01
            answer.log?.records = Base64.encode(records)
            let (report, state) = await AttestationVerifier().verify(answer, context: verifier.context(nonce: nonce, tlsKeyHash: host.tlsKeyHash))
            #expect(report.rules.contains("logRecords"))
            #expect(report.failedChecks.contains { $0.reason.contains("not the hash of the event data") })
            #expect(report.platform.level == .untrusted)
            #expect(report.domains.allSatisfy { $0.verdict.level != .trusted })
            #expect(state == nil)
        }
    }

    @Test func droppedRecordIsRejectedByTheReplay() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            try await host.measureRegion("guest2", "kernel.text", root: "text 6.1.0-b with a patched page", release: "6.1.0-b")
            try await host.measureRegion("guest2", "kernel.text", root: "text 6.1.0-b", release: "6.1.0-b")
            let nonce = TestVerifier.nonce()
            let cursor = verifier.state.map { ServiceAPI.LogCursor(epoch: $0.epoch, since: $0.nextSeq) }
            var answer = try await host.answer(nonces: [nonce], cursor: cursor)
            // Hide the patched measurement: only the second record, claiming it is the first.
            let part = try #require(answer.log)
            let header = try #require(Base64.decode(part.header)), body = try #require(Base64.decode(part.records))
            let log = try TCGEventLog(bytes: header + body)
            answer.log?.records = Base64.encode(log.events[1].serialized())
            answer.log?.nextSeq -= 1
            let (report, _) = await AttestationVerifier().verify(answer, context: verifier.context(nonce: nonce, tlsKeyHash: host.tlsKeyHash))
            #expect(report.rules.contains("logRecords"))
            #expect(!report.trusted)
            verifier.state = nil   // the honest answer still verifies from the epoch's start
            let (honest, _) = try await verifier.attest(host)
            #expect(honest.failedChecks.isEmpty)
            #expect(honest.verdict("guest2")?.verdict.level == .untrusted)
        }
    }

    @Test func wrongPinnedAKIsRejected() async throws {
        try await withHost { host in
            try await withHost(fresh: true) { other in
                var verifier = try await Self.knownGood(host)
                verifier.pin = other.pin
                let nonce = TestVerifier.nonce()
                let answer = try await host.answer(nonces: [nonce])
                let (report, _) = await AttestationVerifier().verify(answer, context: verifier.context(nonce: nonce, tlsKeyHash: host.tlsKeyHash))
                #expect(report.rules == ["akTrust"] || report.rules.isSuperset(of: ["akTrust"]))
                #expect(report.failedChecks.contains { $0.reason.contains("pinned at enrollment") })
                #expect(!report.trusted)
            }
        }
    }

    @Test func clockGoingBackIsRejected() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            // The stored state saw a later clock than the TPM now reports (a TPM state restored
            // from a copy would do this; ClockTests drive that with swtpm itself).
            verifier.state?.clock += 3_600_000
            let (report, _) = try await verifier.attest(host)
            #expect(report.rules.contains("clock"))
            #expect(report.failedChecks.contains { $0.reason.contains("clock went back") })
            #expect(!report.trusted)
            // resetCount going back.
            verifier.state?.clock -= 3_600_000
            verifier.state?.resetCount += 1
            let (reset, _) = try await verifier.attest(host)
            #expect(reset.failedChecks.contains { $0.reason.contains("resetCount went back") })
        }
    }

    /// A TPM reset under the running VMV (swtpm power-cycled): the log ends epoch 0 and starts
    /// epoch 1; the verifier, holding state in epoch 0, gets the whole new epoch, accepts the
    /// higher resetCount with it and starts over (trusted once everything is measured again).
    /// A host that answers the new boot's quote with the old epoch's log is refused by name.
    @Test func tpmResetStartsANewEpochAndTheVerifierStartsOver() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            let before = try #require(verifier.state)
            try await host.resetTPM()
            try await host.measurePlatform()
            try await host.measureGuest("guest1", kernel: "6.1.0-a")
            try await host.measureGuest("guest2", kernel: "6.1.0-b")

            let nonce = TestVerifier.nonce()
            let oldLog = try await host.answer(nonces: [nonce], servingEpoch: before.epoch)
            let (refused, kept) = await AttestationVerifier().verify(oldLog, context: verifier.context(nonce: nonce, tlsKeyHash: host.tlsKeyHash))
            #expect(kept == nil)
            #expect(refused.failedChecks.contains { $0.rule == "epoch" && $0.reason.contains("the log belongs to another boot") }, "\(refused.failedChecks)")
            #expect(!refused.trusted)

            let (report, response) = try await verifier.attest(host)
            #expect(response.log?.epoch == before.epoch + 1)
            #expect(report.failedChecks.isEmpty, "\(report.failedChecks)")
            #expect(report.evidence.replay == "epoch")
            #expect(report.evidence.resetCount == before.resetCount + 1)
            #expect(report.platform.level == .trusted, "\(report.platform.reasons)")
            #expect(report.trusted)
            #expect(verifier.state?.epoch == before.epoch + 1)
            #expect(verifier.state?.resetCount == before.resetCount + 1)
        }
    }

    /// The host's answer to a fresh nonce saved as `refs learn --from` reads it, with the AK pin:
    /// (evidence.json, ak.json) in `dir`. A self-signed certificate stands for the host's TLS
    /// certificate; the quote is bound to its key.
    static func saveEvidence(_ host: RealStackHost, in dir: URL) async throws -> (evidence: SavedEvidence, path: String, pin: String) {
        let nonce = TestVerifier.nonce()
        let cert = try TestCertificate.make()
        let bound = try await host.answer(nonces: [nonce], tlsKeyHash: try QuoteBinding.tlsKeyHash(certificateDER: cert))
        let evidence = SavedEvidence(host: "test-host:8443", nonce: Hex.encode(nonce), serverCertificate: Base64.encode(cert),
                                     request: .init(nonce: Hex.encode(nonce)), response: bound, receivedAt: "2026-11-27T00:00:00Z")
        let path = dir.appendingPathComponent("evidence.json").path
        try Data(evidence.json()).write(to: URL(fileURLWithPath: path))
        let pin = dir.appendingPathComponent("ak.json").path
        try Data(host.pin.json()).write(to: URL(fileURLWithPath: pin))
        return (evidence, path, pin)
    }

    /// Two guests booted from one kernel measure the same: learning both writes one kernel
    /// document, and both are trusted by it.
    @Test func refsLearnTwoGuestsOfOneKernel() async throws {
        try await withHost { host in
            try await host.measurePlatform()
            try await host.measureGuest("guest1", kernel: "6.1.0-a")
            try await host.measureGuest("guest2", kernel: "6.1.0-a")
            let dir = try TemporaryDirectory.make(prefix: "vmv-learn2")
            defer { try? FileManager.default.removeItem(at: dir) }
            let (_, evidencePath, pinPath) = try await Self.saveEvidence(host, in: dir)
            let refs = dir.appendingPathComponent("refs").path
            let learn = try Binaries.run("vmv-verifier", ["refs", "learn", "--refs", refs, "--from", evidencePath, "--ak", pinPath,
                                                          "--domain", "guest1", "--domain", "guest2", "--platform"])
            #expect(learn.status == 0, "\(learn.stderr)")
            #expect(learn.stdout.contains("from guest2: the same as the reference already there"), "\(learn.stdout)")
            let kernels = try FileManager.default.contentsOfDirectory(atPath: refs).filter { $0.hasPrefix("kernel-") }
            #expect(kernels.count == 1, "\(kernels)")
            var verifier = TestVerifier(pin: host.pin, references: try ReferenceSet(directory: refs))
            let (report, _) = try await verifier.attest(host)
            #expect(report.verdict("guest1")?.verdict.level == .trusted)
            #expect(report.verdict("guest2")?.verdict.level == .trusted)
        }
    }

    /// `refs learn --from` on evidence the real stack made, then an attestation with what it
    /// wrote: the learned guest and the platform are trusted, the unlearned guest unknown.
    /// With VMV_WRITE_EXAMPLES=1 the documents go to measurements/examples/learned.
    @Test func refsLearnFromSavedEvidence() async throws {
        try await withHost { host in
            try await host.measurePlatform()
            try await host.measureGuest("guest1", kernel: "6.1.0-a")
            try await host.measureGuest("guest2", kernel: "6.1.0-b")
            let dir = try TemporaryDirectory.make(prefix: "vmv-learn")
            defer { try? FileManager.default.removeItem(at: dir) }
            let (evidence, evidencePath, pinPath) = try await Self.saveEvidence(host, in: dir)
            let refs = ProcessInfo.processInfo.environment["VMV_WRITE_EXAMPLES"] != nil
                ? FileManager.default.currentDirectoryPath + "/measurements/examples/learned" : dir.appendingPathComponent("refs").path
            let learn = try Binaries.run("vmv-verifier", ["refs", "learn", "--refs", refs, "--force", "--from", evidencePath, "--ak", pinPath,
                                                          "--domain", "guest1", "--platform", "--id", "linux-6.1.0-a-learned"])
            #expect(learn.status == 0, "\(learn.stderr)")
            #expect(learn.stdout.contains("kernel linux-6.1.0-a-learned from guest1: kernel.rodata, kernel.text"))

            // Tampered evidence does not teach anything.
            var tampered = evidence
            tampered.nonce = Hex.encode(TestVerifier.nonce())
            try Data(tampered.json()).write(to: URL(fileURLWithPath: evidencePath))
            let refused = try Binaries.run("vmv-verifier", ["refs", "learn", "--refs", dir.path + "/other", "--from", evidencePath, "--domain", "guest1"])
            #expect(refused.status == 2)
            #expect(refused.stderr.contains("does not verify"))

            var verifier = TestVerifier(pin: host.pin, references: try ReferenceSet(directory: refs))
            let (report, _) = try await verifier.attest(host)
            #expect(report.failedChecks.isEmpty)
            #expect(report.platform.level == .trusted, "\(report.platform.reasons)")
            #expect(report.verdict("guest1")?.verdict.level == .trusted)
            #expect(report.verdict("guest2")?.verdict.level == .unknown)
        }
    }

    /// A guest built by libxl has a domainConfig record (libxl's record of the build, holding
    /// the domain's UUID, so no file gives its digest): `refs learn --domain` puts the learned
    /// digest in the domain's policy.json entry. With it the guest is trusted; without it the
    /// record is unknown, and so is the guest; another configuration is untrusted.
    @Test func refsLearnTakesTheDomainConfiguration() async throws {
        try await withHost { host in
            try await host.measurePlatform()
            try await host.measureGuest("guest1", kernel: "6.1.0-a")
            let config = Array(#"{"c_info":{"name":"guest1","uuid":"0b7e2791-bddd-4e8c-94eb-9e02a72803ec"},"b_info":{}}"#.utf8)
            let domain = Measurement.Domain(uuid: RealStackHost.uuid("guest1"), id: 1, name: "guest1")
            let userdata = "/var/lib/xen/userdata-d.1.0b7e2791-bddd-4e8c-94eb-9e02a72803ec.libxl-json"
            _ = try await host.engine.measure(.content(.domainConfig, subject: userdata, hashing: config, domain: domain))
            let dir = try TemporaryDirectory.make(prefix: "vmv-learn-config")
            defer { try? FileManager.default.removeItem(at: dir) }
            let nonce = TestVerifier.nonce()
            let cert = try TestCertificate.make()
            let bound = try await host.answer(nonces: [nonce], tlsKeyHash: try QuoteBinding.tlsKeyHash(certificateDER: cert))
            let evidence = SavedEvidence(host: "test-host:8443", nonce: Hex.encode(nonce), serverCertificate: Base64.encode(cert),
                                         request: .init(nonce: Hex.encode(nonce)), response: bound, receivedAt: "2026-11-28T00:00:00Z")
            let evidencePath = dir.appendingPathComponent("evidence.json").path
            try Data(evidence.json()).write(to: URL(fileURLWithPath: evidencePath))
            let pinPath = dir.appendingPathComponent("ak.json").path
            try Data(host.pin.json()).write(to: URL(fileURLWithPath: pinPath))
            let refs = dir.appendingPathComponent("refs").path
            let learn = try Binaries.run("vmv-verifier", ["refs", "learn", "--refs", refs, "--from", evidencePath, "--ak", pinPath,
                                                          "--domain", "guest1", "--platform", "--id", "linux-a"])
            #expect(learn.status == 0, "\(learn.stderr)")
            #expect(learn.stdout.contains("policy entry for guest1: kernel linux-a, its domain configuration"))
            let set = try ReferenceSet(directory: refs)
            let entry = set.policy?.domains.first { $0.name == "guest1" }
            #expect(entry?.kernels == ["linux-a"])
            #expect(entry?.domainConfig == [DigestSet(["sha256": ReferenceLearning.sha256(config)])])

            var verifier = TestVerifier(pin: host.pin, references: set)
            let (trusted, _) = try await verifier.attest(host)
            #expect(trusted.verdict("guest1")?.verdict.level == .trusted, "\(trusted.verdict("guest1")?.verdict.reasons ?? [])")

            // Without the learned entry the record has no reference: unknown, never trusted.
            try FileManager.default.removeItem(atPath: refs + "/policy.json")
            var open = TestVerifier(pin: host.pin, references: try ReferenceSet(directory: refs))
            let (unknown, _) = try await open.attest(host)
            #expect(unknown.verdict("guest1")?.verdict.level == .unknown)
            #expect(unknown.verdict("guest1")?.verdict.reasons.contains { $0.contains("domainConfig") } == true)

            // Another configuration for the same guest (a domain rebuilt differently) does not match.
            let changed = Array(#"{"c_info":{"name":"guest1"},"b_info":{"max_memkb":1}}"#.utf8)
            _ = try await host.engine.measure(.content(.domainConfig, subject: userdata, hashing: changed, domain: domain))
            let (untrusted, _) = try await verifier.attest(host)
            #expect(untrusted.verdict("guest1")?.verdict.level == .untrusted)
        }
    }

    /// Hostile answers: every malformed field is a named `response` or `binding` failure,
    /// never a trap, and never a stored state.
    @Test func hostileAnswersAreNamedFailures() async throws {
        try await withHost { host in
            let verifier = try await Self.knownGood(host)
            let nonce = TestVerifier.nonce()
            let good = try await host.answer(nonces: [nonce])
            var cases: [(String, String, (inout ServiceAPI.QuoteResponse) -> Void)] = [
                ("response", "version 2", { $0.version = 2 }),
                ("response", "quote.message: not base64", { $0.quote.message = "***" }),
                ("response", "quote.signature: not a TPMT_SIGNATURE", { $0.quote.signature = Base64.encode([0, 0x18]) }),
                ("response", "quote.pcrs: not a serialized PCR file", { $0.quote.pcrs = Base64.encode([1, 2, 3]) }),
                ("response", "ak.public: not a TPM2B_PUBLIC", { $0.ak.publicArea = Base64.encode([0, 4, 0, 1]) }),
                ("response", "log: missing", { $0.log = nil }),
                ("response", "not a TCG crypto-agile event log", { $0.log?.header = Base64.encode([0, 0, 0, 0]) }),
                ("response", "binding.proof[0]", { $0.binding.proof = ["xyz"] }),
                ("response", "binding.proof: 65 nodes", { $0.binding.proof = Array(repeating: String(repeating: "00", count: 32), count: 65) }),
                ("binding", "leafIndex 7 is outside the batch of 1", { $0.binding.leafIndex = 7 }),
                ("binding", "leafCount -1", { $0.binding.leafCount = -1 }),
                ("binding", "more than a batch of 1 needs", { $0.binding.proof = [String(repeating: "00", count: 32)] }),
                ("binding", "scheme 'other'", { $0.binding.scheme = "other" }),
                ("logRecords", "it holds", { $0.log?.nextSeq += 5 }),
                ("logRecords", "no replay state", { $0.log?.since = 3 }),
            ]
            cases.append(("selection", "quote selects", { _ in }))   // with a required selection the quote lacks
            for (i, (rule, text, change)) in cases.enumerated() {
                var answer = good
                change(&answer)
                var context = verifier.context(nonce: nonce, tlsKeyHash: host.tlsKeyHash)
                context.state = nil
                if i == cases.count - 1 { context.selection = try PCRSelection(parsing: "sha256:15,16") }
                let (report, state) = await AttestationVerifier().verify(answer, context: context)
                #expect(report.failedChecks.contains { $0.rule == rule && $0.reason.contains(text) }, "\(rule)/\(text): \(report.failedChecks)")
                #expect(state == nil)
                #expect(!report.trusted)
            }
        }
    }

    /// `--ak-ca`: an AK certificate the verifier's AK CA issued (as `enroll --ak-ca-cert` does)
    /// makes the AK trusted; one from another CA, or for another key, does not.
    @Test func akCertifiedByTheAKCA() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            let (caCert, caKey) = try AKCertificateIssuer.makeCA()
            let issuer = try AKCertificateIssuer(certificatePEM: try caCert.serializeAsPEM().pemString, keyPEM: caKey.pemRepresentation)
            let pem = try issuer.issue(ak: host.ak.publicArea, host: "test-host:8443").serializeAsPEM().pemString
            let (otherCert, otherKey) = try AKCertificateIssuer.makeCA(commonName: "another AK CA")
            let other = try AKCertificateIssuer(certificatePEM: try otherCert.serializeAsPEM().pemString, keyPEM: otherKey.pemRepresentation)
            let foreignPEM = try other.issue(ak: host.ak.publicArea, host: "test-host:8443").serializeAsPEM().pemString
            let nonce = TestVerifier.nonce()
            var answer = try await host.answer(nonces: [nonce])
            func check(_ certificates: [String]) async -> AttestationReport {
                answer.ak.certificates = certificates
                var context = verifier.context(nonce: nonce, tlsKeyHash: host.tlsKeyHash)
                context.akTrust = .certificateAuthority([caCert])
                return await AttestationVerifier().verify(answer, context: context).0
            }
            #expect(await check([pem]).failedChecks.isEmpty)
            #expect(await check([foreignPEM]).failedChecks.contains { $0.rule == "akTrust" && $0.reason.contains("does not chain to the AK CA") })
            #expect(await check([]).failedChecks.contains { $0.rule == "akTrust" && $0.reason.contains("no AK certificate") })
            try await withHost(fresh: true) { stranger in
                let wrongKey = try issuer.issue(ak: stranger.ak.publicArea, host: "x").serializeAsPEM().pemString
                #expect(await check([wrongKey]).failedChecks.contains { $0.rule == "akTrust" && $0.reason.contains("certifies another key") })
            }
            verifier.state = nil
        }
    }

    /// Issue 8 item 5 through the real log: the VMV records the FLASK mode and the launch events
    /// as platform records (`XSMMeasurements`, as on Xen); with the platform learned, a policy
    /// requiring that FLASK policy enforcing gives a trusted platform, then, after the VMV records permissive mode, an untrusted one whose
    /// only reason names the mode; a verifier expecting another policy names the hash.
    @Test func xsmModeAndPolicyHashJudgeThePlatform() async throws {
        try await withHost { host in
            var verifier = try await Self.knownGood(host)
            let policyFile = Array("flask policy v1".utf8)
            let hash = ReferenceLearning.sha256(policyFile)
            // The records as the VMV makes them on Xen (XSMMeasurements: FLASK's mode, the
            // launch events dom0's builder published), through the real engine.
            let launch = LaunchLog(pcr: LaunchEvent.defaultPCR, events: [
                try LaunchEvent(parsing: "vmv-launch/1 xsm-policy sha256=\(hash) size=\(policyFile.count) file=vmv.pol"),
                try LaunchEvent(parsing: "vmv-launch/1 handover tpm=vmv"),
            ])
            func xsm(_ mode: XSMStatus.Mode, launch: LaunchLog? = nil) async throws {
                for m in XSMMeasurements.collect(status: XSMStatus(mode: mode, label: "system_u:system_r:vmv_t"), launch: launch) {
                    _ = try await host.engine.measure(m)
                }
            }
            try await xsm(.enforcing, launch: launch)
            // Before the operator learns the new platform records, nothing speaks for them.
            let (unlearned, _) = try await verifier.attest(host)
            #expect(unlearned.platform.level == .unknown)
            #expect(unlearned.platform.reasons.contains("platform launch.handover: no hypervisor reference speaks for platform subject 'launch.handover'"))
            let (_, hypervisor) = ReferenceLearning.platform(learnedFrom: try #require(verifier.state?.facts), evidence: [:])
            var documents: [(name: String, document: ReferenceDocument)] = [
                ("policy", .policy(PolicyDocument(id: "flask", platform: .init(xsm: .init(mode: "enforcing", policy: DigestSet(["sha256": hash]))),
                                                  otherDomains: .init(kernels: Array(verifier.references.kernels.keys))))),
                ("hypervisor", .hypervisor(try #require(hypervisor)))]
            for (id, k) in verifier.references.kernels { documents.append((id, .kernel(k))) }
            for (id, v) in verifier.references.vmvs { documents.append((id, .vmv(v))) }
            verifier.references = try ReferenceSet(documents: documents)
            var other = verifier
            other.references = try ReferenceSet(documents: documents.map { d in
                guard case .policy(var p) = d.document else { return d }
                p.platform?.xsm?.policy = DigestSet(["sha256": ReferenceLearning.sha256(Array("another policy".utf8))])
                return (d.name, .policy(p))
            })

            let (good, _) = try await verifier.attest(host)
            #expect(good.failedChecks.isEmpty, "\(good.failedChecks)")
            #expect(good.platform.level == .trusted, "\(good.platform.reasons)")
            #expect(good.trusted)

            let (wrongPolicy, _) = try await other.attest(host)
            #expect(wrongPolicy.platform.level == .untrusted)
            #expect(wrongPolicy.platform.reasons.count == 1)
            #expect(wrongPolicy.platform.reasons.first?.hasPrefix("XSM policy hash is sha256:\(hash)") == true, "\(wrongPolicy.platform.reasons)")

            try await xsm(.permissive)
            let (permissive, _) = try await verifier.attest(host)
            #expect(permissive.evidence.replay == "incremental")
            #expect(permissive.platform.level == .untrusted)
            #expect(permissive.platform.reasons.count == 1)
            #expect(permissive.platform.reasons.first?.hasPrefix("XSM mode is permissive") == true, "\(permissive.platform.reasons)")
            #expect(permissive.verdict("guest1")?.verdict.level == .trusted)
            #expect(!permissive.trusted)
        }
    }

    /// Over real TLS on loopback: the verifier takes the TLS key from its own handshake. Direct
    /// to the VMV: trusted, state stored, the next run incremental. Through a relay with its own
    /// certificate (forwarding to the genuine VMV over mutual TLS): rejected by the key binding,
    /// state untouched. The same with the `vmv-verifier attest` binary: exit 0, then 1.
    @Test func relayedQuoteOverTLSIsRejectedByTheKeyBinding() async throws {
        let tls = try TestTLS.make()
        defer { tls.remove() }
        try await withHost { host in
            let verifier = try await Self.knownGood(host)
            let vmvCert = try NIOSSLCertificate.fromPEMFile(tls.cert("vmv"))[0].toDERBytes()
            let vmvKey = try QuoteBinding.tlsKeyHash(certificateDER: vmvCert)
            let vmv = try await TLSEndpoint.start(tls: tls, identity: "vmv") { request in
                try await host.answer(nonces: [try Hex.decode(request.nonce)], cursor: request.log, tlsKeyHash: vmvKey)
            }
            let relay = try await TLSEndpoint.start(tls: tls, identity: "relay") { request in
                try await VMVHostClient.with(url: vmv.url, tls: tls.client) { try await $0.quote(request).0 }
            }
            let stateDir = try TemporaryDirectory.make(prefix: "vmv-verifier-state").path
            defer { try? FileManager.default.removeItem(atPath: stateDir) }
            let store = JSONFileHostStateStore(directory: stateDir)
            func run(_ url: String) async throws -> AttestationRun.Outcome {
                try await AttestationRun(url: url, tls: tls.client, akTrust: .pinned(host.pin), references: verifier.references, store: store).run()
            }
            do {
                let direct = try await run(vmv.url)
                #expect(direct.report.trusted, "\(direct.report.failedChecks) \(direct.report.platform.reasons)")
                #expect(direct.stored)
                #expect(direct.report.evidence.tlsKeyHash == Hex.encode(vmvKey))

                let relayed = try await run(relay.url)
                #expect(!relayed.report.trusted)
                #expect(relayed.report.failedChecks.contains { $0.rule == "binding" && $0.reason.contains("relayed") })
                #expect(!relayed.stored)

                try await host.measureRegion("guest1", "kernel.text", root: "text 6.1.0-a", release: "6.1.0-a")
                let again = try await run(vmv.url)
                #expect(again.report.trusted)
                #expect(again.report.evidence.replay == "incremental")
                #expect(again.report.evidence.records == 1)

                // A server certificate from a CA the verifier does not trust: no answer at all.
                var wrongCA = tls.client
                wrongCA.ca = tls.cert("relay")
                await #expect(throws: HostError.self) {
                    _ = try await AttestationRun(url: vmv.url, tls: wrongCA, akTrust: .pinned(host.pin), references: verifier.references, store: nil).run()
                }

                // The command line: the references and the pin as files.
                let refs = stateDir + "/refs"
                try FileManager.default.createDirectory(atPath: refs, withIntermediateDirectories: true)
                for (id, k) in verifier.references.kernels { try Data(ReferenceDocument.kernel(k).json()).write(to: URL(fileURLWithPath: "\(refs)/kernel-\(id).json")) }
                for (id, v) in verifier.references.vmvs { try Data(ReferenceDocument.vmv(v).json()).write(to: URL(fileURLWithPath: "\(refs)/vmv-\(id).json")) }
                for (id, h) in verifier.references.hypervisors { try Data(ReferenceDocument.hypervisor(h).json()).write(to: URL(fileURLWithPath: "\(refs)/hv-\(id).json")) }
                let pin = stateDir + "/ak.json"
                try Data(host.pin.json()).write(to: URL(fileURLWithPath: pin))
                let common = ["--ca", tls.ca, "--cert", tls.cert("client"), "--key", tls.key("client"), "--refs", refs, "--ak", pin,
                              "--state", stateDir + "/cli"]
                let ok = try Binaries.run("vmv-verifier", ["attest", vmv.url] + common)
                #expect(ok.status == 0, "\(ok.stdout) \(ok.stderr)")
                #expect(ok.stdout.contains("trusted    platform"))
                #expect(ok.stdout.contains("result: trusted"))
                let json = try Binaries.run("vmv-verifier", ["attest", vmv.url, "--json"] + common)
                #expect(json.status == 0)
                let report = try JSONDecoder().decode(AttestationReport.self, from: Data(json.stdout.utf8))
                #expect(report.trusted && report.evidence.replay == "incremental")
                let bad = try Binaries.run("vmv-verifier", ["attest", relay.url] + common)
                #expect(bad.status == 1)
                #expect(bad.stdout.contains("untrusted  platform") && bad.stdout.contains("relayed"))
                let unreachable = try Binaries.run("vmv-verifier", ["attest", "https://localhost:1"] + common)
                #expect(unreachable.status == 2)
            } catch {
                await relay.stop(); await vmv.stop()
                throw error
            }
            await relay.stop()
            await vmv.stop()
        }
    }
}
