import AsyncHTTPClient
import Crypto
import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import Testing
import TestSupport
import TPMWire
import Verifier
import VerifierClient
import VMV
import VMVServer
import X509

/// `vmv-verifier`'s attestation (VerifierClient, AttestationVerifier) against a real `vmv serve`
/// stack over mutual TLS on loopback, directly and through a second TLS endpoint that relays,
/// replays or tampers with the answers.
@Suite struct AttestationOverTLSTests {
    /// Enrolls with the server (credential activation against its swtpm's EK certificate) and
    /// returns the verifier's pin.
    static func enroll(_ server: TestServer) async throws -> AKPin {
        let ca = server.simulator.certificateAuthority
        let anchors = EKCertificateValidator(roots: try EKCertificateValidator.load(ca.root),
                                             intermediates: try EKCertificateValidator.load(ca.issuer))
        return try await EnrollmentRun(url: server.url, tls: server.pki.verifierTLS, ekAnchors: anchors).run()
    }

    static func attest(_ url: String, _ server: TestServer, pin: AKPin, store: (any HostStateStore)? = nil) async throws -> AttestationReport {
        try await AttestationRun(url: url, tls: server.pki.verifierTLS, akTrust: .pinned(pin), references: ReferenceSet(),
                                 store: store).run().report
    }

    /// A guest as the VMV measures one: its start, its kernel image, its kernel text.
    static func measureGuest(_ engine: MeasurementEngine, name: String) async throws {
        let domain = Measurement.Domain(uuid: Array(SHA256.hash(data: Array(name.utf8)).prefix(16)), id: 3, name: name)
        _ = try await engine.measure(Measurement(kind: .domainStart, domain: domain))
        _ = try await engine.measure(.content(.kernelImage, subject: "/boot/vmlinuz-6.1.0-test", hashing: Array("image".utf8), domain: domain))
        _ = try await engine.measure(.memoryRegion(domain: domain, subject: "kernel.text", virtualStart: 0xffff_ffff_8100_0000, pageSize: 4096,
                                                   pageCount: 2048, merkleRoot: Array(SHA256.hash(data: Array("text".utf8))),
                                                   attributes: [("kernel.release", "6.1.0-test")]))
    }

    /// Directly: sound evidence; a VM whose measurements no reference speaks for is unknown,
    /// never trusted, and so the attestation as a whole is not trusted.
    @Test func aVMWithoutReferencesIsUnknown() async throws {
        try await TestServer.with { server in
        let pin = try await Self.enroll(server)
        try await Self.measureGuest(server.engine, name: "guest-a")
        let report = try await Self.attest(server.url, server, pin: pin)
        #expect(report.failedChecks.isEmpty, "\(report.failedChecks)")
        let guest = try #require(report.domains.first { $0.name == "guest-a" }, "\(report.domains)")
        #expect(guest.verdict.level == .unknown, "\(guest.verdict)")
        #expect(!report.trusted)
        #expect(report.evidence.nextSeq == (await server.engine.status()).records)
        }
    }

    /// Through another TLS endpoint with a certificate of its own (from the same CA, for the
    /// same name): its handshake is fine, but the quote binds the VMV's key.
    @Test func aRelayedQuoteIsRejectedByTheKeyBinding() async throws {
        try await TestServer.with { server in
        let pin = try await Self.enroll(server)
        let direct = try await Self.attest(server.url, server, pin: pin)
        #expect(direct.failedChecks.isEmpty, "\(direct.failedChecks)")
        try await Interposer.with(server, mode: .relay) { relay in
            let report = try await Self.attest(relay.url, server, pin: pin)
            #expect(!report.trusted)
            #expect(report.failedChecks.contains { $0.rule == "binding" && $0.reason.contains("relayed") }, "\(report.failedChecks)")
            #expect(relay.forwarded >= 1)
        }
        }
    }

    /// An answer captured earlier and served again, even by an endpoint holding the VMV's own
    /// TLS key: it was made for another nonce.
    @Test func aReplayedAnswerIsRejected() async throws {
        try await TestServer.with { server in
        let pin = try await Self.enroll(server)
        try await Interposer.with(server, mode: .replayFirst) { replayer in
            let first = try await Self.attest(replayer.url, server, pin: pin)
            #expect(first.failedChecks.isEmpty, "the first answer is fresh: \(first.failedChecks)")
            let again = try await Self.attest(replayer.url, server, pin: pin)
            #expect(!again.trusted)
            #expect(again.failedChecks.contains { $0.rule == "binding" }, "\(again.failedChecks)")
            #expect(replayer.forwarded == 1)
        }
        }
    }

