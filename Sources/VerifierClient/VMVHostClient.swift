import AsyncHTTPClient
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL
import TPMWire
import Verifier

/// The files of a verifier's TLS identity and trust.
public struct ClientTLSFiles: Sendable {
    /// PEM CA certificate(s) the VMV's server certificate must chain to.
    public var ca: String
    /// PEM client certificate (chain) and its private key.
    public var certificate: String
    public var key: String
    /// Skip the check that the server certificate names the host in the URL. Chain
    /// verification stays on; the quote's TLS-key binding still ties the answer to the key.
    public var skipHostnameVerification: Bool

    public init(ca: String, certificate: String, key: String, skipHostnameVerification: Bool = false) {
        self.ca = ca
        self.certificate = certificate
        self.key = key
        self.skipHostnameVerification = skipHostnameVerification
    }
}

/// An error of the conversation with a VMV host: TLS, HTTP, or an answer that is not the API's.
public struct HostError: Error, Sendable, CustomStringConvertible {
    /// HTTP status when the host answered with an API error.
    public let status: Int?
    /// The API's error code ("log_gone", "rate_limited", …) when it gave one.
    public let code: String?
    public let description: String

    public init(status: Int? = nil, code: String? = nil, _ description: String) {
        self.status = status
        self.code = code
        self.description = description
    }
}

/// The server certificates seen in the TLS handshakes of one client, in order.
final class HandshakeRecorder: Sendable {
    private let certificates = NIOLockedValueBox<[[UInt8]]>([])

    func record(_ der: [UInt8]) { certificates.withLockedValue { $0.append(der) } }
    var all: [[UInt8]] { certificates.withLockedValue { $0 } }
}

/// A VMV host's HTTPS API over mutual TLS (docs/api.md). Each call says which server
/// certificate the connection it used presented: the verifier binds the quote to that key.
///
/// Use it inside `VMVHostClient.with(url:tls:)`, which shuts the HTTP client down on every path.
public struct VMVHostClient: Sendable {
    public let baseURL: String
    /// "host:port", the name of the host's stored state and pin.
    public let hostKey: String
    let http: HTTPClient
    let recorder: HandshakeRecorder

    /// Requests, answers and errors stay small: a quote with a long log is the largest.
    public static let maxResponseSize = 64 << 20

    public static func with<T: Sendable>(url: String, tls: ClientTLSFiles, timeout: TimeAmount = .seconds(60),
                                         _ body: (VMVHostClient) async throws -> T) async throws -> T {
        let (base, key) = try parse(url: url)
        let recorder = HandshakeRecorder()
        var config = HTTPClient.Configuration(tlsConfiguration: try tlsConfiguration(tls), redirectConfiguration: .disallow,
                                              timeout: .init(connect: .seconds(10), read: timeout))
        config.httpVersion = .http1Only
        // Called on each new connection after its TLS handshake, before any request uses it.
        config.http1_1ConnectionDebugInitializer = { channel in
            channel.nioSSL_peerCertificate().flatMapThrowing { certificate in
                guard let certificate else { throw HostError("the TLS connection has no server certificate") }
                recorder.record(try certificate.toDERBytes())
            }
        }
        return try await HTTPClient.withHTTPClient(configuration: config) { http in
            try await body(VMVHostClient(baseURL: base, hostKey: key, http: http, recorder: recorder))
        }
    }

