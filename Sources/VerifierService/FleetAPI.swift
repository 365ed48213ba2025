import Crypto
import FoundationEssentials
import HTTPTypes
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import TPMWire
import Verifier
import X509

/// The request context: Hummingbird's, plus the channel (for the client certificate).
public struct FleetRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// An API error: status, a stable code, a message. Rendered `{"error": {"code", "message"}}`.
public struct FleetAPIError: Error, Sendable {
    public let status: Int
    public let code: String
    public let message: String

    public init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }
}

/// The API's error body (the same shape as the VMV host API's).
public struct FleetErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
    }
    public var error: Detail
}

/// The fleet as `GET /v1/status` returns it.
public struct FleetStatus: Codable, Sendable {
    public var generatedAt: Double
    public var counts: [String: Int]
    public var hosts: [HostStatus]
}

/// What the service shows: stored verdicts, with a verdict older than `staleAfter` shown as
/// unreachable (the verifier that should have renewed it is gone or stuck): never a stale
/// `trusted`.
public struct FleetView: Sendable {
    public let store: FleetStore
    public let staleAfter: Double

    public init(store: FleetStore, staleAfter: Double) {
        self.store = store
        self.staleAfter = staleAfter
    }

    public func hosts(name: String? = nil, now: Double = Timestamp.now) async throws -> [HostStatus] {
        try await store.hosts(name: name).map { present($0, now: now) }
    }

    public func present(_ h: HostStatus, now: Double) -> HostStatus {
        guard h.verdict != .pending, h.verdict != .unreachable else { return h }
        let last = h.lastAttempt ?? h.addedAt
        guard now - last > staleAfter else { return h }
        var out = h
        let why = "stale: no attestation since \(Timestamp.iso(last)) (more than \(Int(staleAfter)) s ago); last verdict \(h.verdict.rawValue)"
        out.verdict = .unreachable
        out.reasons = [why] + h.reasons
        for i in out.vms.indices where out.vms[i].verdict != .unreachable {
            out.vms[i].reasons = [why] + out.vms[i].reasons
            out.vms[i].verdict = .unreachable
        }
        return out
    }

    public func status(now: Double = Timestamp.now) async throws -> FleetStatus {
        let hosts = try await hosts(now: now)
        var counts: [String: Int] = [:]
        for h in hosts { counts[h.verdict.rawValue, default: 0] += 1 }
        return FleetStatus(generatedAt: now, counts: counts, hosts: hosts)
    }
}

/// The management API, the SSE stream, the metrics and the operator's page, over mutual TLS
/// (docs/fleet.md, "API").
public struct FleetAPI: Sendable {
    public let view: FleetView
    public let feed: ChangeFeed
    public let metrics: ServiceMetrics
    /// Reference-set names hosts may use.
    public let referenceSets: Set<String>
    public let defaultInterval: Int
    public let logger: Logger

    public init(view: FleetView, feed: ChangeFeed, metrics: ServiceMetrics, referenceSets: Set<String>, defaultInterval: Int, logger: Logger) {
        self.view = view
        self.feed = feed
        self.metrics = metrics
        self.referenceSets = referenceSets
        self.defaultInterval = defaultInterval
        self.logger = logger
    }

    var store: FleetStore { view.store }

    public func router() -> Router<FleetRequestContext> {
        let router = Router(context: FleetRequestContext.self)
        router.add(middleware: FleetErrorMiddleware(logger: logger))
        router.add(middleware: ClientCertificateMiddleware())
        router.get("/") { request, _ in
            let q = request.uri.queryParameters["q"].map(String.init) ?? ""
            return Self.html(WebPage.overview(try await view.status(), filter: q))
        }
        router.get("/hosts/:name") { _, context in
            let name = try context.parameters.require("name")
            guard let host = try await view.hosts(name: name).first else { throw FleetAPIError(404, "no_such_host", "no host named \(name)") }
            return Self.html(WebPage.host(host, changes: try await store.changes(host: name, limit: 5000)))
        }
        router.get("/healthz") { _, _ in
            _ = try await store.database.schemaVersion()
            return try Self.json(["status": "ok"])
        }
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
        router.get("/v1/status") { _, _ in try Self.json(try await view.status()) }
        router.get("/v1/hosts") { _, _ in try Self.json(try await view.hosts()) }
        router.get("/v1/hosts/:name") { _, context in
            let name = try context.parameters.require("name")
            guard let host = try await view.hosts(name: name).first else { throw FleetAPIError(404, "no_such_host", "no host named \(name)") }
            return try Self.json(host)
        }
        router.post("/v1/hosts") { request, context in try await add(request, context) }
        router.delete("/v1/hosts/:name") { _, context in
            let name = try context.parameters.require("name")
            guard try await store.removeHost(name) else { throw FleetAPIError(404, "no_such_host", "no host named \(name)") }
            logger.notice("host removed", metadata: ["host": "\(name)"])
            return Response(status: .noContent)
        }
        router.get("/v1/history") { request, _ in try await history(request) }
        router.get("/v1/events") { request, _ in try await events(request) }
        return router
    }

