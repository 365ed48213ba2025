import Synchronization

/// A token bucket per client (keyed by its certificate's fingerprint): `rate` requests a
/// second sustained, `burst` at once. A client over its budget gets 429 and the seconds until
/// its next token; other clients are not affected.
public final class RateLimiter: Sendable {
    public let rate: Double
    public let burst: Double
    /// Buckets kept at most; beyond it, full buckets (idle clients) are forgotten first.
    static let maxClients = 100_000

    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }
    private let buckets = Mutex<[String: Bucket]>([:])

    public init(ratePerSecond: Int, burst: Int) {
        self.rate = Double(max(1, ratePerSecond))
        self.burst = Double(max(1, burst))
    }

    /// Takes a token for `client`: nil when granted, else the seconds until one is available.
    public func acquire(_ client: String, now: ContinuousClock.Instant = .now) -> Double? {
        buckets.withLock { buckets in
            var bucket = buckets[client] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            bucket.tokens = min(burst, bucket.tokens + max(0, seconds) * rate)
            bucket.updated = now
            defer {
                if buckets.count >= Self.maxClients { Self.forgetIdle(&buckets, burst: burst, rate: rate, now: now) }
                buckets[client] = bucket
            }
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                return nil
            }
            return (1 - bucket.tokens) / rate
        }
    }

    private static func forgetIdle(_ buckets: inout [String: Bucket], burst: Double, rate: Double, now: ContinuousClock.Instant) {
        let refill = Duration.seconds(burst / rate)
        buckets = buckets.filter { now - $0.value.updated < refill }
        if buckets.count >= maxClients { buckets.removeAll(keepingCapacity: true) }
    }
}
