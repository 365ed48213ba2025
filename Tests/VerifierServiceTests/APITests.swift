import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Testing
import TestSupport
import VerifierClient
@testable import VerifierService

/// The management API served in-process over mutual TLS on a free port, on a SQLite store.
final class RunningAPI: @unchecked Sendable {
    let directory: URL
    let pki: TestPKI
    let store: FleetStore
    let database: SQLiteDatabase
    let feed: ChangeFeed
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int

    var url: String { "https://127.0.0.1:\(port)" }
    var clientFiles: ClientTLSFiles { ClientTLSFiles(ca: pki.ca, certificate: pki.clientCertificate, key: pki.clientKey) }

    init(staleAfter: Double = 3600) async throws {
        directory = try TemporaryDirectory.make(prefix: "fleet-api")
        pki = try TestPKI(directory: directory)
        database = try SQLiteDatabase(path: directory.appendingPathComponent("fleet.sqlite").path)
        store = FleetStore(database)
        try await store.migrate()
        let logger = Logger(label: "test-api")
        feed = ChangeFeed(store: store, pollInterval: .milliseconds(50), logger: logger)
        let api = FleetAPI(view: FleetView(store: store, staleAfter: staleAfter), feed: feed, metrics: ServiceMetrics(),
                           referenceSets: ["default"], defaultInterval: 60, logger: logger)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = try api.application(address: "127.0.0.1", port: 0,
                                      tls: try FleetAPI.tlsConfiguration(certificate: pki.serverCertificate, key: pki.serverKey, clientCA: pki.ca)) { channel in
            continuation.yield(channel.localAddress?.port ?? 0)
            continuation.finish()
        }
        let group = ServiceGroup(configuration: .init(services: [.init(service: app)], logger: logger))
        self.group = group
        task = Task { try await group.run() }
        var it = ports.makeAsyncIterator()
        port = await it.next() ?? 0
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        await feed.stop()
        await database.close()
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("Management API over mutual TLS")
struct APITests {
    @Test("hosts: add (checked), list, show, remove; errors are JSON with a code")
    func hosts() async throws {
        let api = try await RunningAPI()
        do {
            try await FleetClient.with(url: api.url, tls: api.clientFiles) { client in
                let r = HostRegistration(name: "xen-01", url: "https://127.0.0.1:8443", akPin: nil, referenceSet: "default", intervalSeconds: 5)
                let added = try await client.decode(HostStatus.self, .POST, "/v1/hosts", body: Array(try JSONEncoder().encode(r)))
                #expect(added.name == "xen-01" && added.verdict == .pending && added.intervalSeconds == 5)
                // Due now: the first attestation is not spread over an interval.
                #expect(abs(added.nextDue - Date().timeIntervalSince1970) < 5)

                var bad = r
                bad.referenceSet = "nope"
                bad.name = "xen-02"
                await #expect { try await client.call(.POST, "/v1/hosts", body: Array(try JSONEncoder().encode(bad))) } throws: { e in
                    (e as? FleetAPIError).map { $0.status == 400 && $0.code == "unknown_reference_set" && $0.message.contains("default") } ?? false
                }
                await #expect { try await client.call(.POST, "/v1/hosts", body: Array(try JSONEncoder().encode(r))) } throws: { e in
                    (e as? FleetAPIError).map { $0.status == 409 && $0.code == "duplicate_host" } ?? false
                }
                await #expect { try await client.call(.POST, "/v1/hosts", body: Array("{\"name\":1}".utf8)) } throws: { e in
                    (e as? FleetAPIError).map { $0.status == 400 && $0.code == "bad_request" } ?? false
                }
                // A fleet at once: an array, spread over the interval.
                let many = (0..<20).map { HostRegistration(name: "bulk-\($0)", url: "https://127.0.0.1:\(9000 + $0)", akPin: nil, referenceSet: "default", intervalSeconds: 100) }
                _ = try await client.call(.POST, "/v1/hosts", body: Array(try JSONEncoder().encode(many)))
                let hosts = try await client.decode([HostStatus].self, .GET, "/v1/hosts")
                #expect(hosts.count == 21)
                let now = Date().timeIntervalSince1970
                let dues = hosts.filter { $0.name.hasPrefix("bulk-") }.map { $0.nextDue - now }
                #expect(dues.allSatisfy { $0 > -5 && $0 < 101 })
                #expect(Set(dues.map { Int($0 / 10) }).count > 2)   // spread, not all at once

                #expect(try await client.decode(HostStatus.self, .GET, "/v1/hosts/xen-01").url == r.url)
                _ = try await client.call(.DELETE, "/v1/hosts/xen-01")
                await #expect { try await client.call(.GET, "/v1/hosts/xen-01") } throws: { e in
                    (e as? FleetAPIError).map { $0.status == 404 && $0.code == "no_such_host" } ?? false
                }
                await #expect { try await client.call(.GET, "/v1/nothing") } throws: { e in
                    (e as? FleetAPIError).map { $0.status == 404 } ?? false
                }
                let metrics = String(decoding: try await client.call(.GET, "/metrics"), as: UTF8.self)
                #expect(metrics.contains("vmv_verifier_attestations_total"))
                #expect(metrics.contains("vmv_verifier_attestation_duration_seconds_bucket"))
            }
        } catch {
            await api.stop()
            throw error
        }
        await api.stop()
    }

    @Test("mutual TLS: no client certificate, or a server's certificate, gets nothing")
    func clientCertificates() async throws {
        let api = try await RunningAPI()
        do {
            // A server certificate from the same CA is not an operator's: BoringSSL's chain check
            // refuses its extended key usage in the handshake (the API's own 403 check is the
            // second line, for a TLS stack that would let it through).
            let asServer = ClientTLSFiles(ca: api.pki.ca, certificate: api.pki.serverCertificate, key: api.pki.serverKey)
            await #expect { try await FleetClient.with(url: api.url, tls: asServer) { try await $0.call(.GET, "/v1/hosts") } } throws: { e in
                guard let e = e as? FleetAPIError else { return false }
                return (e.status == 0 && e.message.contains("UNSUPPORTED_CERTIFICATE")) || (e.status == 403 && e.code == "not_a_client_certificate")
            }
            // No client certificate at all: the handshake fails.
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(api.pki.ca))
            let ok = try await HTTPClient.withHTTPClient(configuration: .init(tlsConfiguration: tls)) { http -> Bool in
                do {
                    let r = try await http.execute(HTTPClientRequest(url: api.url + "/v1/hosts"), timeout: .seconds(10))
                    return r.status == .ok
                } catch {
                    return false
                }
            }
            #expect(!ok)
        } catch {
            await api.stop()
            throw error
        }
        await api.stop()
    }

    @Test("history and the event stream: a change recorded is streamed (and replayed with Last-Event-ID); verdict at T")
    func historyAndEvents() async throws {
        let api = try await RunningAPI()
        do {
            try await api.store.addHost(registration("h"), now: 0, firstDue: 0)
            try await FleetClient.with(url: api.url, tls: api.clientFiles) { client in
                // Open the stream, then record a change.
                let reader = Task { try await Self.readEvents(url: api.url + "/v1/events", tls: api.clientFiles, count: 2) }
                try await Task.sleep(for: .milliseconds(400))
                let claimed = try #require(try await api.store.claimDue(owner: "t", now: 1000, leaseSeconds: 30, limit: 1).first)
                let changes = try await api.store.complete(completion(claimed, owner: "t", at: 1000, verdict: .trusted, vms: [("0a0b0c0d-0000-4000-8000-000000000001", .trusted)]))
                let events = try await reader.value
                #expect(events.map(\.id) == changes.map(\.id))
                #expect(events.first?.host == "h" && events.first?.verdict == .trusted)

                // Reconnecting after the first event replays the second.
                let replay = try await Self.readEvents(url: api.url + "/v1/events", tls: api.clientFiles, count: 1, lastEventID: changes[0].id)
                #expect(replay.map(\.id) == [changes[1].id])

                let at = try await client.decode(VerdictAt.self, .GET, "/v1/history?host=h&vm=0a0b0c0d-0000-4000-8000-000000000001&at=1970-01-01T00:16:50Z")
                #expect(at.trusted && at.change?.id == changes[1].id)
                let before = try await client.decode(VerdictAt.self, .GET, "/v1/history?host=h&at=999")
                #expect(!before.trusted && before.change == nil)
                let all = try await client.decode([VerdictChange].self, .GET, "/v1/history?host=h")
                #expect(all.count == 2)
                await #expect { try await client.call(.GET, "/v1/history?host=h&at=yesterday") } throws: { e in
                    (e as? FleetAPIError).map { $0.status == 400 && $0.code == "bad_time" } ?? false
                }
            }
        } catch {
            await api.stop()
            throw error
        }
        await api.stop()
    }

    @Test("a verdict older than stale_after is shown unreachable, never trusted")
    func stale() async throws {
        let api = try await RunningAPI(staleAfter: 30)
        do {
            try await api.store.addHost(registration("old"), now: 0, firstDue: 0)
            let claimed = try #require(try await api.store.claimDue(owner: "t", now: 10, leaseSeconds: 30, limit: 1).first)
            _ = try await api.store.complete(completion(claimed, owner: "t", at: 10, verdict: .trusted, vms: [("0a0b0c0d-0000-4000-8000-000000000002", .trusted)]))
            #expect(try await api.store.hosts().first?.verdict == .trusted)   // what was stored
            try await FleetClient.with(url: api.url, tls: api.clientFiles) { client in
                let shown = try await client.decode(HostStatus.self, .GET, "/v1/hosts/old")
                #expect(shown.verdict == .unreachable)
                #expect(shown.reasons.first?.hasPrefix("stale: no attestation since 1970-01-01T00:00:10Z") == true)
                #expect(shown.vms.map(\.verdict) == [.unreachable])
                let page = String(decoding: try await client.call(.GET, "/"), as: UTF8.self)
                #expect(page.contains("data-host=\"old\" data-verdict=\"unreachable\""))
            }
        } catch {
            await api.stop()
            throw error
        }
        await api.stop()
    }

    /// Reads `count` verdict events from an SSE stream.
    static func readEvents(url: String, tls files: ClientTLSFiles, count: Int, lastEventID: Int64? = nil) async throws -> [VerdictChange] {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.ca))
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem))
        return try await HTTPClient.withHTTPClient(configuration: .init(tlsConfiguration: tls)) { http in
            var request = HTTPClientRequest(url: url)
            if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
            let response = try await http.execute(request, timeout: .seconds(20))
            #expect(response.headers["content-type"].first == "text/event-stream")
            var text = ""
            var out: [VerdictChange] = []
            for try await chunk in response.body {
                text += String(buffer: chunk)
                while let end = text.range(of: "\n\n") {
                    let event = String(text[..<end.lowerBound])
                    text = String(text[end.upperBound...])
                    if let data = event.split(separator: "\n").first(where: { $0.hasPrefix("data: ") }) {
                        out.append(try JSONDecoder().decode(VerdictChange.self, from: Data(data.dropFirst(6).utf8)))
                    }
                    if out.count == count { return out }
                }
            }
            return out
        }
    }
}
