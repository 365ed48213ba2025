import FoundationEssentials
import Logging

/// The stream of verdict changes behind `GET /v1/events`: it reads the store (not this
/// process's memory), so a client sees the changes of every verifier process sharing the
/// database, and one that reconnects with `Last-Event-ID` misses nothing.
///
/// PostgreSQL hands out ids when a transaction inserts, not when it commits, so a change with a
/// lower id may become visible after a higher one: ids skipped over are looked for again for
/// `gapWindow`, then given up (a rolled-back insert leaves a gap forever).
public actor ChangeFeed {
    let store: FleetStore
    let pollInterval: Duration
    let logger: Logger
    private var last: Int64 = 0
    private var gaps: [Int64: ContinuousClock.Instant] = [:]
    private var subscribers: [UUID: AsyncStream<VerdictChange>.Continuation] = [:]
    private var poller: Task<Void, Never>?
    static let gapWindow: Duration = .seconds(30)

    public init(store: FleetStore, pollInterval: Duration = .milliseconds(250), logger: Logger) {
        self.store = store
        self.pollInterval = pollInterval
        self.logger = logger
    }

    /// Changes after `lastEventID` (from the store), then every new one as it is recorded.
    public func subscribe(after lastEventID: Int64?) async throws -> AsyncStream<VerdictChange> {
        if poller == nil {
            // Start from the newest change: a new subscriber without Last-Event-ID gets new changes.
            last = try await store.newestChangeID()
            poller = Task { await self.poll() }
        }
        let (stream, continuation) = AsyncStream<VerdictChange>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        if let after = lastEventID, after < last {
            for change in try await store.changes(afterID: after, limit: 10_000) where change.id <= last {
                continuation.yield(change)
            }
        }
        let id = UUID()
        subscribers[id] = continuation
        continuation.onTermination = { _ in Task { await self.unsubscribe(id) } }
        return stream
    }

    func unsubscribe(_ id: UUID) {
        subscribers[id] = nil
    }

    public func stop() {
        poller?.cancel()
        for c in subscribers.values { c.finish() }
        subscribers = [:]
    }

    private func poll() async {
        while !Task.isCancelled {
            do {
                try await fetch()
            } catch {
                logger.warning("change feed: \(error)")
            }
            try? await Task.sleep(for: pollInterval)
        }
    }

    private func fetch() async throws {
        guard !subscribers.isEmpty else {
            last = try await store.newestChangeID()
            gaps = [:]
            return
        }
        var found = try await store.changes(afterID: last, limit: 10_000)
        let now = ContinuousClock.now
        gaps = gaps.filter { now - $0.value < Self.gapWindow }
        if !gaps.isEmpty {
            found += try await store.changes(ids: Array(gaps.keys))
        }
        found.sort { $0.id < $1.id }
        for change in found {
            if gaps.removeValue(forKey: change.id) == nil, change.id > last {
                var missing = last + 1
                while missing < change.id && gaps.count < 10_000 {
                    gaps[missing] = now
                    missing += 1
                }
                last = change.id
            }
            for c in subscribers.values { c.yield(change) }
        }
    }
}
