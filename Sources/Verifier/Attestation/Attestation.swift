import FoundationEssentials
import TPMWire

extension QuoteRule {
    /// The answer is not well-formed evidence (base64, structures, scheme).
    public static let response = QuoteRule(rawValue: "response")
    /// The AK is the pinned one, or certified by the AK CA.
    public static let akTrust = QuoteRule(rawValue: "akTrust")
    /// clock/resetCount/restartCount move forward from the stored state.
    public static let clock = QuoteRule(rawValue: "clock")
    /// Every log record verified: digests = H(data), a VMV record, seq continuity, epoch, PCR.
    public static let logRecords = QuoteRule(rawValue: "logRecords")
    /// The log replays (from the stored state or the epoch start) to the quoted PCR values.
    public static let logReplay = QuoteRule(rawValue: "logReplay")
    /// The epoch belongs to this TPM boot and started from a known PCR state.
    public static let epoch = QuoteRule(rawValue: "epoch")
}

/// What the verifier knows before it reads an answer: its own nonce, the TLS key it saw in
/// its own handshake, and what it trusts.
public struct AttestationContext: Sendable {
    /// "host:port".
    public var host: String
    public var nonce: [UInt8]
    /// SHA-256 of the SPKI of the server certificate in this connection's handshake.
    public var tlsKeyHash: [UInt8]
    /// The selection the quote must cover exactly; nil: the log's PCR in every bank of the log.
    public var selection: PCRSelection?
    public var akTrust: AKTrust
    /// The state stored after the last verdict for this host, if any.
    public var state: HostState?
    public var references: ReferenceSet
    /// Domains (names or UUIDs) whose verdict decides the exit status; empty: every running one.
    public var requestedDomains: [String]
    /// When the verdict is given (ISO 8601), for the stored state.
    public var now: String

    public init(host: String, nonce: [UInt8], tlsKeyHash: [UInt8], selection: PCRSelection?, akTrust: AKTrust, state: HostState?,
                references: ReferenceSet, requestedDomains: [String] = [], now: String) {
        self.host = host
        self.nonce = nonce
        self.tlsKeyHash = tlsKeyHash
        self.selection = selection
        self.akTrust = akTrust
        self.state = state
        self.references = references
        self.requestedDomains = requestedDomains
        self.now = now
    }
}

/// The outcome of one attestation: a verdict for the platform and one per VM, every evidence
/// check that failed, and what the evidence said.
public struct AttestationReport: Codable, Sendable {
    public struct Check: Codable, Hashable, Sendable {
        public var rule: String
        public var reason: String
    }

    public struct Evidence: Codable, Hashable, Sendable {
        public var akName: String?
        public var clock: UInt64?
        public var resetCount: UInt32?
        public var restartCount: UInt32?
        public var pcrSelection: String?
        public var tlsKeyHash: String
        public var batch: Int?
        public var epoch: UInt32?
        public var since: UInt64?
        public var nextSeq: UInt64?
        public var records: Int
        /// "incremental" (from the stored state), "epoch" (the whole epoch) or "none".
        public var replay: String
    }

    public var host: String
    /// True when the platform and every requested VM are trusted: the exit status.
    public var trusted: Bool
    public var platform: Verdict
    public var domains: [DomainVerdict]
    /// Evidence checks that failed; empty when the evidence is sound.
    public var failedChecks: [Check]
    public var evidence: Evidence

    /// The verdicts that decide `trusted`.
    public static func decide(platform: Verdict, domains: [DomainVerdict], requested: [String]) -> (Bool, [DomainVerdict]) {
        var all = domains
        var decisive = domains.filter(\.running)
        if !requested.isEmpty {
            decisive = []
            for want in requested {
                if let d = domains.first(where: { $0.name == want || ReferenceSet.sameUUID(want, $0.uuid) }) {
                    decisive.append(d)
                } else {
                    let missing = DomainVerdict(uuid: "", name: want, domid: nil, running: false,
                                                verdict: Verdict(level: .unknown, reasons: ["the VMV's log has no domain named \(want)"]))
                    all.append(missing)
                    decisive.append(missing)
                }
            }
        }
        return (platform.level == .trusted && decisive.allSatisfy { $0.verdict.level == .trusted }, all)
    }
}

