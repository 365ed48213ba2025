import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import Testing
import TestSupport
import VerifierClient
@testable import VerifierService

/// A test-only loopback forwarder: plain HTTP on 127.0.0.1 for the browser, each request sent on
/// to the service over mutual TLS with the operator's client certificate (headless Chromium
/// cannot present a client certificate without a policy file in /etc). The service keeps mTLS.
final class LoopbackForwarder: @unchecked Sendable {
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int
    let http: HTTPClient
    /// The paths the browser asked for, in order.
    let requested = Requested()

    final class Requested: Sendable {
        let paths = Mutex<[String]>([])
    }

    init(to target: String, tls files: ClientTLSFiles) async throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.ca))
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem))
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        self.http = http
        let router = Router()
        router.add(middleware: Forward(target: target, http: http, requested: requested))
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0); continuation.finish() },
                              logger: Logger(label: "forwarder"))
        let group = ServiceGroup(configuration: .init(services: [.init(service: app)], logger: Logger(label: "forwarder")))
        self.group = group
        task = Task { try await group.run() }
        var it = ports.makeAsyncIterator()
        port = await it.next() ?? 0
    }

    struct Forward: RouterMiddleware {
        let target: String
        let http: HTTPClient
        let requested: Requested

        func handle(_ request: Request, context: BasicRequestContext, next: (Request, BasicRequestContext) async throws -> Response) async throws -> Response {
            requested.paths.withLock { $0.append(request.uri.path) }
            var out = HTTPClientRequest(url: target + request.uri.description)
            out.method = .init(rawValue: request.method.rawValue)
            if let last = request.headers[HTTPField.Name("Last-Event-ID")!] { out.headers.add(name: "Last-Event-ID", value: last) }
            let answer = try await http.execute(out, timeout: .seconds(60))
            var headers = HTTPFields()
            for h in answer.headers {
                guard let name = HTTPField.Name(h.name), !["content-length", "transfer-encoding", "connection"].contains(h.name.lowercased()) else { continue }
                headers.append(HTTPField(name: name, value: h.value))
            }
            return Response(status: .init(code: Int(answer.status.code)), headers: headers, body: ResponseBody(asyncSequence: answer.body))
        }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        try? await http.shutdown()
    }
}

@Suite("Operator page in headless Chromium", FleetScript.trait)
struct WebPageBrowserTests {
    static let artifacts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/test-artifacts")

    /// chromium --headless, with JavaScript run for `budget` ms of virtual time (pages loaded
    /// with `#live=off`: an open event stream would stop the virtual clock for good).
    static func chromium(_ arguments: [String], budget: Int? = 4000) throws -> String {
        let home = try TemporaryDirectory.make(prefix: "chromium")
        defer { try? FileManager.default.removeItem(at: home) }
        let result = try Tools.run(try Tools.path("chromium"),
                                   ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                                    "--user-data-dir=\(home.path)"] + (budget.map { ["--virtual-time-budget=\($0)"] } ?? []) + arguments,
                                   environment: ["HOME": home.path])
        guard result.status == 0 else { throw HarnessError("chromium exited \(result.status): \(result.stderr.suffix(2000))") }
        return result.stdout
    }

    @Test("the page lists hosts, VMs and verdicts; the filter (server and script) hides the others; the timeline shows the records; a screenshot is kept")
    func page() async throws {
        let api = try await RunningAPI()
        let forwarder: LoopbackForwarder
        do { forwarder = try await LoopbackForwarder(to: api.url, tls: api.clientFiles) } catch {
            await api.stop()
            throw error
        }
        do {
            // Three hosts: one trusted, one whose VM turned untrusted, one unreachable.
            let vm = "0a0b0c0d-0000-4000-8000-00000000000"
            for (i, name) in ["alpha", "bravo", "charlie"].enumerated() {
                try await api.store.addHost(registration(name, port: 8400 + i), now: 0, firstDue: 0)
            }
            let now = Date().timeIntervalSince1970
            let plan: [String: [FleetVerdict]] = ["alpha": [.trusted], "bravo": [.trusted, .untrusted], "charlie": [.trusted, .unreachable]]
            for step in 0..<2 {
                let at = now - 10 + Double(step)
                for c in try await api.store.claimDue(owner: "verifier-1", now: 1e10 + Double(step), leaseSeconds: 30, limit: 10) {
                    let name = c.registration.name
                    guard let verdicts = plan[name], step < verdicts.count else { continue }
                    _ = try await api.store.complete(completion(c, owner: "verifier-1", at: at, verdict: verdicts[step],
                                                                vms: [(vm + String(name.count), verdicts[step])]))
                }
                try await api.store.releaseLeases(owner: "verifier-1")
            }
            let base = "http://127.0.0.1:\(forwarder.port)"
            try FileManager.default.createDirectory(at: Self.artifacts, withIntermediateDirectories: true)

            let dom = try Self.chromium(["--dump-dom", base + "/#live=off"])
            for (name, verdict) in [("alpha", "trusted"), ("bravo", "untrusted"), ("charlie", "unreachable")] {
                #expect(dom.contains("data-host=\"\(name)\" data-verdict=\"\(verdict)\""), "row of \(name) as \(verdict)")
            }
            #expect(dom.contains(">UNTRUSTED</span> vm-0a0b"))
            #expect(dom.contains("<b data-count=\"trusted\">1</b>"))
            #expect(dom.contains("<b id=\"shown\">3</b>"))
            // The script ran: the filter is wired, the stream left closed as asked.
            #expect(dom.contains("data-filtered=\"yes\""))
            #expect(dom.contains("data-state=\"off\""))

            // The server-side filter, and the script's verdict filter from the URL.
            let filtered = try Self.chromium(["--dump-dom", base + "/?q=bravo#live=off"])
            #expect(filtered.contains("data-host=\"bravo\"") && !filtered.contains("data-host=\"alpha\""))
            let byState = try Self.chromium(["--dump-dom", base + "/#state=unreachable&live=off"])
            #expect(byState.contains("<b id=\"shown\">1</b>"))
            // Start tags of the rows: only charlie's is not hidden.
            let tags = byState.components(separatedBy: "<tr data-host=").dropFirst().map { $0.prefix { $0 != ">" } }
            #expect(tags.count == 3)
            #expect(tags.filter { !$0.contains("hidden") }.map { $0.prefix(9) } == ["\"charlie\""])

            // The host's timeline: the change, its reasons and the log record behind it.
            let host = try Self.chromium(["--dump-dom", base + "/hosts/bravo#live=off"])
            #expect(host.contains("data-subject=\"\(vm)5\""))
            #expect(host.contains("TRUSTED</span> → <span class=\"v v-untrusted\""))
            #expect(host.contains("<pre>{\"seq\":7}</pre>"))

            // The screenshot (real time, no virtual clock): the page as an operator opens it,
            // and its script opens the event stream through the browser.
            #expect(!forwarder.requested.paths.withLock { $0 }.contains("/v1/events"))
            let shot = Self.artifacts.appendingPathComponent("fleet-page.png")
            try? FileManager.default.removeItem(at: shot)
            _ = try Self.chromium(["--screenshot=\(shot.path)", "--window-size=1280,800", "--hide-scrollbars", base + "/"], budget: nil)
            #expect(forwarder.requested.paths.withLock { $0 }.contains("/v1/events"))
            let png = try Data(contentsOf: shot)
            #expect(png.starts(with: [0x89, 0x50, 0x4e, 0x47]))
            #expect(png.count > 10_000)
        } catch {
            await forwarder.stop()
            await api.stop()
            throw error
        }
        await forwarder.stop()
        await api.stop()
    }
}
