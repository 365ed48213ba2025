import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing
import TestSupport
import VerifierClient
@testable import VerifierService

#if canImport(Glibc)
import Glibc
#endif

/// A program left running, its output in a file; killed by `stop()` (or at deinit).
final class RunningProcess: @unchecked Sendable {
    let process = Process()
    let log: URL

    init(_ executable: String, _ arguments: [String], log: URL, directory: URL? = nil) throws {
        self.log = log
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? handle.close()
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// Waits for a line containing `text`; returns it.
    func waitFor(_ text: String, seconds: Double = 120) async throws -> String {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if let line = output.split(separator: "\n").last(where: { $0.contains(text) }) { return String(line) }
            guard process.isRunning else { throw HarnessError("\(process.executableURL?.lastPathComponent ?? "?") exited \(process.terminationStatus) before '\(text)': \(output.suffix(3000))") }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("no '\(text)' within \(seconds) s: \(output.suffix(3000))")
    }

    func signal(_ s: Int32) { if process.isRunning { kill(process.processIdentifier, s) } }

    /// SIGTERM, then SIGKILL after 20 s; returns the exit status.
    @discardableResult
    func stop() async -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, SIGCONT)
        kill(process.processIdentifier, SIGTERM)
        for _ in 0..<200 where process.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGCONT)
            kill(process.processIdentifier, SIGKILL)
        }
    }
}

/// Receives webhooks on loopback and accepts only correctly signed ones (`WebhookSignature`,
/// and the HMAC recomputed here with swift-crypto, as a receiver in another language would).
final class WebhookReceiver: @unchecked Sendable {
    struct Received: Sendable {
        let event: WebhookEvent
        let at: ContinuousClock.Instant
    }
    let secret: [UInt8]
    /// What arrived; a class so the route's closure and the test share one lock.
    final class Inbox: Sendable {
        let accepted = Mutex<[Received]>([])
        let refused = Mutex<[String]>([])
    }
    let inbox = Inbox()
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int

    init(secret: [UInt8]) async throws {
        self.secret = secret
        let inbox = self.inbox
        let router = Router()
        router.post("/hook") { request, _ -> Response in
            let body = Array(try await request.body.collect(upTo: 1 << 22).readableBytesView)
            let header = request.headers[HTTPField.Name(WebhookSignature.header)!] ?? ""
            do {
                let t = try WebhookSignature.verify(header: header, body: body, secret: secret, now: Int(Date().timeIntervalSince1970))
                // The same check written out, as docs/fleet.md tells a receiver to do it.
                let mac = HMAC<SHA256>.authenticationCode(for: Array("\(t).".utf8) + body, using: SymmetricKey(data: secret))
                guard header.contains("v1=" + mac.map { String(format: "%02x", $0) }.joined()) else { throw HarnessError("independent HMAC differs") }
                let event = try JSONDecoder().decode(WebhookEvent.self, from: Data(body))
                inbox.accepted.withLock { $0.append(Received(event: event, at: .now)) }
                return Response(status: .noContent)
            } catch {
                inbox.refused.withLock { $0.append("\(error)") }
                return Response(status: .unauthorized)
            }
        }
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0); continuation.finish() },
                              logger: Logger(label: "webhook-receiver"))
        group = ServiceGroup(configuration: .init(services: [.init(service: app)], logger: Logger(label: "webhook-receiver")))
        let g = group
        task = Task { try await g.run() }
        var it = ports.makeAsyncIterator()
        port = await it.next() ?? 0
    }

    var url: String { "http://127.0.0.1:\(port)/hook" }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// A fleet on this machine: `vmv certs init`, several `vmv serve` on their own swtpm and
/// loopback port, each enrolled (`vmv-verifier enroll`), references learned from them
/// (`vmv-verifier refs learn --platform`), and one or more `vmv-verifier serve`.
final class Fleet: @unchecked Sendable {
    let directory: URL
    var certs: URL { directory.appendingPathComponent("certs") }
    let names: [String]
    var ports: [String: Int] = [:]
    var hosts: [String: RunningProcess] = [:]
    var verifiers: [RunningProcess] = []
    var verifierPorts: [Int] = []

    init(hosts names: [String]) throws {
        directory = try TemporaryDirectory.make(prefix: "fleet")
        self.names = names
        let made = try Binaries.run("vmv", ["certs", "init", "--out", certs.path, "--san", "127.0.0.1", "--san", "localhost"])
        guard made.status == 0 else { throw HarnessError("vmv certs init: \(made.stderr)") }
        for name in names { ports[name] = try Swtpm.freePort(avoiding: Set(ports.values)) }
    }