/// Checks one answer of `POST /v1/quote` (docs/verification.md): the evidence (binding, AK,
/// quote rules, clock, records, replay, epoch), then appraisal. Returns the report and, when
/// the evidence is sound, the state to store for the next attestation.
public struct AttestationVerifier: Sendable {
    public init() {}

    public func verify(_ response: ServiceAPI.QuoteResponse, context: AttestationContext) async -> (AttestationReport, HostState?) {
        var failures: [QuoteFailure] = []
        func fail(_ rule: QuoteRule, _ reason: String) { failures.append(QuoteFailure(rule: rule, reason: reason)) }
        var evidence = AttestationReport.Evidence(tlsKeyHash: Hex.encode(context.tlsKeyHash), records: 0, replay: "none")

        // 1. Parse what the host sent. Nothing is trusted yet.
        let parsed: ParsedAnswer
        do { parsed = try ParsedAnswer(response) } catch {
            fail(.response, error.reason)
            return (report(context, failures, evidence, facts: nil), nil)
        }
        let attest = parsed.quote.attest
        evidence.akName = parsed.akName.map { Hex.encode($0) }
        evidence.clock = attest.clockInfo.clock
        evidence.resetCount = attest.clockInfo.resetCount
        evidence.restartCount = attest.clockInfo.restartCount
        evidence.pcrSelection = attest.quote?.pcrSelect.description
        evidence.batch = parsed.proof.leafCount
        evidence.epoch = response.log?.epoch
        evidence.since = response.log?.since
        evidence.nextSeq = response.log?.nextSeq
        evidence.records = parsed.events.count

        // 2. The AK: pinned or certified.
        if let reason = await context.akTrust.failure(akPublic: parsed.akPublic, ak: parsed.quote.ak, certificates: response.ak.certificates) {
            fail(.akTrust, reason)
        }

        // 3. Every quote rule, with the nonce rule replaced by the binding of our nonce and the
        //    TLS key we saw.
        let required = context.selection ?? parsed.logSelection
        if let required {
            failures += QuoteVerifier.bound(nonce: context.nonce, tlsKeyHash: context.tlsKeyHash, proof: parsed.proof, selection: required)
                .check(parsed.quote).failures
        } else {
            fail(.selection, "no selection to require: no --pcr-list and no log to take the PCR from")
        }
        if response.binding.scheme != QuoteBinding.scheme {
            fail(.binding, "binding scheme '\(response.binding.scheme)', this verifier knows \(QuoteBinding.scheme)")
        }
        if let claimed = try? Hex.decode(response.binding.tlsKeyHash), claimed != context.tlsKeyHash {
            fail(.binding, "the host says its TLS key hash is \(response.binding.tlsKeyHash), the TLS key in our handshake hashes to \(Hex.encode(context.tlsKeyHash)): the answer was relayed")
        }
        let quoteSound = failures.isEmpty

        // 4. The clock against what we saw last time (only worth checking on a sound quote:
        //    an unsigned clock proves nothing).
        var state = context.state
        if let s = state, s.akName != evidence.akName {
            fail(.clock, "the stored state of \(context.host) is for AK \(s.akName), this quote is signed by AK \(evidence.akName ?? "?"); if the host was re-enrolled, remove the state file")
            state = nil
        }
        if quoteSound, let s = state {
            for reason in ClockCheck.failures(attest.clockInfo, stored: s, logEpoch: response.log?.epoch) { fail(.clock, reason) }
        }

        // 5. The log: records verified, replayed to the quoted PCR, folded into the epoch's facts.
        var facts: EpochFacts?
        var chain: PCRChain?
        if let log = response.log, let logPCR = parsed.logPCR {
            let incremental = state.map { $0.epoch == log.epoch && log.since == $0.nextSeq && log.since > 0 } ?? false
            if !incremental && log.since != 0 {
                fail(.logRecords, "the log starts at seq \(log.since) of epoch \(log.epoch), but this verifier has no replay state there (it has \(state.map { "epoch \($0.epoch) up to seq \($0.nextSeq)" } ?? "none"))")
            } else {
                evidence.replay = incremental ? "incremental" : "epoch"
                if UInt64(parsed.events.count) != log.nextSeq &- log.since {
                    fail(.logRecords, "the log says records \(log.since)..<\(log.nextSeq), it holds \(parsed.events.count)")
                }
                var epochFacts = EpochFacts(epoch: log.epoch)
                if incremental, let s = state {
                    epochFacts = s.facts
                    switch LogContinuationVerifier.verify(parsed.events, epoch: log.epoch, since: log.since, pcr: logPCR) {
                    case .failure(let rejection):
                        for p in rejection.problems { fail(.logRecords, p.description) }
                    case .success(let records):
                        for r in records { epochFacts.add(r) }
                        if let start = s.pcrValues {
                            var c = PCRChain(start: start)
                            do {
                                for event in parsed.events { try c.extend(with: event) }
                                chain = c
                            } catch { fail(.logReplay, error.reason) }
                        } else {
                            fail(.logReplay, "the stored PCR values are unusable; remove the state file")
                        }
                    }
                } else {
                    switch MeasurementLogVerifier.verify(TCGEventLog(header: parsed.header, events: parsed.events), epoch: log.epoch, pcr: logPCR) {
                    case .failure(let rejection):
                        for p in rejection.problems { fail(p.code == .replay ? .logReplay : .logRecords, p.description) }
                    case .success(let verified):
                        for e in verified.entries { epochFacts.add(e.record) }
                        chain = PCRChain(start: verified.replayed)
                    }
                }
                facts = epochFacts
                if let chain {
                    for reason in Self.replayFailures(chain, quoted: parsed.quote, pcr: logPCR) { fail(.logReplay, reason) }
                }
                if incremental, state?.pcr != logPCR {
                    fail(.logReplay, "the log's PCR is \(logPCR), the stored state replayed PCR \(state?.pcr ?? -1)")
                }
            }
        } else {
            fail(.logRecords, "the answer has no log: nothing speaks for the VMs")
        }

        // 6. The epoch: this TPM boot's, started from a known state.
        var epochReasons: [String] = []
        if let facts, quoteSound {
            if let start = facts.start {
                if start.resetCount != attest.clockInfo.resetCount {
                    fail(.epoch, "epoch \(facts.epoch) began at TPM resetCount \(start.resetCount), the quote is from resetCount \(attest.clockInfo.resetCount): the log belongs to another boot")
                }
                if !start.startPCRs.isEmpty {
                    epochReasons.append("epoch \(facts.epoch) started from an unexplained PCR state (\(start.startPCRs.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ", "))): \(start.reason)")
                }
            } else {
                fail(.epoch, "epoch \(facts.epoch) has no epochStart record at seq 0")
            }
            if response.log?.epochInfo.state == "broken" {
                epochReasons.append("the VMV reports epoch \(facts.epoch) broken: \(response.log?.epochInfo.reason ?? "no reason given")")
            }
        }

        let sound = failures.isEmpty
        var result = report(context, failures, evidence, facts: sound ? facts : nil, epochReasons: epochReasons)
        guard sound, let facts, let chain, let pcr = parsed.logPCR ?? Optional(response.host.pcr) else {
            if !sound { result.domains = Self.unappraised(facts) }
            return (result, nil)
        }
        let newState = HostState(
            host: context.host, akName: evidence.akName ?? "", clock: attest.clockInfo.clock, resetCount: attest.clockInfo.resetCount,
            restartCount: attest.clockInfo.restartCount, epoch: facts.epoch, nextSeq: response.log?.nextSeq ?? 0, pcr: pcr,
            pcrs: Dictionary(uniqueKeysWithValues: chain.values.map { ($0.key.name, Hex.encode($0.value)) }),
            facts: facts, verdictAt: context.now, platform: result.platform.level)
        return (result, newState)
    }

