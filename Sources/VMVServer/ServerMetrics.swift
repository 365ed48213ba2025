import Prometheus

/// The service's Prometheus metrics, served at `/metrics`.
///
/// One registry per server (not the process-wide MetricsSystem), so several servers in one
/// process, as in the tests, each count their own.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    private let quotesBatched: Counter
    private let quotesUnbatched: Counter
    private let quoteRequests: Counter
    private let batchSize: ValueHistogram
    private let tpmQuoteDuration: DurationHistogram
    private let measurements: Counter
    private let logRecords: Gauge
    private let logEpoch: Gauge

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let quotes = Self.name("tpm_quotes", "total", "TPM quotes taken, by batching mode")
        quotesBatched = registry.makeCounter(descriptor: quotes, labels: [("mode", "batched")])
        quotesUnbatched = registry.makeCounter(descriptor: quotes, labels: [("mode", "unbatched")])
        quoteRequests = registry.makeCounter(descriptor: Self.name("quote_requests", "total", "Quote requests answered with a quote"))
        batchSize = registry.makeValueHistogram(descriptor: Self.name("quote_batch_size", "", "Quote requests served by one TPM quote"),
                                                buckets: Self.batchSizeBuckets)
        tpmQuoteDuration = registry.makeDurationHistogram(
            descriptor: Self.name("tpm_quote_duration", "seconds", "Time the TPM took for one quote, including the PCR read"),
            buckets: Self.tpmDurationBuckets)
        measurements = registry.makeCounter(descriptor: Self.name("measurements", "total", "Measurements logged and extended"))
        logRecords = registry.makeGauge(descriptor: Self.name("log_records", "", "Records in the current epoch's log"))
        logEpoch = registry.makeGauge(descriptor: Self.name("log_epoch", "", "The current log epoch"))
        // Register the error counters people alert on, so they show as 0 before the first error.
        for kind in ErrorKind.allCases { _ = errorCounter(kind.rawValue) }
    }

    // Typed constants: as literals in the overloaded make…Histogram calls they cost the type
    // checker minutes.
    static let batchSizeBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024]
    static let tpmDurationMilliseconds: [Int] = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000]
    static let tpmDurationBuckets: [Duration] = tpmDurationMilliseconds.map { Duration.milliseconds($0) }

    static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "vmv", metricName: metric, unitName: unit, helpText: help)
    }

    /// Kinds of errors counted by `vmv_errors_total{kind=…}`.
    public enum ErrorKind: String, CaseIterable, Sendable {
        case badRequest = "bad_request"
        case rateLimited = "rate_limited"
        case tpmQuote = "tpm_quote"
        case tpm = "tpm"
        case log = "log"
        case measurement = "measurement"
        case `internal` = "internal"
    }

    private func errorCounter(_ kind: String) -> Counter {
        registry.makeCounter(descriptor: Self.name("errors", "total", "Errors, by kind"), labels: [("kind", kind)])
    }

    public func recordQuote(batchSize size: Int, batched: Bool, duration: Duration) {
        (batched ? quotesBatched : quotesUnbatched).increment()
        batchSize.record(Double(size))
        tpmQuoteDuration.record(duration)
    }

    public func recordQuoteAnswered() { quoteRequests.increment() }

    public func recordError(kind: String) { errorCounter(kind).increment() }
    public func recordError(_ kind: ErrorKind) { errorCounter(kind.rawValue).increment() }

    public func recordMeasurement() { measurements.increment() }

    public func setLog(epoch: UInt32, records: UInt64) {
        logEpoch.set(Double(epoch))
        logRecords.set(Double(records))
    }

    public func recordHTTP(route: String, status: Int) {
        registry.makeCounter(descriptor: Self.name("http_requests", "total", "HTTP requests answered, by route and status"),
                             labels: [("route", route), ("status", String(status))]).increment()
    }

    /// The Prometheus text exposition.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
