import NIOConcurrencyHelpers
import Prometheus

/// The verifier service's Prometheus metrics, served at `/metrics` (docs/fleet.md lists them).
/// One registry per service, so tests running several services in one process count apart.
public final class ServiceMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let duration: DurationHistogram
    private let lag: DurationHistogram
    private let inFlight: Gauge
    private let changes: Counter

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        duration = registry.makeDurationHistogram(
            name: "vmv_verifier_attestation_duration_seconds",
            buckets: [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                      .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30)],
            help: "Time of one attestation: connection, quote, every check and appraisal")
        lag = registry.makeDurationHistogram(
            name: "vmv_verifier_schedule_lag_seconds",
            buckets: [.milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                      .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60)],
            help: "How late an attestation started after its host fell due (a verifier that keeps up keeps this small)")
        inFlight = registry.makeGauge(name: "vmv_verifier_attestations_in_flight", help: "Attestations running now in this process")
        changes = registry.makeCounter(name: "vmv_verifier_verdict_changes_total", help: "Verdict changes recorded (hosts and VMs)")
        for v in FleetVerdict.allCases where v != .pending {
            _ = attestations(v)
            _ = hosts(v)
        }
        _ = hosts(.pending)
        for r in ["unreachable", "host_error", "internal", "untrusted", "unknown"] { _ = failures(r) }
        for r in ["delivered", "retried", "dropped"] { _ = webhooks(r) }
    }

    private func attestations(_ v: FleetVerdict) -> Counter {
        registry.makeCounter(name: "vmv_verifier_attestations_total", labels: [("verdict", v.rawValue)],
                             help: "Attestations finished, by the host verdict they gave")
    }

    private func failures(_ reason: String) -> Counter {
        registry.makeCounter(name: "vmv_verifier_attestation_failures_total", labels: [("reason", reason)],
                             help: "Attestations that did not end trusted, by reason (a failed evidence rule, unreachable, untrusted, …)")
    }

    private func hosts(_ v: FleetVerdict) -> Gauge {
        registry.makeGauge(name: "vmv_verifier_hosts", labels: [("state", v.rawValue)], help: "Hosts in each state (the whole fleet, from the store)")
    }

    private func webhooks(_ result: String) -> Counter {
        registry.makeCounter(name: "vmv_verifier_webhook_deliveries_total", labels: [("result", result)],
                             help: "Webhook delivery attempts, by result")
    }

    public func recordAttestation(verdict: FleetVerdict, reason: String?, duration d: Duration, lag l: Duration, changes n: Int) {
        attestations(verdict).increment()
        if let reason { failures(reason).increment() }
        duration.record(d)
        lag.record(max(.zero, l))
        if n > 0 { changes.increment(by: Int64(n)) }
    }

    public func setInFlight(_ n: Int) { inFlight.set(Double(n)) }

    public func setHosts(_ counts: [FleetVerdict: Int]) {
        for v in FleetVerdict.allCases { hosts(v).set(Double(counts[v] ?? 0)) }
    }

    public func recordWebhook(_ result: String) { webhooks(result).increment() }

    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