    /// The quoted value of the log's PCR in every bank the log replays equals the replay; every
    /// quoted bank of that PCR is replayed.
    static func replayFailures(_ chain: PCRChain, quoted evidence: QuoteEvidence, pcr: Int) -> [String] {
        guard let selection = evidence.attest.quote?.pcrSelect else { return ["not a quote"] }
        var out: [String] = []
        let quotedBanks = selection.pairs.filter { $0.pcr == pcr }.map(\.hash)
        if quotedBanks.isEmpty { out.append("the quote does not cover the log's PCR \(pcr)") }
        for bank in quotedBanks {
            guard let replayed = chain.values[bank] else {
                out.append("the quote covers \(bank.name):\(pcr) but the log has no \(bank.name) digests")
                continue
            }
            guard let value = evidence.pcrs.values[bank, pcr] else { continue }   // pcrDigest rule reports it
            if replayed != value {
                out.append("the log replays \(bank.name):\(pcr) to \(Hex.encode(replayed)), the quote says \(Hex.encode(value))")
            }
        }
        return out
    }

    func report(_ context: AttestationContext, _ failures: [QuoteFailure], _ evidence: AttestationReport.Evidence, facts: EpochFacts?,
                epochReasons: [String] = []) -> AttestationReport {
        let appraiser = Appraiser(references: context.references)
        var platform: Verdict
        var domains: [DomainVerdict] = []
        if failures.isEmpty, let facts {
            platform = appraiser.appraisePlatform(facts)
            if !epochReasons.isEmpty {
                platform.level = .untrusted
                platform.reasons = epochReasons + platform.reasons
            }
            domains = facts.domains.values.sorted { ($0.name ?? $0.uuid, $0.uuid) < ($1.name ?? $1.uuid, $1.uuid) }.map { appraiser.appraise($0) }
        } else {
            platform = Verdict(level: .untrusted, reasons: failures.map(\.description))
        }
        let (trusted, all) = AttestationReport.decide(platform: platform, domains: domains, requested: context.requestedDomains)
        return AttestationReport(host: context.host, trusted: trusted, platform: platform, domains: all,
                                 failedChecks: failures.map { .init(rule: $0.rule.rawValue, reason: $0.reason) }, evidence: evidence)
    }

