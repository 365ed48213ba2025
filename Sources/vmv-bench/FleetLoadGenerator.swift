import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import TPMWire
import Verifier

/// A simulated VMV host for the fleet benchmark: a software P-256 key presented as a restricted
/// TPM AK, a VMV measurement log (epochStart, the VMV's binary and configuration, one guest's
/// kernel and its text/rodata roots) replayed into a software PCR 15 (SHA-256), and quotes over
/// it bound to the nonce and the TLS key as docs/api.md says. Software-signed quotes stand in
/// for a TPM here only: the verifier checks them with every rule it applies to real ones.
final class SimulatedHost: @unchecked Sendable {
    let index: Int
    let ak: P256.Signing.PrivateKey
    let akPublic: TPMTPublic
    let akPublicBytes: [UInt8]
    let pcr = 15
    let epoch: UInt32 = 1
    let resetCount: UInt32 = 3
    private let lock = NIOLock()
    private var header: [UInt8]
    private var records: [[UInt8]] = []
    private var pcrValue = [UInt8](repeating: 0, count: 32)
    private var clock: UInt64 = 1_000_000
    private var writer: TCGEventLogWriter
    private(set) var tampered = false

    static let guestUUID = Array(SHA256.hash(data: Array("bench-guest".utf8)).prefix(16))

    init(index: Int) throws {
        self.index = index
        ak = P256.Signing.PrivateKey()
        let point = Array(ak.publicKey.x963Representation)
        akPublic = TPMTPublic(nameAlg: .sha256, objectAttributes: [.fixedTPM, .fixedParent, .sensitiveDataOrigin, .userWithAuth, .restricted, .sign],
                              key: .ecc(TPMSECCParms(scheme: TPMTScheme(scheme: .ecdsa, hash: .sha256), curve: .nistP256),
                                        x: Array(point[1...32]), y: Array(point[33...64])))
        akPublicBytes = TPM2BPublic(akPublic).wireBytes
        writer = try TCGEventLogWriter(banks: [.sha256])
        header = writer.bytes
        let domain = VMVEventRecord.Domain(uuid: Self.guestUUID, id: 1, name: "guest")
        func digest(_ s: String) -> TCGDigest { TCGDigest(algorithm: .sha256, bytes: Array(SHA256.hash(data: Array(s.utf8)))) }
        try append(kind: .epochStart, epochStart: .init(resetCount: resetCount, restartCount: 0, reason: "TPM reset (new boot)"))
        try append(kind: .vmvBinary, subject: "/usr/sbin/vmv", digest: digest("vmv binary"))
        try append(kind: .vmvConfig, subject: "/etc/vmv/vmv.toml", digest: digest("vmv config"))
        try append(kind: .domainStart, domain: domain)
        try append(kind: .kernelImage, domain: domain, subject: "/boot/vmlinuz-6.1.0-bench", digest: digest("kernel image"))
        try appendRegion("kernel.text", root: "text")
        try appendRegion("kernel.rodata", root: "rodata")
    }

    private func append(kind: VMVEventRecord.Kind, domain: VMVEventRecord.Domain? = nil, subject: String? = nil, digest: TCGDigest? = nil,
                        region: VMVEventRecord.MemoryRegion? = nil, epochStart: VMVEventRecord.EpochStart? = nil) throws {
        let record = VMVEventRecord(seq: UInt64(records.count), epoch: epoch, pcr: UInt32(pcr), time: 1_700_000_000_000 + UInt64(records.count),
                                    kind: kind, domain: domain, subject: subject, contentDigest: digest, region: region, epochStart: epochStart)
        let event = try writer.measurement(pcr: pcr, type: .eventTag, data: record.wireBytes)
        records.append(try writer.record(event))
        let measured = Array(SHA256.hash(data: record.wireBytes))
        pcrValue = Array(SHA256.hash(data: pcrValue + measured))
    }

