import FoundationEssentials
import TPMWire
import Verifier
import VerifierClient

/// What one attempt to attest a host came to, before the service judges it.
public enum AttemptResult: Sendable {
    /// The host answered with evidence; the report says what the checks and appraisal found.
    case answered(AttestationRun.Outcome, newState: HostState?)
    /// The host could not be asked: no connection, TLS refused, timeout.
    case unreachable(String)
    /// The host answered with an HTTP error instead of evidence.
    case hostError(String)
    /// The verifier could not attest it (its registration or a reference set is unusable).
    case internalError(String)
}

/// Scheduling parameters of one host.
public struct Cadence: Sendable {
    public var interval: Double
    /// ± this fraction of the delay, drawn uniformly.
    public var jitter: Double
    /// The longest delay after consecutive failures.
    public var maxBackoff: Double

    public init(interval: Double, jitter: Double, maxBackoff: Double) {
        self.interval = interval
        self.jitter = jitter
        self.maxBackoff = maxBackoff
    }

    /// The delay before the next attempt after `failures` consecutive failures (0: success):
    /// the interval, then doubling per failure up to `maxBackoff`; jittered so that hosts added
    /// or failed together do not stay in step. `unit` is a draw from [-1, 1].
    public func delay(failures: Int, unit: Double) -> Double {
        var base = interval
        if failures > 1 {
            base = min(maxBackoff, interval * pow2(min(failures - 1, 30)))
        }
        base = max(base, min(interval, maxBackoff))
        return max(0.05, base * (1 + jitter * max(-1, min(1, unit))))
    }

    /// When the attempt that ran from `started` to `finished` is next due. A sound one
    /// (`failures` 0) an interval after it started, so a host is attested every interval
    /// whatever the attempt took; after a failure the backoff counts from its end.
    public func nextDue(started: Double, finished: Double, failures: Int, unit: Double) -> Double {
        let delay = delay(failures: failures, unit: unit)
        return failures == 0 ? max(started + delay, finished) : finished + delay
    }

    func pow2(_ n: Int) -> Double { Double(1 << n) }
}

