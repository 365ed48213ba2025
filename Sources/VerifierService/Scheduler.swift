import FoundationEssentials
import Logging

/// Attests the hosts that fall due: claims them from the store under a lease, runs up to
/// `maxConcurrent` attestations at once, judges each, writes the outcome under the lease, and
/// hands verdict changes to the notifications. Several schedulers (processes) on one
/// PostgreSQL database share the fleet; none attests a host another holds.
public actor Scheduler {
    public struct Settings: Sendable {
        public var owner: String
        public var cadence: Cadence
        public var leaseSeconds: Double
        public var maxConcurrent: Int
        /// How long attempts are kept in the store.
        public var retentionSeconds: Double

        public init(owner: String, cadence: Cadence, leaseSeconds: Double, maxConcurrent: Int, retentionSeconds: Double) {
            self.owner = owner
            self.cadence = cadence
            self.leaseSeconds = leaseSeconds
            self.maxConcurrent = maxConcurrent
            self.retentionSeconds = retentionSeconds
        }
    }

    let store: FleetStore
    let settings: Settings
    let attest: @Sendable (ClaimedHost) async -> AttemptResult
    let onChanges: @Sendable (String, [VerdictChange]) async -> Void
    let metrics: ServiceMetrics
    let logger: Logger
    private var inFlight = 0
    private var slotFreed: CheckedContinuation<Void, Never>?

    public init(store: FleetStore, settings: Settings, metrics: ServiceMetrics, logger: Logger,
                attest: @escaping @Sendable (ClaimedHost) async -> AttemptResult,
                onChanges: @escaping @Sendable (String, [VerdictChange]) async -> Void) {
        self.store = store
        self.settings = settings
        self.attest = attest
        self.onChanges = onChanges
        self.metrics = metrics
        self.logger = logger
    }

    /// Runs until the task is cancelled; then waits for the attempts in flight (their outcome
    /// is written) and gives back the leases it still holds.
    public func run() async {
        var lastHousekeeping = ContinuousClock.now - .seconds(3600)
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let now = Timestamp.now
                if ContinuousClock.now - lastHousekeeping > .seconds(5) {
                    lastHousekeeping = ContinuousClock.now
                    await housekeeping(now: now)
                }
                let free = settings.maxConcurrent - inFlight
                var claimed: [ClaimedHost] = []
                if free > 0 {
                    do {
                        claimed = try await store.claimDue(owner: settings.owner, now: now, leaseSeconds: settings.leaseSeconds,
                                                           limit: min(free, 256))
                    } catch {
                        logger.error("cannot claim due hosts: \(error)")
                    }
                }
                for host in claimed {
                    inFlight += 1
                    metrics.setInFlight(inFlight)
                    group.addTask { await self.attempt(host, claimedAt: now) }
                }
                if free > 0 && claimed.count == min(free, 256) { continue }   // more may be due right now
                await pause(free: free - claimed.count)
            }
        }
        do { try await store.releaseLeases(owner: settings.owner) } catch {
            logger.warning("cannot release leases: \(error)")
        }
    }

    /// Waits until a slot frees (when all are busy) or the next host may be due.
    private func pause(free: Int) async {
        if free <= 0 {
            await withCheckedContinuation { slotFreed = $0 }
            return
        }
        var wait = 0.25
        if let due = try? await store.nextDue() {
            wait = max(0.01, min(0.25, due - Timestamp.now))
        }
        try? await Task.sleep(for: .milliseconds(Int(wait * 1000)))
    }

    private func finished() {
        inFlight -= 1
        metrics.setInFlight(inFlight)
        slotFreed?.resume()
        slotFreed = nil
    }

    private func attempt(_ host: ClaimedHost, claimedAt: Double) async {
        defer { finished() }
        let started = Timestamp.now
        let clock = ContinuousClock.now
        let result = await attest(host)
        let finished = Timestamp.now
        let completion = Judge.judge(host, result, owner: settings.owner, started: started, finished: finished,
                                     cadence: cadence(for: host), unit: Double.random(in: -1...1))
        do {
            let changes = try await store.complete(completion)
            metrics.recordAttestation(verdict: completion.verdict, reason: completion.reason, duration: ContinuousClock.now - clock,
                                      lag: .milliseconds(Int64(max(0, started - host.due) * 1000)),
                                      changes: changes.count)
            if !changes.isEmpty {
                for c in changes {
                    logger.notice("verdict change", metadata: [
                        "host": "\(c.host)", "subject": "\(c.vmName ?? c.vmUUID ?? "host")", "from": "\(c.previous?.rawValue ?? "-")",
                        "to": "\(c.verdict.rawValue)", "reason": "\(c.reasons.first ?? "")"])
                }
                await onChanges(host.registration.name, changes)
            }
        } catch let e as StorageError where e.kind == .conflict {
            logger.warning("lease lost; outcome discarded", metadata: ["host": "\(host.registration.name)", "reason": "\(e)"])
        } catch {
            logger.error("cannot store the outcome", metadata: ["host": "\(host.registration.name)", "error": "\(error)"])
        }
    }

    private func cadence(for host: ClaimedHost) -> Cadence {
        var c = settings.cadence
        if let i = host.registration.intervalSeconds { c.interval = Double(i) }
        return c
    }

    private func housekeeping(now: Double) async {
        do {
            metrics.setHosts(try await store.countsByVerdict())
            try await store.pruneAttempts(before: now - settings.retentionSeconds)
        } catch {
            logger.warning("housekeeping: \(error)")
        }
    }
}