    private func appendRegion(_ subject: String, root: String) throws {
        let domain = VMVEventRecord.Domain(uuid: Self.guestUUID, id: 1, name: "guest")
        try append(kind: .memoryRegion, domain: domain, subject: subject,
                   region: .init(virtualStart: 0xffff_ffff_8100_0000, pageSize: 4096, pageCount: 4096,
                                 merkleRoot: TCGDigest(algorithm: .sha256, bytes: Array(SHA256.hash(data: Array(root.utf8))))))
    }

    /// The guest's kernel text changes: the next measurement has another root.
    func tamper() throws {
        try lock.withLock {
            tampered = true
            try appendRegion("kernel.text", root: "text, patched by an attacker")
        }
    }

    /// The answer to `POST /v1/quote`.
    func answer(_ request: ServiceAPI.QuoteRequest, tlsKeyHash: [UInt8]) throws -> ServiceAPI.QuoteResponse {
        guard let nonce = try? Hex.decode(request.nonce), QuoteBinding.nonceSizes.contains(nonce.count) else {
            throw BenchHTTPError(400, "bad_nonce", "nonce")
        }
        let selection = PCRSelection(banks: [PCRSelection.Bank(hash: .sha256, pcrs: [pcr])])
        return try lock.withLock {
            var since = 0
            if let cursor = request.log, cursor.epoch == epoch {
                guard cursor.since <= UInt64(records.count) else { throw BenchHTTPError(400, "bad_log_cursor", "since beyond the log") }
                since = Int(cursor.since)
            }
            clock += 10
            var values = PCRValues()
            values[.sha256, pcr] = pcrValue
            let leaf = QuoteBinding.leaf(nonce: nonce, tlsKeyHash: tlsKeyHash)
            let attest = TPMSAttest(qualifiedSigner: akPublic.name ?? [], extraData: leaf,
                                    clockInfo: TPMSClockInfo(clock: clock, resetCount: resetCount, restartCount: 0, safe: true),
                                    firmwareVersion: 0x2019_1023_0016_3636,
                                    attested: .quote(TPMSQuoteInfo(pcrSelect: selection, pcrDigest: Array(SHA256.hash(data: pcrValue)))))
            let message = attest.wireBytes
            let sig = Array(try ak.signature(for: SHA256.hash(data: message)).rawRepresentation)
            let signature = TPMTSignature.ecdsa(hash: .sha256, r: Array(sig.prefix(32)), s: Array(sig.suffix(32))).wireBytes
            let pcrs = try PCRFile(selection: selection, values: values).bytes(format: .serialized)
            return ServiceAPI.QuoteResponse(
                quote: .init(message: Base64.encode(message), signature: Base64.encode(signature), pcrs: Base64.encode(pcrs),
                             pcrSelection: selection.description),
                binding: .init(tlsKeyHash: Hex.encode(tlsKeyHash), leafIndex: 0, leafCount: 1, proof: []),
                log: .init(epoch: epoch, since: UInt64(since), nextSeq: UInt64(records.count), header: Base64.encode(header),
                           records: Base64.encode(records[since...].flatMap { $0 }), epochInfo: .init(state: "open")),
                ak: .init(publicArea: Base64.encode(akPublicBytes), name: Hex.encode(akPublic.name ?? []), handle: "0x81010003", certificates: []),
                ek: .init(certificate: nil, publicArea: nil),
                host: .init(hostname: "sim-\(index)", vmvVersion: "bench", pcr: pcr))
        }
    }

    /// The pin `vmv-verifier enroll` would write for this host.
    func pin(url: String) -> AKPin {
        AKPin(host: String(url.dropFirst("https://".count)), hostname: "sim-\(index)", akPublic: akPublicBytes, akName: akPublic.name ?? [],
              akHandle: "0x81010003", ekCertificate: "", tpmManufacturer: "software (benchmark)", tpmModel: nil, tpmVersion: nil,
              tlsKeyHash: nil, enrolledAt: Date().formatted(.iso8601))
    }

