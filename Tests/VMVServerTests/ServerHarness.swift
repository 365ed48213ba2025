import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
import TestSupport
import TPM
import TPMWire
import Verifier
import VMV
import VMVServer
import X509

/// Certificates for the tests, made with the same code as `vmv certs init`: the service's CA
/// with a server and a client certificate, an expired client certificate from that CA, and a
/// client certificate from another CA.
struct TestPKI {
    let directory: String
    var ca: String { directory + "/ca.pem" }
    var serverCert: String { directory + "/server.pem" }
    var serverKey: String { directory + "/server.key" }
    var clientCert: String { directory + "/client.pem" }
    var clientKey: String { directory + "/client.key" }
    var expiredCert: String { directory + "/expired.pem" }
    var expiredKey: String { directory + "/expired.key" }
    var foreignCert: String { directory + "/foreign.pem" }
    var foreignKey: String { directory + "/foreign.key" }

    static func make() throws -> TestPKI {
        let directory = try TemporaryDirectory.make(prefix: "vmv-pki").path
        _ = try PKIFiles.initialise(directory: directory, sans: ["localhost", "127.0.0.1"], days: 30)
        let ca = try CertificateAuthority(certificatePEM: try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8),
                                          keyPEM: try String(contentsOfFile: directory + "/ca.key", encoding: .utf8))
        func write(_ name: String, _ certificate: Certificate, _ keyPEM: String) throws {
            try PKIFiles.writeFile(directory + "/\(name).pem", Array((try certificate.serializeAsPEM().pemString + "\n").utf8), mode: 0o644)
            try PKIFiles.writeFile(directory + "/\(name).key", Array((keyPEM + "\n").utf8), mode: 0o600)
        }
        let expired = try ca.issue(commonName: "expired verifier", usage: .client, days: 1,
                                   notBefore: Date().addingTimeInterval(-10 * 86400))
        try write("expired", expired.certificate, expired.key.pemRepresentation)
        let other = try CertificateAuthority(commonName: "another CA")
        let foreign = try other.issue(commonName: "foreign verifier", usage: .client, days: 30)
        try write("foreign", foreign.certificate, foreign.key.pemRepresentation)
        return TestPKI(directory: directory)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A `vmv serve` API in this process: a private swtpm through TPMSimulator, the TPM actor, the
/// real VMVHost, and the Hummingbird server on a free loopback port.
final class TestServer: @unchecked Sendable {
    let pki: TestPKI
    let port: Int
    let metrics: ServerMetrics
    let runtime: VMVRuntime
    var engine: MeasurementEngine { runtime.engine }
    let tpm: TPM
    /// The swtpm behind `tpm` (stopped by `tpm.close()`): its EK CA is the tests' EK trust anchor.
    let simulator: TPMSimulator
    let stateDirectory: String
    private let group: ServiceGroup
    private let task: Task<Void, any Error>
    private let clients = Mutex<[HTTPClient]>([])

    /// Runs `body` against a fresh server and stops it (and every client it made) however
    /// `body` ends.
    static func with(_ adjust: (inout ServerConfiguration) -> Void = { _ in }, _ body: (TestServer) async throws -> Void) async throws {
        let server = try await start(adjust)
        do {
            try await body(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    static func start(_ adjust: (inout ServerConfiguration) -> Void = { _ in }) async throws -> TestServer {
        let pki = try TestPKI.make()
        let simulator = try TPMSimulator.ephemeral()
        let tpm = try await TPM.open(simulator: simulator)
        let state = try TemporaryDirectory.make(prefix: "vmv-state").path
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.certificate = pki.serverCert
        configuration.privateKey = pki.serverKey
        configuration.clientCA = pki.ca
        configuration.stateDirectory = state
        configuration.xen = .off
        adjust(&configuration)
        var logger = Logger(label: "vmv.test")
        logger.logLevel = .warning
        let runtime: VMVRuntime
        do {
            runtime = try await VMVRuntime.open(tpm: tpm, configuration: configuration, xen: nil, xenNote: "tests run without Xen", logger: logger)
        } catch {
            await tpm.close()
            throw error
        }
        let metrics = runtime.metrics
        let tls = try TLSMaterial(certificate: pki.serverCert, privateKey: pki.serverKey, clientCA: pki.ca)
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let app = try APIServer.application(configuration: configuration, tls: tls, backend: runtime.host, metrics: metrics, logger: logger,
                                            onServerRunning: { channel in
                                                portContinuation.yield(channel.localAddress?.port ?? 0)
                                                portContinuation.finish()
                                            })
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        let task = Task { try await group.run() }
        var port = 0
        for await p in portStream { port = p }
        guard port > 0 else {
            await runtime.close()
            await tpm.close()
            throw HarnessError("the server did not start")
        }
        return TestServer(pki: pki, port: port, runtime: runtime, tpm: tpm, simulator: simulator, state: state, group: group, task: task)
    }

    private init(pki: TestPKI, port: Int, runtime: VMVRuntime, tpm: TPM, simulator: TPMSimulator, state: String, group: ServiceGroup,
                 task: Task<Void, any Error>) {
        self.simulator = simulator
        self.pki = pki
        self.port = port
        self.runtime = runtime
        self.metrics = runtime.metrics
        self.tpm = tpm
        self.stateDirectory = state
        self.group = group
        self.task = task
    }

    func stop() async {
        for client in clients.withLock({ $0 }) { try? await client.shutdown() }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        await runtime.close()
        await tpm.close()
        pki.remove()
        try? FileManager.default.removeItem(atPath: stateDirectory)
    }

    var url: String { "https://localhost:\(port)" }

    /// An HTTP client with the given client certificate (nil: none), trusting the service CA.
    func client(cert: String? = nil, key: String? = nil, connections: Int = 8) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.ca))
        if let cert, let key {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        clients.withLock { $0.append(client) }
        return client
    }

    func verifierClient(connections: Int = 8) throws -> HTTPClient {
        try client(cert: pki.clientCert, key: pki.clientKey, connections: connections)
    }

    /// The server certificate's SPKI hash, as a verifier computes it from the certificate it trusts.
    func expectedTLSKeyHash() throws -> [UInt8] {
        let certificate = try Certificate(pemEncoded: try String(contentsOfFile: pki.serverCert, encoding: .utf8))
        return try QuoteBinding.tlsKeyHash(certificate: certificate)
    }
}

struct HTTPResult {
    let status: Int
    let body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(body))
    }