    /// VMs named by evidence that was rejected: listed, not appraised.
    static func unappraised(_ facts: EpochFacts?) -> [DomainVerdict] {
        (facts?.domains.values.sorted { $0.uuid < $1.uuid } ?? []).map {
            DomainVerdict(uuid: $0.uuid, name: $0.name, domid: $0.domid, running: $0.running,
                          verdict: Verdict(level: .unknown, reasons: ["not appraised: the platform's evidence was rejected"]))
        }
    }
}

/// The TPM's clock moves forward (docs/verification.md, "Clock"):
/// resetCount never decreases; within one resetCount, restartCount never decreases; within one
/// resetCount and restartCount, clock never decreases; and a TPM reset starts a new log epoch.
public enum ClockCheck {
    public static func failures(_ now: TPMSClockInfo, stored s: HostState, logEpoch: UInt32?) -> [String] {
        let was = "resetCount \(s.resetCount), restartCount \(s.restartCount), clock \(s.clock) at \(s.verdictAt)"
        if now.resetCount < s.resetCount {
            return ["TPM resetCount went back to \(now.resetCount) from \(was): a TPM state restored from a copy, or another TPM"]
        }
        if now.resetCount == s.resetCount {
            if now.restartCount < s.restartCount {
                return ["TPM restartCount went back to \(now.restartCount) within resetCount \(now.resetCount) from \(was): a TPM state restored from a copy"]
            }
            if now.restartCount == s.restartCount, now.clock < s.clock {
                return ["TPM clock went back to \(now.clock) from \(was): a TPM state restored from a copy, or a replayed quote"]
            }
        } else if let epoch = logEpoch, epoch <= s.epoch {
            return ["the TPM was reset (resetCount \(s.resetCount) → \(now.resetCount)) but the log continues epoch \(epoch) (last seen \(s.epoch)): a reset must start a new epoch"]
        }
        if let epoch = logEpoch, epoch < s.epoch {
            return ["the log is epoch \(epoch), older than epoch \(s.epoch) seen at \(s.verdictAt)"]
        }
        return []
    }
}

