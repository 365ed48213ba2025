import AsyncHTTPClient
import FoundationEssentials
import NIOCore
import NIOHTTP1
import NIOSSL
import Verifier
import VerifierClient

/// The management API from the command line (`vmv-verifier hosts|status|history`), over mutual
/// TLS with the operator's client certificate.
public struct FleetClient: Sendable {
    public let baseURL: String
    let http: HTTPClient

    public static func with<T: Sendable>(url: String, tls: ClientTLSFiles, _ body: (FleetClient) async throws -> T) async throws -> T {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        guard base.hasPrefix("https://") else { throw FleetAPIError(0, "usage", "\(url): the service is HTTPS only (https://HOST:PORT)") }
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        tlsConfiguration.minimumTLSVersion = .tlsv12
        do {
            tlsConfiguration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(tls.ca))
            tlsConfiguration.certificateChain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map { .certificate($0) }
            tlsConfiguration.privateKey = .privateKey(try NIOSSLPrivateKey(file: tls.key, format: .pem))
        } catch {
            throw FleetAPIError(0, "tls_files", "the TLS files (--ca \(tls.ca), --cert \(tls.certificate), --key \(tls.key)) cannot be used: \(error)")
        }
        tlsConfiguration.certificateVerification = tls.skipHostnameVerification ? .noHostnameVerification : .fullVerification
        var configuration = HTTPClient.Configuration(tlsConfiguration: tlsConfiguration, redirectConfiguration: .disallow,
                                                     timeout: .init(connect: .seconds(10), read: .seconds(60)))
        configuration.httpVersion = .http1Only
        return try await HTTPClient.withHTTPClient(configuration: configuration) { http in
            try await body(FleetClient(baseURL: base, http: http))
        }
    }

    /// A request; the answer's body, or a `FleetAPIError` with the service's error.
    public func call(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil) async throws -> [UInt8] {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do { response = try await http.execute(request, timeout: .seconds(120)) } catch {
            throw FleetAPIError(0, "unreachable", "\(method) \(baseURL)\(path): \(error)")
        }
        let bytes = Array(try await response.body.collect(upTo: 256 << 20).readableBytesView)
        guard (200..<300).contains(Int(response.status.code)) else {
            if let e = try? JSONDecoder().decode(FleetErrorBody.self, from: Data(bytes)) {
                throw FleetAPIError(Int(response.status.code), e.error.code, e.error.message)
            }
            throw FleetAPIError(Int(response.status.code), "http", "\(method) \(path): HTTP \(response.status.code)")
        }
        return bytes
    }

    public func decode<T: Decodable>(_ type: T.Type, _ method: HTTPMethod, _ path: String, body: [UInt8]? = nil) async throws -> T {
        let bytes = try await call(method, path, body: body)
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw FleetAPIError(0, "bad_answer", "\(method) \(path): the answer is not the API's JSON (\(ReferenceDocument.describe(error)))")
        }
    }
}

extension String {
    /// Percent-encoded for a query value or path segment (unreserved characters kept).
    public var queryEscaped: String {
        var out = ""
        for b in utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(Character(Unicode.Scalar(b)))
            default:
                let hex = Array("0123456789ABCDEF")
                out += "%" + String(hex[Int(b >> 4)]) + String(hex[Int(b & 0xf)])
            }
        }
        return out
    }
}