    /// The epoch's facts (what the verifier learns references from).
    func facts() throws -> EpochFacts {
        let log = try TCGEventLog(bytes: header + records.flatMap { $0 })
        var facts = EpochFacts(epoch: epoch)
        for e in log.events { facts.add(try VMVEventRecord(verifying: e)) }
        return facts
    }
}

struct BenchHTTPError: Error {
    let status: Int
    let code: String
    let message: String
    init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }
}

/// Serves many simulated hosts, one loopback port each, over TLS (one server certificate, so
/// one TLS key: the binding of each quote to the key of the handshake is still checked).
final class LoadGenerator: @unchecked Sendable {
    let hosts: [SimulatedHost]
    let group: MultiThreadedEventLoopGroup
    var channels: [any Channel] = []
    let tlsKeyHash: [UInt8]
    let sslContext: NIOSSLContext
    let served = ManagedAtomicCounter()

    init(hosts: [SimulatedHost], certificate: String, key: String, clientCA: String, threads: Int) throws {
        self.hosts = hosts
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let chain = try NIOSSLCertificate.fromPEMFile(certificate)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                          privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
        tls.certificateVerification = .noHostnameVerification
        sslContext = try NIOSSLContext(configuration: tls)
        tlsKeyHash = try QuoteBinding.tlsKeyHash(certificateDER: try chain[0].toDERBytes())
    }

    /// Binds host i to `basePort + i`; returns the ports.
    func start(basePort: Int) throws -> [Int] {
        var ports: [Int] = []
        for (i, host) in hosts.enumerated() {
            let context = sslContext, keyHash = tlsKeyHash, counter = served
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.backlog, value: 512)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(QuoteHandler(host: host, tlsKeyHash: keyHash, served: counter))
                    }
                }
            let channel = try bootstrap.bind(host: "127.0.0.1", port: basePort + i).wait()
            channels.append(channel)
            ports.append(channel.localAddress?.port ?? basePort + i)
        }
        return ports
    }

    func stop() {
        for c in channels { try? c.close().wait() }
        try? group.syncShutdownGracefully()
    }
}

final class ManagedAtomicCounter: Sendable {
    private let box = NIOLockedValueBox(0)
    func increment() { box.withLockedValue { $0 += 1 } }
    var value: Int { box.withLockedValue { $0 } }
}

/// HTTP/1.1 `POST /v1/quote` for one simulated host.
final class QuoteHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let host: SimulatedHost
    let tlsKeyHash: [UInt8]
    let served: ManagedAtomicCounter
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(host: SimulatedHost, tlsKeyHash: [UInt8], served: ManagedAtomicCounter) {
        self.host = host
        self.tlsKeyHash = tlsKeyHash
        self.served = served
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
        case .body(var b):
            if body.count + b.readableBytes <= 64 * 1024 { body += b.readBytes(length: b.readableBytes) ?? [] }
        case .end:
            guard let head else { return }
            var status = HTTPResponseStatus.ok
            var payload: [UInt8]
            do {
                guard head.method == .POST, head.uri == "/v1/quote" else { throw BenchHTTPError(404, "not_found", head.uri) }
                let request = try JSONDecoder().decode(ServiceAPI.QuoteRequest.self, from: Data(body))
                payload = Array(try JSONEncoder().encode(try host.answer(request, tlsKeyHash: tlsKeyHash)))
                served.increment()
            } catch let e as BenchHTTPError {
                status = HTTPResponseStatus(statusCode: e.status)
                payload = Array((try? JSONEncoder().encode(ServiceAPI.ErrorResponse(code: e.code, message: e.message))) ?? Data())
            } catch {
                status = .badRequest
                payload = Array((try? JSONEncoder().encode(ServiceAPI.ErrorResponse(code: "bad_request", message: "\(error)"))) ?? Data())
            }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            headers.add(name: "content-length", value: String(payload.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: payload)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            self.head = nil
        }
    }
}