    /// `https://host:port` (a path is not allowed: the API lives at the root).
    static func parse(url: String) throws(HostError) -> (String, String) {
        guard url.hasPrefix("https://") else { throw HostError("\(url): the VMV API is HTTPS only (https://HOST:PORT)") }
        var rest = String(url.dropFirst("https://".count))
        while rest.hasSuffix("/") { rest.removeLast() }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), !rest.contains("?") else {
            throw HostError("\(url): expected https://HOST:PORT with no path")
        }
        let hasPort = rest.last.map { $0.isNumber } == true && rest.contains(":") && !(rest.hasSuffix("]"))
        let key = hasPort ? rest : rest + ":443"
        return ("https://" + rest, key)
    }

    static func tlsConfiguration(_ files: ClientTLSFiles) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        do {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.ca))
        } catch { throw HostError("--ca \(files.ca): not a PEM certificate file (\(error))") }
        do {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) }
        } catch { throw HostError("--cert \(files.certificate): not a PEM certificate file (\(error))") }
        do {
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem))
        } catch { throw HostError("--key \(files.key): not a PEM private key (\(error))") }
        tls.certificateVerification = files.skipHostnameVerification ? .noHostnameVerification : .fullVerification
        return tls
    }

    /// The one server certificate this client's connections presented (DER). More than one
    /// distinct key across connections is an error: which one answered would be unclear.
    public func serverCertificate() throws(HostError) -> [UInt8] {
        let seen = recorder.all
        guard let first = seen.first else { throw HostError("no TLS handshake was seen") }
        let hashes = Set(seen.compactMap { try? QuoteBinding.tlsKeyHash(certificateDER: $0) })
        guard hashes.count == 1 else {
            throw HostError("the host presented \(hashes.count) different TLS keys on \(seen.count) connections")
        }
        return first
    }

    // MARK: The API

    /// `POST /v1/quote`. Returns the answer and the SHA-256 of the TLS key of the handshake.
    public func quote(_ request: ServiceAPI.QuoteRequest) async throws -> (ServiceAPI.QuoteResponse, tlsKeyHash: [UInt8]) {
        let answer: ServiceAPI.QuoteResponse = try await call(.POST, "/v1/quote", body: request)
        return (answer, try QuoteBinding.tlsKeyHash(certificateDER: try serverCertificate()))
    }

    /// `GET /v1/ak`.
    public func ak() async throws -> ServiceAPI.AKResponse {
        try await call(.GET, "/v1/ak", body: Optional<ServiceAPI.ActivateRequest>.none)
    }

    /// `POST /v1/enroll/activate`.
    public func activate(_ request: ServiceAPI.ActivateRequest) async throws -> ServiceAPI.ActivateResponse {
        try await call(.POST, "/v1/enroll/activate", body: request)
    }

    /// `POST /v1/enroll/certificate`.
    public func storeAKCertificate(_ request: ServiceAPI.CertificateRequest) async throws {
        let _: Empty = try await call(.POST, "/v1/enroll/certificate", body: request)
    }

    /// `GET /v1/domains`.
    public func domains() async throws -> ServiceAPI.DomainsResponse {
        try await call(.GET, "/v1/domains", body: Optional<ServiceAPI.ActivateRequest>.none)
    }

    struct Empty: Decodable {}

    func call<Body: Encodable, Answer: Decodable>(_ method: HTTPMethod, _ path: String, body: Body?) async throws -> Answer {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "accept", value: "application/json")
        if let body {
            let data = try JSONEncoder().encode(body)
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Array(data)))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(120))
        } catch {
            throw HostError("\(method) \(baseURL)\(path): \(Self.describe(error))")
        }
        let bytes: ByteBuffer
        do { bytes = try await response.body.collect(upTo: Self.maxResponseSize) } catch {
            throw HostError("\(method) \(path): the answer could not be read (\(error))")
        }
        let data = Data(bytes.readableBytesView)
        guard (200..<300).contains(Int(response.status.code)) else {
            if let e = try? JSONDecoder().decode(ServiceAPI.ErrorResponse.self, from: data) {
                throw HostError(status: Int(response.status.code), code: e.error.code,
                                "\(method) \(path): \(response.status.code) \(e.error.code): \(e.error.message)")
            }
            throw HostError(status: Int(response.status.code), "\(method) \(path): HTTP \(response.status.code)")
        }
        if Answer.self == Empty.self, data.isEmpty, let empty = Empty() as? Answer { return empty }
        do { return try JSONDecoder().decode(Answer.self, from: data) } catch {
            throw HostError("\(method) \(path): the answer is not the API's JSON (\(ReferenceDocument.describe(error)))")
        }
    }

    /// TLS failures in words: the handshake errors NIOSSL reports are what an operator needs.
    static func describe(_ error: any Error) -> String {
        if let e = error as? NIOSSLError {
            switch e {
            case .handshakeFailed(let reason): return "TLS handshake failed: \(reason)"
            default: return "TLS: \(e)"
            }
        }
        if let e = error as? HTTPClientError { return "\(e)" }
        return "\(error)"
    }
}
