import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import TestSupport
import TPMWire
import Verifier
import VerifierClient

/// A test PKI made with openssl: a CA, two server certificates (the VMV's and a relay's, both
/// for localhost/127.0.0.1) and a verifier client certificate.
struct TestTLS {
    let directory: String
    var ca: String { directory + "/ca.pem" }
    func cert(_ name: String) -> String { directory + "/\(name).pem" }
    func key(_ name: String) -> String { directory + "/\(name).key" }
    var client: ClientTLSFiles { ClientTLSFiles(ca: ca, certificate: cert("client"), key: key("client")) }

    static func make() throws -> TestTLS {
        let dir = try TemporaryDirectory.make(prefix: "vmv-tls").path
        let openssl = try Tools.path("openssl")
        func run(_ args: [String]) throws {
            let r = try Tools.run(openssl, args, directory: URL(fileURLWithPath: dir))
            guard r.status == 0 else { throw HarnessError("openssl \(args.first ?? ""): \(r.stderr)") }
        }
        try run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
                 "-out", "ca.pem", "-days", "2", "-subj", "/CN=vmv test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        for (name, usage) in [("vmv", "serverAuth"), ("relay", "serverAuth"), ("client", "clientAuth")] {
            try run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(name).key",
                     "-out", "\(name).csr", "-subj", "/CN=\(name)"])
            try Data("""
                basicConstraints=critical,CA:FALSE
                keyUsage=critical,digitalSignature
                extendedKeyUsage=\(usage)
                subjectAltName=DNS:localhost,IP:127.0.0.1

                """.utf8).write(to: URL(fileURLWithPath: dir + "/\(name).ext"))
            try run(["x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                     "-out", "\(name).pem", "-days", "2", "-extfile", "\(name).ext"])
        }
        return TestTLS(directory: dir)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// An HTTPS endpoint with client certificates required, answering `POST /v1/quote` with
/// whatever `answer` returns for the request. Stands for the VMV's HTTP layer (the real stack
/// behind it) or for a relay in front of a VMV.
final class TLSEndpoint: @unchecked Sendable {
    typealias Answer = @Sendable (ServiceAPI.QuoteRequest) async throws -> ServiceAPI.QuoteResponse
    let channel: Channel
    var port: Int { channel.localAddress?.port ?? 0 }
    var url: String { "https://localhost:\(port)" }

    static func start(tls: TestTLS, identity: String, answer: @escaping Answer) async throws -> TLSEndpoint {
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(tls.cert(identity)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.key(identity), format: .pem)))
        config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(tls.ca))
        config.certificateVerification = .noHostnameVerification   // client certificate required and chain-checked
        let context = try NIOSSLContext(configuration: config)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(QuoteHandler(answer: answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TLSEndpoint(channel: channel)
    }

    private init(channel: Channel) { self.channel = channel }

    func stop() async { try? await channel.close() }
}

/// Collects one request and answers it from a task: 200 with the JSON answer, or 500.
private final class QuoteHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let answer: TLSEndpoint.Answer
    var body = ByteBuffer()

    init(answer: @escaping TLSEndpoint.Answer) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: body.clear()
        case .body(var part): body.writeBuffer(&part)
        case .end:
            let bytes = Data(body.readableBytesView)
            let loop = context.eventLoop
            let boxed = NIOLoopBound(context, eventLoop: loop)
            let answer = self.answer
            Task {
                var status = HTTPResponseStatus.ok
                var out = Data()
                do {
                    let request = try JSONDecoder().decode(ServiceAPI.QuoteRequest.self, from: bytes)
                    out = try JSONEncoder().encode(try await answer(request))
                } catch {
                    status = .internalServerError
                    out = (try? JSONEncoder().encode(ServiceAPI.ErrorResponse(code: "internal", message: "\(error)"))) ?? Data()
                }
                let payload = out, code = status
                loop.execute {
                    let context = boxed.value
                    var head = HTTPResponseHead(version: .http1_1, status: code)
                    head.headers.add(name: "content-type", value: "application/json")
                    head.headers.add(name: "content-length", value: String(payload.count))
                    context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
                    context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: payload)))), promise: nil)
                    context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
                }
            }
        }
    }
}
