import ConfigFile
import Crypto
import FoundationEssentials
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTPTypes
import NIOSSL
import TPMWire
import Verifier
import X509

/// The request context: Hummingbird's, plus the channel, for the client certificate.
public struct VMVRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The verified client certificate of this connection (TLS required and checked it).
    func clientCertificate() async throws -> NIOSSLCertificate {
        guard let certificate = try await channel.nioSSL_peerCertificate().get() else {
            throw APIError(401, "no_client_certificate", "this connection presented no client certificate")
        }
        return certificate
    }
}

/// Who is asking: the SHA-256 fingerprint of the client certificate (the rate-limit key) and
/// its subject, for the logs.
struct ClientIdentity {
    let fingerprint: String
    let subject: String

    init(_ certificate: NIOSSLCertificate) throws {
        let der = try certificate.toDERBytes()
        fingerprint = Hex.encode(Array(SHA256.hash(data: der)))
        let parsed = try Certificate(derEncoded: der)
        subject = parsed.subject.description
        // The CA also signs the server certificate: a certificate made for a server does not
        // make its holder a verifier. (BoringSSL already refuses it in the handshake, as the
        // chain check asks for the client purpose; this stays in case a TLS library does not.)
        if let eku = try parsed.extensions.extendedKeyUsage, !eku.contains(.clientAuth), !eku.contains(.any) {
            throw APIError(403, "not_a_client_certificate", "the client certificate lacks the clientAuth extended key usage")
        }
    }
}

/// The TLS material a server presents and trusts, loaded from files, and the hash of the key
/// it presents (what every quote binds).
public struct TLSMaterial: Sendable {
    public let configuration: TLSConfiguration
    public let tlsKeyHash: [UInt8]

    public init(certificate: String, privateKey: String, clientCA: String) throws(ConfigurationError) {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificate) } catch {
            throw ConfigurationError(file: certificate, line: nil, reason: "cannot read the server certificate: \(error)")
        }
        guard let leaf = chain.first else {
            throw ConfigurationError(file: certificate, line: nil, reason: "no certificate in the file")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: privateKey, format: .pem) } catch {
            throw ConfigurationError(file: privateKey, line: nil, reason: "cannot read the server key: \(error)")
        }
        let roots: [NIOSSLCertificate]
        do { roots = try NIOSSLCertificate.fromPEMFile(clientCA) } catch {
            throw ConfigurationError(file: clientCA, line: nil, reason: "cannot read the client CA: \(error)")
        }
        guard !roots.isEmpty else { throw ConfigurationError(file: clientCA, line: nil, reason: "no certificate in the file") }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                          privateKey: .privateKey(key))
        tls.trustRoots = .certificates(roots)
        // Server side: a client certificate is required and its chain verified against the
        // client CA (BoringSSL: VERIFY_PEER | FAIL_IF_NO_PEER_CERT); clients have no host name.
        tls.certificateVerification = .noHostnameVerification
        tls.minimumTLSVersion = .tlsv12
        do {
            _ = try NIOSSLContext(configuration: tls)   // a key that does not fit the certificate fails here
        } catch {
            throw ConfigurationError(file: privateKey, line: nil, reason: "the key and certificate \(certificate) cannot be used together: \(error)")
        }
        // The hash of the key the handshake presents: the first certificate of the chain we serve.
        do {
            tlsKeyHash = try QuoteBinding.tlsKeyHash(certificateDER: try leaf.toDERBytes())
        } catch {
            throw ConfigurationError(file: certificate, line: nil, reason: "\(error)")
        }
        configuration = tls
    }
}

/// Closes a connection whose request has not arrived whole within `timeout` of its head, so
/// a client that trickles a body cannot hold a connection forever. (Before the head, and
/// between requests, Hummingbird's idle timeout applies; it covers a stalled TLS handshake too.)
final class RequestTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    let timeout: TimeAmount
    private var scheduled: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            scheduled?.cancel()
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            scheduled = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
        case .end:
            scheduled?.cancel()
            scheduled = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
        context.fireChannelInactive()
    }
}

/// Turns every failure into `{"error": {"code", "message"}}` with its status, and counts
/// requests by route and status.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = VMVRequestContext
    let metrics: ServerMetrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let route = context.endpointPath ?? "unmatched"
        do {
            let response = try await next(request, context)
            metrics.recordHTTP(route: context.endpointPath ?? route, status: response.status.code)
            return response
        } catch let error as APIError {
            metrics.recordHTTP(route: context.endpointPath ?? route, status: error.status)
            if error.status >= 500 { logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"]) }
            return APIServer.errorResponse(error)
        } catch let error as HTTPError {
            let status = error.status.code
            let code = switch status {
            case 400: "bad_request"
            case 404: "not_found"
            case 405: "method_not_allowed"
            case 413: "too_large"
            default: "http_\(status)"
            }
            metrics.recordHTTP(route: context.endpointPath ?? route, status: status)
            if status == 413 { metrics.recordError(.badRequest) }
            let message = error.body ?? (status == 404 ? "no such endpoint: \(request.method) \(request.uri.path)" : "\(error.status.reasonPhrase)")
            return APIServer.errorResponse(APIError(status, code, message))
        } catch {
            metrics.recordHTTP(route: context.endpointPath ?? route, status: 500)
            metrics.recordError(.internal)
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return APIServer.errorResponse(APIError(500, "internal", "the request failed on the host; its log says why"))
        }
    }
}