    // MARK: Handlers

    func add(_ request: Request, _ context: FleetRequestContext) async throws -> Response {
        let buffer = try await request.body.collect(upTo: 1 << 20)
        let data = Data(buffer.readableBytesView)
        // One host, or an array of hosts (spread over one interval, as a fleet is brought in).
        var registrations: [HostRegistration]
        let single: Bool
        do {
            if data.first(where: { $0 != 0x20 && $0 != 0x0a && $0 != 0x09 && $0 != 0x0d }) == UInt8(ascii: "[") {
                registrations = try JSONDecoder().decode([HostRegistration].self, from: data)
                single = false
            } else {
                registrations = [try JSONDecoder().decode(HostRegistration.self, from: data)]
                single = true
            }
        } catch {
            throw FleetAPIError(400, "bad_request", "the body is not a host registration (JSON): \(ReferenceDocument.describe(error))")
        }
        for r in registrations {
            if let problem = r.problem { throw FleetAPIError(400, "bad_registration", "\(r.name): \(problem)") }
            guard referenceSets.contains(r.referenceSet) else {
                throw FleetAPIError(400, "unknown_reference_set",
                                    "\(r.name): reference set '\(r.referenceSet)' is not configured (known: \(referenceSets.sorted().joined(separator: ", ")))")
            }
            if let pin = r.akPin, pin.schema != AKPin.schema || Base64.decode(pin.akPublic) == nil {
                throw FleetAPIError(400, "bad_ak_pin", "\(r.name): akPin is not a `vmv-verifier enroll` pin (\(AKPin.schema))")
            }
        }
        let now = Timestamp.now
        var added: [String] = []
        for r in registrations {
            let interval = Double(r.intervalSeconds ?? defaultInterval)
            let due = single ? now : now + Double.random(in: 0..<interval)
            do {
                try await store.addHost(r, now: now, firstDue: due)
            } catch let e as StorageError where e.kind == .duplicate {
                throw FleetAPIError(409, "duplicate_host", e.description + (added.isEmpty ? "" : " (added before it: \(added.count) hosts)"))
            }
            added.append(r.name)
        }
        logger.notice("hosts added", metadata: ["count": "\(added.count)", "first": "\(added.first ?? "")"])
        if single, let name = added.first, let host = try await view.hosts(name: name).first {
            return try Self.json(host, status: .created)
        }
        return try Self.json(["added": added.count], status: .created)
    }

    func history(_ request: Request) async throws -> Response {
        let q = request.uri.queryParameters
        let host = q["host"].map(String.init)
        let vm = q["vm"].map(String.init)
        if let atText = q["at"] {
            guard let host else { throw FleetAPIError(400, "bad_request", "at= needs host=") }
            guard let at = Timestamp.parse(String(atText)) else {
                throw FleetAPIError(400, "bad_time", "at='\(atText)': an ISO 8601 time (2025-01-31T12:00:00Z) or unix seconds")
            }
            return try Self.json(try await store.verdict(host: host, vm: vm, at: at))
        }
        let after = try q["after"].map { (s: Substring) throws -> Int64 in
            guard let v = Int64(s), v >= 0 else { throw FleetAPIError(400, "bad_request", "after='\(s)': a change id") }
            return v
        } ?? 0
        let limit = try q["limit"].map { (s: Substring) throws -> Int in
            guard let v = Int(s), (1...100_000).contains(v) else { throw FleetAPIError(400, "bad_request", "limit='\(s)': 1–100000") }
            return v
        } ?? 1000
        return try Self.json(try await store.changes(host: host, vm: vm, afterID: after, limit: limit))
    }