    func hostDirectory(_ name: String) -> URL { directory.appendingPathComponent("hosts/\(name)") }
    func url(_ name: String) -> String { "https://127.0.0.1:\(ports[name] ?? 0)" }
    var tlsArguments: [String] { ["--ca", certs.appendingPathComponent("ca.pem").path, "--cert", certs.appendingPathComponent("client.pem").path,
                                  "--key", certs.appendingPathComponent("client.key").path] }

    /// Writes the host's configuration (`extra` appended: the tamper) and starts `vmv serve`.
    func startHost(_ name: String, extra: String = "") async throws {
        let dir = hostDirectory(name)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = """
            [state]
            directory = "state"
            [listen]
            port = \(ports[name] ?? 0)
            [tls]
            certificate = "\(certs.appendingPathComponent("server.pem").path)"
            key = "\(certs.appendingPathComponent("server.key").path)"
            client_ca = "\(certs.appendingPathComponent("ca.pem").path)"
            [measure]
            xen = "off"
            \(extra)
            """
        try config.write(to: dir.appendingPathComponent("vmv.toml"), atomically: true, encoding: .utf8)
        // The host keeps its port across a restart (the fleet knows it by URL); the old listener
        // or another test's free-port probe may hold it for a moment, so a bind refusal is retried.
        for attempt in 1... {
            let p = try RunningProcess(try Binaries.path("vmv"), ["serve", "--config", dir.appendingPathComponent("vmv.toml").path],
                                       log: dir.appendingPathComponent("serve-\(UUID().uuidString.prefix(4)).log"))
            hosts[name] = p
            do {
                _ = try await p.waitFor("serving the VMV API")
                return
            } catch where attempt < 20 && "\(error)".contains("Address already in use") {
                print("\(name): port \(ports[name] ?? 0) busy, starting vmv serve again (attempt \(attempt))")
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    func enrollAndLearn() throws {
        for name in names {
            let pin = directory.appendingPathComponent("pins/\(name).json").path
            try FileManager.default.createDirectory(atPath: directory.appendingPathComponent("pins").path, withIntermediateDirectories: true)
            let e = try Binaries.run("vmv-verifier", ["enroll", url(name)] + tlsArguments
                                     + ["--ek-anchors", hostDirectory(name).appendingPathComponent("state/swtpm/ca").path, "--out", pin])
            guard e.status == 0 else { throw HarnessError("enroll \(name): \(e.stdout) \(e.stderr)") }
            // One reference set per host: each host's configuration (its port) has its own digest.
            let l = try Binaries.run("vmv-verifier", ["refs", "learn", url(name), "--refs", directory.appendingPathComponent("refs/\(name)").path,
                                                      "--platform", "--ak", pin] + tlsArguments)
            guard l.status == 0 else { throw HarnessError("refs learn \(name): \(l.stdout) \(l.stderr)") }
        }
    }

    func pin(_ name: String) -> String { directory.appendingPathComponent("pins/\(name).json").path }

    /// Starts a verifier with this storage section; returns its API port.
    func startVerifier(_ owner: String, storage: String, interval: Int, timeout: Int, webhook: String, secretFile: String) async throws {
        let config = """
            [service]
            owner = "\(owner)"
            [listen]
            port = 0
            [tls]
            certificate = "certs/server.pem"
            key = "certs/server.key"
            client_ca = "certs/ca.pem"
            [hosts]
            ca = "certs/ca.pem"
            certificate = "certs/client.pem"
            key = "certs/client.key"
            \(storage)
            [schedule]
            interval_seconds = \(interval)
            timeout_seconds = \(timeout)
            max_backoff_seconds = \(2 * interval)
            [references]
            \(names.map { "\($0) = \"refs/\($0)\"" }.joined(separator: "\n"))
            [webhooks]
            urls = ["\(webhook)"]
            secret_file = "\(secretFile)"
            max_attempts = 5
            [log]
            level = "notice"
            """
        let path = directory.appendingPathComponent("\(owner).toml")
        try config.write(to: path, atomically: true, encoding: .utf8)
        let p = try RunningProcess(try Binaries.path("vmv-verifier"), ["serve", "--config", path.path],
                                   log: directory.appendingPathComponent("\(owner).log"))
        verifiers.append(p)
        let line = try await p.waitFor("vmv-verifier serving")
        guard let r = line.range(of: "port=") , let port = Int(line[r.upperBound...].prefix { $0.isNumber }) else {
            throw HarnessError("no port in '\(line)'")
        }
        verifierPorts.append(port)
    }

    var curlTLS: [String] { ["--cacert", certs.appendingPathComponent("ca.pem").path, "--cert", certs.appendingPathComponent("client.pem").path,
                             "--key", certs.appendingPathComponent("client.key").path] }

    func cli(_ arguments: [String], verifier: Int = 0) throws -> Tools.Result {
        try Binaries.run("vmv-verifier", arguments + ["--service", "https://127.0.0.1:\(verifierPorts[verifier])"] + tlsArguments)
    }

    func status(_ name: String, verifier: Int = 0) throws -> HostStatus {
        let r = try cli(["status", name, "--json"], verifier: verifier)
        guard r.status <= 1, let line = r.stdout.split(separator: "\n").first else { throw HarnessError("status \(name): \(r.stderr)") }
        return try JSONDecoder().decode(HostStatus.self, from: Data(line.utf8))
    }

    /// Polls until `name` shows `verdict`; returns the seconds it took.
    func waitUntil(_ name: String, is verdict: FleetVerdict, within seconds: Double) async throws -> Double {
        let start = ContinuousClock.now
        var last: HostStatus?
        while ContinuousClock.now - start < .milliseconds(Int(seconds * 1000)) {
            last = try status(name)
            if last?.verdict == verdict { return FleetSystemTests.seconds(ContinuousClock.now - start) }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw HarnessError("\(name) is \(last?.verdict.rawValue ?? "?") (\(last?.reasons.first ?? "")), not \(verdict) after \(seconds) s\n"
                           + verifiers.map { $0.output.suffix(3000) }.joined(separator: "\n---\n"))
    }

    func stop() async {
        for v in verifiers { await v.stop() }
        for h in hosts.values { await h.stop() }
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("Fleet: vmv-verifier serve against real vmv serve processes on swtpm", .serialized)
struct FleetSystemTests {
    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

    static let interval = 3
    static let timeout = 2

    @Test("three hosts trusted; one tampered midway turns untrusted within two intervals with a signed webhook; one that stops answering turns unreachable; the audit answers for both times")
    func sqliteFleet() async throws {
        try await Self.run(verifiers: 1, storage: { _ in "[storage]\nbackend = \"sqlite\"\npath = \"fleet.sqlite\"" })
    }

    /// The scenario, with `verifiers` processes on the storage `storage(directory)` gives.
    static func run(verifiers: Int, storage: (URL) throws -> String, check: (Fleet) async throws -> Void = { _ in }) async throws {
        let fleet = try Fleet(hosts: ["xen-a", "xen-b", "xen-c"])
        let secret = Array("fleet-test-secret-0123456789abcdef".utf8)
        let receiver = try await WebhookReceiver(secret: secret)
        do {
            for name in fleet.names { try await fleet.startHost(name) }
            try fleet.enrollAndLearn()
            let secretFile = fleet.directory.appendingPathComponent("webhook.secret")
            try Data(secret + [0x0a]).write(to: secretFile)
            let storageSection = try storage(fleet.directory)
            for i in 0..<verifiers {
                try await fleet.startVerifier("verifier-\(i + 1)", storage: storageSection, interval: interval, timeout: timeout,
                                              webhook: receiver.url, secretFile: secretFile.path)
            }
            for name in fleet.names {
                let add = try fleet.cli(["hosts", "add", name, fleet.url(name), "--ak", fleet.pin(name), "--reference-set", name])
                #expect(add.status == 0, "hosts add \(name): \(add.stdout) \(add.stderr)")
            }
            // A second registration of a name is refused, exit 2, the reason printed.
            let again = try fleet.cli(["hosts", "add", "xen-a", fleet.url("xen-a"), "--ak", fleet.pin("xen-a"), "--reference-set", "xen-a"])
            #expect(again.status == 2 && again.stderr.contains("duplicate_host"))
            let list = try fleet.cli(["hosts", "list"])
            #expect(fleet.names.allSatisfy { list.stdout.contains($0) })

            for name in fleet.names { _ = try await fleet.waitUntil(name, is: .trusted, within: 60) }
            let status = try fleet.cli(["status"])
            #expect(status.status == 0, "status: \(status.stdout)")
            let trustedAt = Date().timeIntervalSince1970
            try await Task.sleep(for: .seconds(1))

            // Tamper with xen-b: its VMV restarts with another configuration.
            await fleet.hosts["xen-b"]?.stop()
            let tamperStart = ContinuousClock.now
            try await fleet.startHost("xen-b", extra: "# changed by someone\n")
            let back = ContinuousClock.now
            let delay = try await fleet.waitUntil("xen-b", is: .untrusted, within: Double(4 * interval + timeout))
            print("xen-b: down \(seconds(back - tamperStart)) s for the restart, then untrusted \(delay) s after it answered again (interval \(interval) s)")
            #expect(delay <= Double(2 * interval) + 1, "untrusted \(delay) s after the tampered host answered; two intervals are \(2 * interval) s")
            let b = try fleet.status("xen-b")
            #expect(b.reasons.contains { $0.contains("vmvConfig") || $0.contains("config") }, "reasons: \(b.reasons)")

            // The webhook arrived, signed, naming the change.
            var hook: WebhookReceiver.Received?
            for _ in 0..<50 {
                hook = receiver.inbox.accepted.withLock { $0.first { $0.event.host == "xen-b" && $0.event.changes.contains { $0.subject == .host && $0.verdict == .untrusted } } }
                if hook != nil { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(hook != nil, "no signed webhook for xen-b's change to untrusted; refused: \(receiver.inbox.refused.withLock { $0 })")
            #expect(receiver.inbox.refused.withLock { $0 }.isEmpty)

            // xen-c stops answering (stopped, its socket open): unreachable.
            fleet.hosts["xen-c"]?.signal(SIGSTOP)
            let silent = try await fleet.waitUntil("xen-c", is: .unreachable, within: Double(2 * interval + 2 * timeout + 2))
            print("xen-c: unreachable \(silent) s after it stopped answering")
            fleet.hosts["xen-c"]?.signal(SIGCONT)

            // The audit: xen-b was trusted then, and is not now.
            let then = try fleet.cli(["history", "--host", "xen-b", "--at", String(trustedAt)])
            #expect(then.status == 0, "history at \(trustedAt): \(then.stdout) \(then.stderr)")
            #expect(then.stdout.contains("TRUSTED"))
            let now = try fleet.cli(["history", "--host", "xen-b", "--at", String(Date().timeIntervalSince1970)])
            #expect(now.status == 1)
            #expect(now.stdout.contains("UNTRUSTED"))
            let timeline = try fleet.cli(["history", "--host", "xen-b"])
            #expect(timeline.stdout.contains("-> trusted") && timeline.stdout.contains("-> untrusted"))

            // The fleet is not all trusted: `status` exits 1.
            #expect(try fleet.cli(["status", "--json"]).status == 1)
            // The metrics saw it (each verifier counts its own attempts; curl with the
            // operator's certificate, as Prometheus would scrape).
            var untrustedAttempts = 0.0, unreachableFailures = 0.0
            for port in fleet.verifierPorts {
                let m = try Tools.run(try Tools.path("curl"), ["--silent", "--show-error", "--fail"] + fleet.curlTLS + ["https://127.0.0.1:\(port)/metrics"])
                #expect(m.status == 0, "metrics: \(m.stderr)")
                func value(_ series: String) -> Double {
                    m.stdout.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
                }
                untrustedAttempts += value("vmv_verifier_attestations_total{verdict=\"untrusted\"}")
                unreachableFailures += value("vmv_verifier_attestation_failures_total{reason=\"unreachable\"}")
            }
            #expect(untrustedAttempts >= 1 && unreachableFailures >= 1, "untrusted attempts \(untrustedAttempts), unreachable failures \(unreachableFailures)")
            try await check(fleet)
        } catch {
            await fleet.stop()
            await receiver.stop()
            throw error
        }
        for (i, v) in fleet.verifiers.enumerated() {
            #expect(await v.stop() == 0, "verifier \(i + 1) did not stop cleanly")
        }
        await fleet.stop()
        await receiver.stop()
    }
}

@Suite("Fleet on PostgreSQL: two verifier processes share the hosts", .serialized, FleetScript.trait)
struct FleetPostgresSystemTests {
    @Test("the same scenario with two verifiers on one PostgreSQL database; no host attested by both at once; every host covered")
    func twoVerifiers() async throws {
        let cluster = try PostgresCluster()
        defer { cluster.stop() }
        try await FleetSystemTests.run(verifiers: 2, storage: { _ in "[storage]\nbackend = \"postgresql\"\nurl = \"\(cluster.url)\"" }) { fleet in
            let db = try PostgresDatabase(url: cluster.url, logger: Logger(label: "check"))
            let store = FleetStore(db)
            let attempts = try await store.attempts()
            await db.close()
            let owners = Set(attempts.map(\.owner))
            #expect(owners == ["verifier-1", "verifier-2"], "attempts by \(owners)")
            #expect(Set(attempts.map(\.host)) == Set(fleet.names))
            // Per host, no two attempts by different verifiers overlap in time.
            for host in fleet.names {
                let mine = attempts.filter { $0.host == host }.sorted { $0.started < $1.started }
                for (a, b) in zip(mine, mine.dropFirst()) {
                    #expect(b.started >= a.finished, "\(host): \(a.owner) \(a.started)–\(a.finished) overlaps \(b.owner) \(b.started)–\(b.finished)")
                }
            }
            // Both verifiers answer with the same fleet.
            #expect(try fleet.status("xen-b", verifier: 1).verdict == .untrusted)
        }
    }
}