/// The routes of the API (docs/api.md).
public struct APIServer: Sendable {
    public let backend: any AttestationBackend
    public let batcher: QuoteBatcher
    public let metrics: ServerMetrics
    public let limiter: RateLimiter
    public let maxBodyBytes: Int
    public let logger: Logger

    public init(backend: any AttestationBackend, batcher: QuoteBatcher, metrics: ServerMetrics, limiter: RateLimiter,
                maxBodyBytes: Int, logger: Logger) {
        self.backend = backend
        self.batcher = batcher
        self.metrics = metrics
        self.limiter = limiter
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
    }

    /// A Hummingbird application serving the API over mutual TLS.
    public static func application(
        configuration: ServerConfiguration, tls: TLSMaterial, backend: any AttestationBackend, metrics: ServerMetrics,
        logger: Logger, onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        let batcher = QuoteBatcher(
            configuration: .init(enabled: configuration.batching, window: .milliseconds(configuration.batchWindowMilliseconds),
                                 maxBatch: configuration.maxBatch),
            tlsKeyHash: tls.tlsKeyHash, metrics: metrics,
            signer: { selection, qualifyingData in try await backend.quote(selection, qualifyingData: qualifyingData) })
        let server = APIServer(backend: backend, batcher: batcher, metrics: metrics,
                               limiter: RateLimiter(ratePerSecond: configuration.ratePerSecond, burst: configuration.rateBurst),
                               maxBodyBytes: configuration.maxBodyBytes, logger: logger)
        let requestTimeout = TimeAmount.seconds(Int64(configuration.requestTimeoutSeconds))
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [RequestTimeoutHandler(timeout: requestTimeout)],
            idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds)))
        return Application(
            router: server.router(),
            server: try .tls(.http1(configuration: http1), configuration: TLSChannelConfiguration(tlsConfiguration: tls.configuration)),
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.address, port: configuration.port),
                serverName: nil,
                availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections)),
            onServerRunning: onServerRunning,
            logger: logger)
    }

    public func router() -> Router<VMVRequestContext> {
        let router = Router(context: VMVRequestContext.self)
        router.add(middleware: APIErrorMiddleware(metrics: metrics, logger: logger))
        router.post("/v1/quote") { request, context in try await quote(request, context) }
        router.get("/v1/ak") { _, context in
            try await admit(context)
            return try Self.json(try await backend.keys())
        }
        router.post("/v1/enroll/activate") { request, context in try await activate(request, context) }
        router.post("/v1/enroll/certificate") { request, context in try await storeCertificate(request, context) }
        router.get("/v1/domains") { _, context in
            try await admit(context)
            return try Self.json(await backend.domains())
        }
        router.get("/v1/log") { request, context in try await log(request, context) }
        router.get("/healthz") { _, _ in
            if let reason = await backend.unavailability() {
                return try Self.json(ServiceAPI.Health(status: "unavailable", reason: reason), status: .serviceUnavailable)
            }
            return try Self.json(ServiceAPI.Health(status: "ok"))
        }
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
        return router
    }

    // MARK: Handlers

    /// Checks the client and takes a token from its bucket.
    @discardableResult
    func admit(_ context: VMVRequestContext) async throws -> ClientIdentity {
        let identity = try ClientIdentity(try await context.clientCertificate())
        if let wait = limiter.acquire(identity.fingerprint) {
            metrics.recordError(.rateLimited)
            throw APIError(429, "rate_limited", "too many requests from this client certificate; retry in \(Int(wait.rounded(.up))) s",
                           retryAfter: max(1, Int(wait.rounded(.up))))
        }
        return identity
    }

    func body<T: Decodable>(_ request: Request, as type: T.Type) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maxBodyBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw tooLarge()
        } catch is NIOTooManyBytesError {
            throw tooLarge()
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch {
            metrics.recordError(.badRequest)
            throw APIError.badRequest("the body is not a valid \(T.self) JSON document: \(Self.describe(error))")
        }
    }

    private func tooLarge() -> APIError {
        metrics.recordError(.badRequest)
        return APIError(413, "too_large", "the request body exceeds \(maxBodyBytes) bytes")
    }

    func quote(_ request: Request, _ context: VMVRequestContext) async throws -> Response {
        try await admit(context)
        let body = try await body(request, as: ServiceAPI.QuoteRequest.self)
        let nonce: [UInt8]
        do { nonce = try Hex.decode(body.nonce, field: "nonce") } catch {
            metrics.recordError(.badRequest)
            throw APIError.badRequest(error.reason, code: "bad_nonce")
        }
        guard QuoteBinding.nonceSizes.contains(nonce.count) else {
            metrics.recordError(.badRequest)
            throw APIError.badRequest("nonce: \(nonce.count) bytes; a nonce has \(QuoteBinding.nonceSizes.lowerBound)–\(QuoteBinding.nonceSizes.upperBound) bytes",
                                      code: "bad_nonce")
        }
        let selection: PCRSelection
        if let text = body.pcrSelection {
            do { selection = try PCRSelection(parsing: text) } catch {
                metrics.recordError(.badRequest)
                throw APIError.badRequest("pcrSelection: \(error.reason)", code: "bad_selection")
            }
        } else {
            selection = try await backend.defaultSelection()
        }
        // A cursor the log cannot serve is refused before the TPM is asked for anything.
        if let cursor = body.log { try await backend.checkLogCursor(cursor) }

        let batched = try await batcher.quote(nonce: nonce, selection: selection)
        let signed = batched.quote
        // The records the quoted PCR values account for; from the verifier's position if it is
        // in the quoted epoch, else (a new epoch since its last visit) the whole quoted epoch.
        let log: ServiceAPI.Log?
        if let position = signed.logPosition {
            let since = body.log.flatMap { $0.epoch == position.epoch ? $0.since : nil } ?? 0
            log = try await backend.log(epoch: position.epoch, since: since, upTo: position)
        } else {
            log = nil   // the selection leaves out the VMV PCR: nothing about the log is quoted
        }
        let keys = try await backend.keys()
        let response = ServiceAPI.QuoteResponse(
            quote: ServiceAPI.Quote(message: Base64.encode(signed.message), signature: Base64.encode(signed.signature),
                                    pcrs: Base64.encode(signed.pcrs), pcrSelection: signed.selection.description),
            binding: ServiceAPI.Binding(tlsKeyHash: Hex.encode(batcher.tlsKeyHash), leafIndex: batched.proof.leafIndex,
                                        leafCount: batched.proof.leafCount, proof: batched.proof.path.map { Hex.encode($0) }),
            log: log, ak: keys.ak, ek: keys.ek, host: backend.host)
        metrics.recordQuoteAnswered()
        return try Self.json(response)
    }

    func activate(_ request: Request, _ context: VMVRequestContext) async throws -> Response {
        let identity = try await admit(context)
        let body = try await body(request, as: ServiceAPI.ActivateRequest.self)
        guard let blob = Base64.decode(body.credentialBlob), !blob.isEmpty else {
            throw APIError.badRequest("credentialBlob is not base64")
        }
        guard let secret = Base64.decode(body.secret), !secret.isEmpty else {
            throw APIError.badRequest("secret is not base64")
        }
        let proof = try await backend.activateCredential(credentialBlob: blob, secret: secret)
        logger.info("credential activated", metadata: ["client": "\(identity.subject)"])
        return try Self.json(ServiceAPI.ActivateResponse(proof: Hex.encode(proof)))
    }

    func storeCertificate(_ request: Request, _ context: VMVRequestContext) async throws -> Response {
        let identity = try await admit(context)
        let body = try await body(request, as: ServiceAPI.CertificateRequest.self)
        try await backend.storeAKCertificate(pem: body.certificate)
        logger.info("AK certificate stored", metadata: ["client": "\(identity.subject)"])
        return try Self.json(try await backend.keys())
    }

    func log(_ request: Request, _ context: VMVRequestContext) async throws -> Response {
        try await admit(context)
        let query = request.uri.queryParameters
        var epoch: UInt32?
        if let text = query["epoch"] {
            guard let value = UInt32(String(text)) else { throw APIError.badRequest("epoch '\(text)' is not a number") }
            epoch = value
        }
        var since: UInt64 = 0
        if let text = query["since"] {
            guard let value = UInt64(String(text)) else { throw APIError.badRequest("since '\(text)' is not a number") }
            since = value
        }
        return try Self.json(try await backend.log(epoch: epoch, since: since, upTo: nil))
    }

    // MARK: Encoding

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(value)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func errorResponse(_ error: APIError) -> Response {
        let body = ServiceAPI.ErrorResponse(code: error.code, message: error.message)
        let data = (try? JSONEncoder().encode(body)) ?? Data(#"{"error":{"code":"internal","message":"error"}}"#.utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if let retry = error.retryAfter { headers[.retryAfter] = String(retry) }
        return Response(status: HTTPResponse.Status(code: error.status), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "the field '\(key.stringValue)' is missing"
        case DecodingError.typeMismatch(_, let c): "\(path(c.codingPath)): \(c.debugDescription)"
        case DecodingError.valueNotFound(_, let c): "\(path(c.codingPath)): \(c.debugDescription)"
        case DecodingError.dataCorrupted(let c): c.codingPath.isEmpty ? "not JSON" : "\(path(c.codingPath)): \(c.debugDescription)"
        default: "\(error)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map(\.stringValue).joined(separator: ".")
    }
}