/// Turns an attempt into what the store keeps and what notifications say: the host's verdict
/// with reasons, every VM's, the verdict changes with the log records behind them, and when to
/// come back. Pure: no clock, no randomness of its own, no I/O.
public enum Judge {
    public static func judge(_ claimed: ClaimedHost, _ result: AttemptResult, owner: String, started: Double, finished: Double,
                             cadence: Cadence, unit: Double) -> Completion {
        let host = claimed.registration.name
        var verdict: FleetVerdict
        var reasons: [String]
        var platform: FleetVerdict?
        var state: HostState?
        var vms: [VMStatus] = []
        var vmEvidence: [String: ChangeEvidence] = [:]
        var hostEvidence = ChangeEvidence.none
        var reason: String?
        let previousVMs = Dictionary(claimed.vms.map { ($0.uuid, $0) }, uniquingKeysWith: { a, _ in a })

        func inherit(_ v: FleetVerdict, _ why: String) {
            for old in claimed.vms {
                var vm = old
                vm.verdict = v
                vm.reasons = [why]
                vm.updatedAt = finished
                vms.append(vm)
            }
        }

        switch result {
        case .answered(let outcome, let newState):
            let report = outcome.report
            if !report.failedChecks.isEmpty {
                verdict = .failed
                reasons = report.failedChecks.map { "\($0.rule): \($0.reason)" }
                reason = report.failedChecks.first?.rule
                hostEvidence = ChangeEvidence(epoch: report.evidence.epoch, facts: [], records: [], failedChecks: report.failedChecks)
                inherit(.failed, "the host's evidence was rejected: \(reasons.first ?? "")")
            } else {
                let p = FleetVerdict(report.platform.level)
                platform = p
                state = newState
                let records = LogDelta.records(outcome.evidence.response)
                hostEvidence = ChangeEvidence(epoch: report.evidence.epoch, facts: facts(report.platform),
                                              records: LogDelta.json(records.filter { $0.domain == nil || $0.domain?.uuid == zeroUUID }),
                                              failedChecks: [])
                var worst = p
                var vmReasons: [String] = []
                var seen: Set<String> = []
                for d in report.domains where !d.uuid.isEmpty {
                    seen.insert(d.uuid)
                    let v = FleetVerdict(d.verdict.level)
                    if d.running {
                        worst = max(worst, v)
                        if v != .trusted { vmReasons += d.verdict.reasons.map { "VM \(d.name ?? d.uuid): \($0)" } }
                    }
                    vms.append(VMStatus(uuid: d.uuid, name: d.name, domid: d.domid, running: d.running, verdict: v, since: finished,
                                        reasons: d.verdict.reasons, updatedAt: finished))
                    vmEvidence[d.uuid] = ChangeEvidence(epoch: report.evidence.epoch, facts: facts(d.verdict),
                                                        records: LogDelta.json(records.filter { $0.domain?.uuidString == d.uuid }),
                                                        failedChecks: [])
                }
                for old in claimed.vms where !seen.contains(old.uuid) {
                    var vm = old
                    vm.running = false
                    vm.verdict = .unknown
                    vm.reasons = ["absent from the VMV's log (epoch \(report.evidence.epoch.map(String.init) ?? "?"))"]
                    vm.updatedAt = finished
                    vms.append(vm)
                }
                verdict = worst
                let e = report.evidence
                if verdict == .trusted {
                    reasons = ["platform and \(vms.filter { $0.running }.count) running VM(s) trusted; epoch \(e.epoch.map(String.init) ?? "?") records 0..<\(e.nextSeq ?? 0) (\(e.replay) replay)"]
                } else {
                    reasons = (p == .trusted ? [] : report.platform.reasons.map { "platform: \($0)" }) + vmReasons
                }
                reason = verdict == .trusted ? nil : verdict.rawValue
            }
        case .unreachable(let why):
            verdict = .unreachable
            reasons = [why]
            reason = "unreachable"
            inherit(.unreachable, "the host is unreachable: \(why)")
        case .hostError(let why):
            verdict = .failed
            reasons = [why]
            reason = "host_error"
            inherit(.failed, "the host answered with an error: \(why)")
        case .internalError(let why):
            verdict = .failed
            reasons = [why]
            reason = "internal"
            inherit(.failed, "not attested: \(why)")
        }

        // `since` stays while the verdict stays; every change is recorded.
        var changes: [VerdictChange] = []
        if verdict != claimed.verdict {
            changes.append(VerdictChange(id: 0, host: host, subject: .host, vmUUID: nil, vmName: nil, at: finished,
                                         previous: claimed.verdict, verdict: verdict, reasons: reasons, evidence: hostEvidence, owner: owner))
        }
        for i in vms.indices {
            let old = previousVMs[vms[i].uuid]
            if let old, old.verdict == vms[i].verdict {
                vms[i].since = old.since
                continue
            }
            changes.append(VerdictChange(id: 0, host: host, subject: .vm, vmUUID: vms[i].uuid, vmName: vms[i].name, at: finished,
                                         previous: old?.verdict, verdict: vms[i].verdict, reasons: vms[i].reasons,
                                         evidence: vmEvidence[vms[i].uuid] ?? hostEvidence, owner: owner))
        }

        let sound = platform != nil
        let failures = sound ? 0 : claimed.failures + 1
        let nextDue = cadence.nextDue(started: started, finished: finished, failures: failures, unit: unit)
        return Completion(host: host, owner: owner, started: started, finished: finished, verdict: verdict, reasons: reasons,
                          platform: platform, state: state, vms: vms, changes: changes, failures: failures,
                          nextDue: nextDue, reason: reason)
    }

    static let zeroUUID = [UInt8](repeating: 0, count: 16)

    /// The appraised facts of a verdict, those that decided it first (mismatches, then
    /// unknowns; matched facts only for a trusted verdict).
    static func facts(_ v: Verdict) -> [ChangeEvidence.Fact] {
        let order: [FactAppraisal.Result] = v.level == .trusted ? [.matched] : [.mismatch, .unknown]
        return order.flatMap { r in
            v.appraisals.filter { $0.result == r }.map {
                ChangeEvidence.Fact(label: $0.fact.label, value: $0.fact.valueDescription, result: $0.result.rawValue,
                                    firstSeq: $0.fact.firstSeq, lastSeq: $0.fact.lastSeq, expected: $0.expected, reason: $0.reason)
            }
        }
    }
}

/// The records an answer carried (the delta since the verifier's last position), decoded.
/// Only called for evidence that passed every check, so these records are the verified ones.
enum LogDelta {
    static func records(_ response: ServiceAPI.QuoteResponse) -> [VMVEventRecord] {
        guard let log = response.log, let header = Base64.decode(log.header), let body = Base64.decode(log.records),
              let parsed = try? TCGEventLog(bytes: header + body) else { return [] }
        return parsed.events.compactMap { try? VMVEventRecord(verifying: $0) }
    }

    static func json(_ records: [VMVEventRecord]) -> [String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return records.suffix(ChangeEvidence.maxRecords).compactMap { r in
            (try? encoder.encode(r)).map { String(decoding: $0, as: UTF8.self) }
        }
    }
}