    var errorCode: String? { try? decode(ServiceAPI.ErrorResponse.self).error.code }
}

extension HTTPClient {
    func call(_ url: String, method: HTTPMethod = .GET, json: (any Encodable)? = nil, body raw: [UInt8]? = nil) async throws -> HTTPResult {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let json {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(json)))
        } else if let raw {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: raw))
        }
        let response = try await execute(request, timeout: .seconds(60))
        let buffer = try await response.body.collect(upTo: 16 << 20)
        return HTTPResult(status: Int(response.status.code), body: Array(buffer.readableBytesView))
    }

    func quote(_ base: String, nonce: [UInt8], selection: String? = nil) async throws -> (HTTPResult, ServiceAPI.QuoteResponse?) {
        let result = try await call(base + "/v1/quote", method: .POST,
                                    json: ServiceAPI.QuoteRequest(nonce: Hex.encode(nonce), pcrSelection: selection))
        return (result, result.status == 200 ? try result.decode(ServiceAPI.QuoteResponse.self) : nil)
    }
}

/// Checks a quote answer the way a verifier does: the AK it names, every quote rule, and the
/// binding of `nonce` and `tlsKeyHash` through the proof.
func verify(_ response: ServiceAPI.QuoteResponse, nonce: [UInt8], tlsKeyHash: [UInt8]) throws -> QuoteVerdict {
    func bytes(_ b64: String) throws -> [UInt8] {
        guard let data = Data(base64Encoded: b64) else { throw HarnessError("not base64: \(b64.prefix(20))") }
        return Array(data)
    }
    let ak = try AttestationKey(tpmPublic: try TPM2BPublic(wireBytes: try bytes(response.ak.publicArea)).publicArea)
    let pcrs = try PCRFile(bytes: try bytes(response.quote.pcrs), format: .serialized)
    let evidence = try QuoteEvidence(message: try bytes(response.quote.message), signature: try bytes(response.quote.signature),
                                     ak: ak, pcrs: pcrs)
    let proof = BindingProof(leafIndex: response.binding.leafIndex, leafCount: response.binding.leafCount,
                             path: try response.binding.proof.map { try Hex.decode($0) })
    let selection = try PCRSelection(parsing: response.quote.pcrSelection)
    return QuoteVerifier.bound(nonce: nonce, tlsKeyHash: tlsKeyHash, proof: proof, selection: selection).check(evidence)
}

func randomNonce(_ count: Int = 32) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255) }
}

/// The value of a Prometheus sample line `name{labels} value` (labels exactly as written).
func metric(_ text: String, _ sample: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
        return Double(line.dropFirst(sample.count + 1))
    }
    return nil
}

/// A TLS connection made by hand, for what an HTTP client will not do: stall half-way through
/// a request, or show the certificate the server presented.
final class RawTLSConnection: @unchecked Sendable {
    let channel: any Channel
    private let received: Box
    private let closed: EventLoopPromise<Void>

    static func connect(port: Int, pki: TestPKI, cert: String? = nil, key: String? = nil) async throws -> RawTLSConnection {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.ca))
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert ?? pki.clientCert).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key ?? pki.clientKey, format: .pem))
        let context = try NIOSSLContext(configuration: tls)
        let received = Box()
        let group = MultiThreadedEventLoopGroup.singleton
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    try channel.pipeline.syncOperations.addHandler(Collector(received))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        let closed = channel.eventLoop.makePromise(of: Void.self)
        channel.closeFuture.cascade(to: closed)
        return RawTLSConnection(channel: channel, received: received, closed: closed)
    }

    private init(channel: any Channel, received: Box, closed: EventLoopPromise<Void>) {
        self.channel = channel
        self.received = received
        self.closed = closed
    }

    final class Box: Sendable {
        let bytes = Mutex<[UInt8]>([])
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let box: Box
        init(_ box: Box) { self.box = box }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            box.bytes.withLock { $0.append(contentsOf: buffer.readableBytesView) }
        }
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    /// The certificate the server presented in this handshake (after the first write or read).
    func serverCertificateDER() async throws -> [UInt8]? {
        try await channel.nioSSL_peerCertificate().get()?.toDERBytes()
    }

    var isOpen: Bool { channel.isActive }
    var bytesReceived: [UInt8] { received.bytes.withLock { $0 } }

    /// Waits until the server closes the connection; false if it is still open after `seconds`.
    func waitForClose(seconds: Int) async -> Bool {
        for _ in 0..<(seconds * 20) {
            if !channel.isActive { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return !channel.isActive
    }

    func close() async { try? await channel.close().get() }
}

/// A plain TCP connection that sends nothing: a TLS handshake that never starts.
func openSilentTCP(port: Int) async throws -> any Channel {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port).get()
}