/// The parts of an answer, parsed. Errors name the field.
struct ParsedAnswer {
    let quote: QuoteEvidence
    let akPublic: [UInt8]
    let akName: [UInt8]?
    let proof: BindingProof
    let header: TCGSpecIDEvent
    let events: [TCGEvent]
    /// The PCR the log's events extend (nil without events).
    let logPCR: Int?
    /// The log's PCR in every bank of the log's header.
    let logSelection: PCRSelection?

    init(_ r: ServiceAPI.QuoteResponse) throws(EvidenceError) {
        guard r.version == ServiceAPI.version else { throw EvidenceError("version \(r.version), this verifier reads version \(ServiceAPI.version)") }
        func b64(_ s: String, _ field: String) throws(EvidenceError) -> [UInt8] {
            guard let b = Base64.decode(s) else { throw EvidenceError("\(field): not base64") }
            return b
        }
        akPublic = try b64(r.ak.publicArea, "ak.public")
        let pub: TPM2BPublic
        do { pub = try TPM2BPublic(wireBytes: akPublic) } catch { throw EvidenceError("ak.public: not a TPM2B_PUBLIC: \(error.reason)") }
        akName = pub.publicArea.name
        let ak = try AttestationKey(tpmPublic: pub.publicArea)
        let pcrs: PCRFile
        do { pcrs = try PCRFile(bytes: try b64(r.quote.pcrs, "quote.pcrs"), format: .serialized) } catch let e as WireError {
            throw EvidenceError("quote.pcrs: not a serialized PCR file: \(e.reason)")
        } catch let e as EvidenceError { throw e } catch { throw EvidenceError("quote.pcrs: \(error)") }
        let message = try b64(r.quote.message, "quote.message"), signature = try b64(r.quote.signature, "quote.signature")
        do { quote = try QuoteEvidence(message: message, signature: signature, ak: ak, pcrs: pcrs) } catch {
            throw EvidenceError("quote." + error.reason)
        }
        guard r.binding.proof.count <= 64 else { throw EvidenceError("binding.proof: \(r.binding.proof.count) nodes, at most 64") }
        var path: [[UInt8]] = []
        for (i, h) in r.binding.proof.enumerated() {
            do { path.append(try Hex.decode(h, field: "binding.proof[\(i)]")) } catch { throw EvidenceError(error.reason) }
        }
        proof = BindingProof(leafIndex: r.binding.leafIndex, leafCount: r.binding.leafCount, path: path)
        guard let log = r.log else {
            throw EvidenceError("log: missing (the VMV always sends its log with a quote)")
        }
        let headerBytes = try b64(log.header, "log.header"), recordBytes = try b64(log.records, "log.records")
        let parsedLog: TCGEventLog
        do { parsedLog = try TCGEventLog(bytes: headerBytes + recordBytes) } catch {
            throw EvidenceError("log: not a TCG crypto-agile event log (header + records): \(error.reason)")
        }
        let header = parsedLog.header
        self.header = header
        events = parsedLog.events
        let pcrsInLog = Set(events.map(\.pcrIndex))
        guard pcrsInLog.count <= 1 else {
            throw EvidenceError("log: events for PCRs \(pcrsInLog.sorted().map(String.init).joined(separator: ",")); a VMV log extends one PCR")
        }
        let logPCR = pcrsInLog.first ?? r.host.pcr
        self.logPCR = logPCR
        logSelection = Optional(logPCR).map { pcr in PCRSelection(banks: header.banks.sorted().map { PCRSelection.Bank(hash: $0, pcrs: [pcr]) }) }
    }
}