    func events(_ request: Request) async throws -> Response {
        var after: Int64?
        if let text = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters["after"].map(String.init) {
            guard let v = Int64(text), v >= 0 else { throw FleetAPIError(400, "bad_request", "Last-Event-ID '\(text)': a change id") }
            after = v
        }
        let changes = try await feed.subscribe(after: after)
        let (out, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let forward = Task {
            continuation.yield(ByteBuffer(string: ": vmv-verifier verdict changes\nretry: 2000\n\n"))
            for await change in changes {
                guard let json = try? encoder.encode(change) else { continue }
                continuation.yield(ByteBuffer(string: "id: \(change.id)\nevent: verdict\ndata: \(String(decoding: json, as: UTF8.self))\n\n"))
            }
            continuation.finish()
        }
        // A comment now and then keeps proxies and idle timeouts from closing a quiet stream.
        let heartbeat = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(15))
                continuation.yield(ByteBuffer(string: ": keepalive\n\n"))
            }
        }
        continuation.onTermination = { _ in
            forward.cancel()
            heartbeat.cancel()
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: out))
    }

    // MARK: Encoding

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    static func html(_ page: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        // Everything the page needs is in it: no other origin may be loaded or framed.
        headers[.contentSecurityPolicy] = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: page)))
    }

    static func errorResponse(_ e: FleetAPIError) -> Response {
        let body = FleetErrorBody(error: .init(code: e.code, message: e.message))
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        let data = (try? JSONEncoder().encode(body)) ?? Data(#"{"error":{"code":"internal","message":"error"}}"#.utf8)
        return Response(status: HTTPResponse.Status(code: e.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    // MARK: Server

    /// The server's TLS: its certificate, and client certificates required and chained to the client CA.
    public static func tlsConfiguration(certificate: String, key: String, clientCA: String) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(certificate)
        guard !chain.isEmpty else { throw FleetAPIError(500, "tls", "\(certificate): no certificate") }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                          privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
        // Server side: a client certificate is required and verified (BoringSSL
        // VERIFY_PEER | FAIL_IF_NO_PEER_CERT); clients have no host name to check.
        tls.certificateVerification = .noHostnameVerification
        tls.minimumTLSVersion = .tlsv12
        _ = try NIOSSLContext(configuration: tls)
        return tls
    }

    public func application(address: String, port: Int, tls: TLSConfiguration,
                            onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        Application(
            router: router(),
            server: try .tls(.http1(), configuration: TLSChannelConfiguration(tlsConfiguration: tls)),
            configuration: ApplicationConfiguration(address: .hostname(address, port: port), serverName: nil),
            onServerRunning: onServerRunning,
            logger: logger)
    }
}

/// Every failure as `{"error": {"code", "message"}}` with its status; never a stack trace.
struct FleetErrorMiddleware: RouterMiddleware {
    typealias Context = FleetRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as FleetAPIError {
            return FleetAPI.errorResponse(e)
        } catch let e as HTTPError {
            let status = e.status.code
            let code = status == 404 ? "not_found" : status == 405 ? "method_not_allowed" : status == 413 ? "too_large" : "http_\(status)"
            return FleetAPI.errorResponse(FleetAPIError(status, code, e.body ?? (status == 404 ? "no such endpoint: \(request.method) \(request.uri.path)" : e.status.reasonPhrase)))
        } catch let e as StorageError {
            logger.error("storage", metadata: ["path": "\(request.uri.path)", "error": "\(e)"])
            return FleetAPI.errorResponse(FleetAPIError(503, "storage", "the store failed: \(e.description)"))
        } catch {
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return FleetAPI.errorResponse(FleetAPIError(500, "internal", "the request failed; the service's log says why"))
        }
    }
}

/// TLS already required a client certificate chained to the client CA; this refuses one made
/// for a server (a VMV host's certificate from the same CA does not make it an operator).
struct ClientCertificateMiddleware: RouterMiddleware {
    typealias Context = FleetRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let certificate = try await context.channel.nioSSL_peerCertificate().get() else {
            throw FleetAPIError(401, "no_client_certificate", "this connection presented no client certificate")
        }
        let parsed = try Certificate(derEncoded: try certificate.toDERBytes())
        if let eku = try parsed.extensions.extendedKeyUsage, !eku.contains(.clientAuth), !eku.contains(.any) {
            throw FleetAPIError(403, "not_a_client_certificate", "the client certificate lacks the clientAuth extended key usage")
        }
        return try await next(request, context)
    }
}