    /// One byte of one log record changed on the way: the record's digests no longer match.
    @Test func aTamperedLogRecordIsRejected() async throws {
        try await TestServer.with { server in
        let pin = try await Self.enroll(server)
        try await Self.measureGuest(server.engine, name: "guest-b")
        try await Interposer.with(server, mode: .tamperLastRecord) { tamperer in
            let report = try await Self.attest(tamperer.url, server, pin: pin)
            #expect(!report.trusted)
            #expect(report.failedChecks.contains { $0.rule == "logRecords" }, "\(report.failedChecks)")
            #expect(!report.failedChecks.contains { $0.rule == "binding" }, "the quote itself was not touched")
        }
        }
    }
}

extension TestPKI {
    var verifierTLS: ClientTLSFiles { ClientTLSFiles(ca: ca, certificate: clientCert, key: clientKey) }
}

/// A second TLS endpoint between a verifier and the VMV: it forwards `POST /v1/quote` to the
/// VMV with a verifier's client certificate and answers with what came back, or with a change.
final class Interposer: Sendable {
    enum Mode: Sendable {
        /// Its own certificate (same CA, same name); answers passed on unchanged.
        case relay
        /// The VMV's own certificate and key; the first answer served to every later request.
        case replayFirst
        /// The VMV's own certificate and key; one byte of the last log record flipped.
        case tamperLastRecord
    }

    /// What went through: how many requests reached the VMV, and the first answer.
    final class Seen: Sendable {
        let value = Mutex<(forwarded: Int, first: [UInt8]?)>((0, nil))
    }

    let port: Int
    private let seen: Seen
    var url: String { "https://localhost:\(port)" }
    var forwarded: Int { seen.value.withLock { $0.forwarded } }

    private init(port: Int, seen: Seen) {
        self.port = port
        self.seen = seen
    }

    static func with(_ server: TestServer, mode: Mode, _ body: (Interposer) async throws -> Void) async throws {
        let pki = server.pki
        let (certificate, key): (String, String)
        switch mode {
        case .relay:
            let ca = try CertificateAuthority(certificatePEM: try String(contentsOfFile: pki.ca, encoding: .utf8),
                                              keyPEM: try String(contentsOfFile: pki.directory + "/ca.key", encoding: .utf8))
            let issued = try ca.issue(commonName: "relay", usage: .server(dnsNames: ["localhost"], ipAddresses: [[127, 0, 0, 1]]), days: 1)
            certificate = pki.directory + "/relay.pem"
            key = pki.directory + "/relay.key"
            try PKIFiles.writeFile(certificate, Array((try issued.certificate.serializeAsPEM().pemString + "\n").utf8), mode: 0o644)
            try PKIFiles.writeFile(key, Array((issued.key.pemRepresentation + "\n").utf8), mode: 0o600)
        case .replayFirst, .tamperLastRecord:
            (certificate, key) = (pki.serverCert, pki.serverKey)
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                                                          privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        tls.certificateVerification = .none   // it takes any verifier
        let upstream = try server.verifierClient()
        let seen = Seen()
        let router = Router()
        router.post("/v1/quote") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            if mode == .replayFirst, let first = seen.value.withLock({ $0.first }) {
                return Self.json(first)
            }
            var forward = HTTPClientRequest(url: server.url + "/v1/quote")
            forward.method = .POST
            forward.headers.add(name: "content-type", value: "application/json")
            forward.body = .bytes(body)
            let answer = try await upstream.execute(forward, timeout: .seconds(60))
            var bytes = Array(try await answer.body.collect(upTo: 16 << 20).readableBytesView)
            seen.value.withLock {
                $0.forwarded += 1
                if $0.first == nil { $0.first = bytes }
            }
            if mode == .tamperLastRecord, answer.status == .ok {
                var response = try JSONDecoder().decode(ServiceAPI.QuoteResponse.self, from: Data(bytes))
                if var log = response.log, var records = Data(base64Encoded: log.records), !records.isEmpty {
                    records[records.count - 1] ^= 0x01   // the last byte of the last record's data
                    log.records = records.base64EncodedString()
                    response.log = log
                }
                bytes = Array(try JSONEncoder().encode(response))
            }
            return Self.json(bytes, status: .init(code: Int(answer.status.code)))
        }
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, server: try .tls(.http1(), tlsConfiguration: tls),
                              configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in
                                  portContinuation.yield(channel.localAddress?.port ?? 0)
                                  portContinuation.finish()
                              },
                              logger: Logger(label: "vmv.test.interposer"))
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: Logger(label: "vmv.test.interposer"))
        let task = Task { try await group.run() }
        var port = 0
        for await p in ports { port = p }
        let interposer = Interposer(port: port, seen: seen)
        do {
            guard port > 0 else { throw HarnessError("the interposer did not start") }
            try await body(interposer)
        } catch {
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            throw error
        }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    static func json(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
