import AsyncHTTPClient
import FoundationEssentials
import Logging
import NIOCore
import NIOSSL
import NIOConcurrencyHelpers

/// Where verdict changes are posted and how hard to try.
public struct WebhookSettings: Sendable, Equatable {
    /// http:// (loopback receivers) or https:// URLs; empty: no webhooks.
    public var urls: [String]
    public var secret: [UInt8]
    /// Attempts per delivery (the first and the retries).
    public var maxAttempts: Int
    /// The first retry waits this long; each next one twice as long, up to `maxDelay`.
    public var firstDelay: Duration
    public var maxDelay: Duration
    public var timeout: Duration
    /// PEM CA certificates for https receivers (nil: the system's trust store).
    public var caFile: String?

    public init(urls: [String] = [], secret: [UInt8] = [], maxAttempts: Int = 8, firstDelay: Duration = .seconds(1),
                maxDelay: Duration = .seconds(300), timeout: Duration = .seconds(10), caFile: String? = nil) {
        self.urls = urls
        self.secret = secret
        self.maxAttempts = maxAttempts
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self.timeout = timeout
        self.caFile = caFile
    }

    /// The wait before retry `n` (1 = the first retry).
    public func delay(retry n: Int) -> Duration {
        var d = firstDelay
        for _ in 1..<max(1, n) {
            d = d * 2
            if d >= maxDelay { return maxDelay }
        }
        return min(d, maxDelay)
    }
}

/// The body of a webhook: the changes one attestation made.
public struct WebhookEvent: Codable, Sendable {
    public var type: String
    /// Unique per event; retries carry the same id (receivers deduplicate on it).
    public var id: String
    public var host: String
    public var changes: [VerdictChange]
}

/// Posts verdict changes to the configured URLs, signed (`WebhookSignature`), retrying with
/// exponential backoff. Deliveries run in the background; a receiver that is down delays only
/// its own deliveries. Pending deliveries live in memory: the durable record of every change
/// is the store (`GET /v1/history`, the SSE stream's `Last-Event-ID`).
public final class WebhookDispatcher: Sendable {
    let settings: WebhookSettings
    let client: HTTPClient?
    let metrics: ServiceMetrics
    let logger: Logger
    let pending = PendingCounter()
    /// Deliveries beyond this many in flight are dropped (and counted).
    static let maxPending = 10_000

    public init(settings: WebhookSettings, metrics: ServiceMetrics, logger: Logger) throws {
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        guard !settings.urls.isEmpty else {
            client = nil
            return
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let ca = settings.caFile {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                                     timeout: .init(connect: .seconds(5), read: .seconds(Int64(settings.timeout.components.seconds))))
        configuration.httpVersion = .http1Only
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func shutdown() async {
        try? await client?.shutdown()
    }

    /// Queues the changes of one attestation for every URL.
    public func send(host: String, changes: [VerdictChange]) {
        guard let client, !changes.isEmpty else { return }
        let event = WebhookEvent(type: "verdict.changed", id: UUID().uuidString.lowercased(), host: host, changes: changes)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let body = try? encoder.encode(event) else { return }
        for url in settings.urls {
            guard pending.increment(limit: Self.maxPending) else {
                metrics.recordWebhook("dropped")
                logger.error("webhook dropped: too many deliveries pending", metadata: ["url": "\(url)", "id": "\(event.id)"])
                continue
            }
            Task { [self] in
                await deliver(client, url: url, id: event.id, body: Array(body))
                pending.decrement()
            }
        }
    }

    func deliver(_ client: HTTPClient, url: String, id: String, body: [UInt8]) async {
        for attempt in 1...max(1, settings.maxAttempts) {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "content-type", value: "application/json")
            request.headers.add(name: WebhookSignature.idHeader, value: id)
            request.headers.add(name: "VMV-Webhook-Attempt", value: String(attempt))
            // Signed at each attempt: the timestamp is the sending time.
            request.headers.add(name: WebhookSignature.header,
                                value: WebhookSignature.sign(body: body, secret: settings.secret, timestamp: Int(Timestamp.now)))
            request.body = .bytes(ByteBuffer(bytes: body))
            var why = ""
            do {
                let response = try await client.execute(request, timeout: .seconds(Int64(settings.timeout.components.seconds)))
                _ = try? await response.body.collect(upTo: 64 * 1024)
                if (200..<300).contains(response.status.code) {
                    metrics.recordWebhook("delivered")
                    return
                }
                why = "HTTP \(response.status.code)"
            } catch {
                why = "\(error)"
            }
            guard attempt < settings.maxAttempts else {
                metrics.recordWebhook("dropped")
                logger.error("webhook not delivered", metadata: ["url": "\(url)", "id": "\(id)", "attempts": "\(attempt)", "last": "\(why)"])
                return
            }
            metrics.recordWebhook("retried")
            logger.warning("webhook delivery failed; retrying", metadata: ["url": "\(url)", "id": "\(id)", "attempt": "\(attempt)", "reason": "\(why)"])
            do { try await Task.sleep(for: settings.delay(retry: attempt)) } catch { return }
        }
    }
}

final class PendingCounter: Sendable {
    private let count = NIOLockedValueBox(0)

    func increment(limit: Int) -> Bool {
        count.withLockedValue {
            guard $0 < limit else { return false }
            $0 += 1
            return true
        }
    }

    func decrement() { count.withLockedValue { $0 -= 1 } }
}
