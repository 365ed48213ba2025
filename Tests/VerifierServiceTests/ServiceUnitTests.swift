import ConfigFile
import Crypto
import Foundation
import Testing
@testable import VerifierService

@Suite("Webhook signature")
struct WebhookSignatureTests {
    let secret = Array("0123456789abcdef0123456789abcdef".utf8)
    let body = Array(#"{"type":"verdict.changed"}"#.utf8)

    @Test("a signed body verifies; the header is t=…,v1=<HMAC-SHA256 of \"t.\" ‖ body>")
    func roundTrip() throws {
        let header = WebhookSignature.sign(body: body, secret: secret, timestamp: 1_700_000_000)
        #expect(header.hasPrefix("t=1700000000,v1="))
        // The same value computed independently of the code under test.
        let expected = HMAC<SHA256>.authenticationCode(for: Array("1700000000.".utf8) + body, using: SymmetricKey(data: secret))
        #expect(header == "t=1700000000,v1=" + expected.map { String(format: "%02x", $0) }.joined())
        #expect(try WebhookSignature.verify(header: header, body: body, secret: secret, now: 1_700_000_100) == 1_700_000_000)
    }

    @Test("a changed body, another secret, an old or future timestamp, or a malformed header are refused")
    func refusals() {
        let header = WebhookSignature.sign(body: body, secret: secret, timestamp: 1_700_000_000)
        #expect(throws: WebhookSignature.Failure.mismatch) {
            try WebhookSignature.verify(header: header, body: body + [0x20], secret: secret, now: 1_700_000_000)
        }
        #expect(throws: WebhookSignature.Failure.mismatch) {
            try WebhookSignature.verify(header: header, body: body, secret: Array("another secret of 32 bytes......".utf8), now: 1_700_000_000)
        }
        #expect(throws: WebhookSignature.Failure.stale(age: 301, tolerance: 300)) {
            try WebhookSignature.verify(header: header, body: body, secret: secret, now: 1_700_000_301)
        }
        #expect(throws: WebhookSignature.Failure.stale(age: -400, tolerance: 300)) {
            try WebhookSignature.verify(header: header, body: body, secret: secret, now: 1_699_999_600)
        }
        // The timestamp is signed: moving it forward breaks the signature.
        let moved = header.replacingOccurrences(of: "t=1700000000", with: "t=1700000200")
        #expect(throws: WebhookSignature.Failure.mismatch) {
            try WebhookSignature.verify(header: moved, body: body, secret: secret, now: 1_700_000_200)
        }
        for bad in ["", "t=1", "v1=00", "t=x,v1=" + String(repeating: "0", count: 64), "t=1,v1=zz", "garbage"] {
            #expect(throws: WebhookSignature.Failure.self) { try WebhookSignature.verify(header: bad, body: body, secret: secret, now: 1) }
        }
    }

    @Test("retries back off exponentially up to the cap")
    func backoff() {
        let s = WebhookSettings(firstDelay: .seconds(1), maxDelay: .seconds(10))
        #expect((1...6).map { s.delay(retry: $0) } == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10), .seconds(10)])
    }
}

@Suite("Scheduling and judgement")
struct JudgeTests {
    @Test("the next attempt: the interval on success, doubling per failure up to the cap, jitter within bounds")
    func cadence() {
        let c = Cadence(interval: 10, jitter: 0.1, maxBackoff: 60)
        #expect(c.delay(failures: 0, unit: 0) == 10)
        #expect(c.delay(failures: 1, unit: 0) == 10)
        #expect(c.delay(failures: 2, unit: 0) == 20)
        #expect(c.delay(failures: 3, unit: 0) == 40)
        #expect(c.delay(failures: 4, unit: 0) == 60)
        #expect(c.delay(failures: 40, unit: 0) == 60)
        #expect(c.delay(failures: 0, unit: 1) == 11)
        #expect(abs(c.delay(failures: 0, unit: -1) - 9) < 1e-9)
        #expect(c.delay(failures: 0, unit: 7) == 11)   // a draw outside [-1, 1] is clamped
    }

    @Test("a sound attempt is next due an interval after it started, however long it took; a failure backs off from its end")
    func nextDue() {
        let c = Cadence(interval: 10, jitter: 0, maxBackoff: 60)
        #expect(c.nextDue(started: 100, finished: 100.8, failures: 0, unit: 0) == 110)
        #expect(c.nextDue(started: 100, finished: 112, failures: 0, unit: 0) == 112)   // never in the past
        #expect(c.nextDue(started: 100, finished: 102, failures: 1, unit: 0) == 112)
        #expect(c.nextDue(started: 100, finished: 102, failures: 2, unit: 0) == 122)
    }

    func claimed(verdict: FleetVerdict, failures: Int = 0) -> ClaimedHost {
        ClaimedHost(registration: HostRegistration(name: "h", url: "https://127.0.0.1:1", akPin: nil, referenceSet: "default"),
                    state: nil, verdict: verdict, verdictSince: 5, failures: failures, leaseUntil: 100, due: 50,
                    vms: [VMStatus(uuid: "u1", name: "web", domid: 3, running: true, verdict: .trusted, since: 5, reasons: [], updatedAt: 5)])
    }

    @Test("an unreachable host is never left trusted: host and VMs turn unreachable, changes recorded, backoff")
    func unreachable() {
        let c = Judge.judge(claimed(verdict: .trusted, failures: 1), .unreachable("connection refused"), owner: "o", started: 60, finished: 61,
                            cadence: Cadence(interval: 10, jitter: 0, maxBackoff: 100), unit: 0)
        #expect(c.verdict == .unreachable)
        #expect(c.reasons == ["connection refused"])
        #expect(c.vms.map(\.verdict) == [.unreachable])
        #expect(c.vms.first?.reasons.first?.contains("connection refused") == true)
        #expect(c.changes.map(\.subject) == [.host, .vm])
        #expect(c.changes.map(\.previous) == [.trusted, .trusted])
        #expect(c.state == nil && c.platform == nil)
        #expect(c.failures == 2)
        #expect(c.nextDue == 61 + 20)
        #expect(c.reason == "unreachable")
    }

    @Test("a host answering with an error fails; a second identical failure records no change")
    func hostError() {
        let first = Judge.judge(claimed(verdict: .pending), .hostError("503 tpm: busy"), owner: "o", started: 1, finished: 2,
                                cadence: Cadence(interval: 10, jitter: 0, maxBackoff: 100), unit: 0)
        #expect(first.verdict == .failed)
        #expect(first.changes.count == 2)
        var again = claimed(verdict: .failed, failures: 1)
        again.vms[0].verdict = .failed
        let second = Judge.judge(again, .hostError("503 tpm: busy"), owner: "o", started: 3, finished: 4,
                                 cadence: Cadence(interval: 10, jitter: 0, maxBackoff: 100), unit: 0)
        #expect(second.changes.isEmpty)
        #expect(second.vms.first?.since == 5)
        #expect(second.reason == "host_error")
    }
}

@Suite("Service configuration")
struct ConfigurationTests {
    @Test("every key read, paths relative to the file, defaults kept")
    func full() throws {
        let text = """
            [service]
            owner = "v1"
            [listen]
            address = "0.0.0.0"
            port = 0
            [tls]
            certificate = "s.pem"
            key = "/abs/s.key"
            client_ca = "ca.pem"
            [hosts]
            ca = "hca.pem"
            certificate = "c.pem"
            key = "c.key"
            insecure_skip_hostname_verification = true
            [storage]
            backend = "postgresql"
            url = "postgresql://vmv@127.0.0.1:5432/fleet"
            [schedule]
            interval_seconds = 10
            jitter_percent = 5
            max_backoff_seconds = 120
            timeout_seconds = 5
            max_concurrent = 200
            lease_seconds = 30
            stale_after_seconds = 45
            [references]
            default = "measurements"
            lab = "/srv/refs"
            [trust]
            ak_ca = "akca.pem"
            [webhooks]
            urls = ["https://hooks.example/vmv", "http://127.0.0.1:9999/"]
            secret_file = "hook.secret"
            max_attempts = 5
            first_retry_seconds = 2
            [retention]
            attestations_hours = 48
            [log]
            level = "debug"
            """
        let c = try ServiceConfiguration.parse(text, file: "/etc/vmv/verifier.toml", relativeTo: "/etc/vmv")
        #expect(c.owner == "v1" && c.address == "0.0.0.0" && c.port == 0)
        #expect(c.certificate == "/etc/vmv/s.pem" && c.privateKey == "/abs/s.key" && c.clientCA == "/etc/vmv/ca.pem")
        #expect(c.hostsCA == "/etc/vmv/hca.pem" && c.skipHostnameVerification)
        #expect(c.backend == .postgresql && c.postgresURL == "postgresql://vmv@127.0.0.1:5432/fleet")
        #expect(c.intervalSeconds == 10 && c.jitterPercent == 5 && c.maxBackoffSeconds == 120 && c.timeoutSeconds == 5)
        #expect(c.maxConcurrent == 200 && c.leaseSeconds == 30 && c.staleAfter == 45)
        #expect(c.references == ["default": "/etc/vmv/measurements", "lab": "/srv/refs"])
        #expect(c.akCA == "/etc/vmv/akca.pem")
        #expect(c.webhookURLs.count == 2 && c.webhookSecretFile == "/etc/vmv/hook.secret" && c.webhookMaxAttempts == 5)
        #expect(c.attestationsHours == 48 && c.logLevel == "debug")

        let defaults = try ServiceConfiguration.parse("", file: "v.toml", relativeTo: "/d")
        #expect(defaults.backend == .sqlite && defaults.sqlitePath == "/d/fleet.sqlite")
        #expect(defaults.references == ["default": "/d/measurements"])
        #expect(defaults.staleAfter == Double(3 * 60 + 20))
        #expect(defaults.leaseSeconds >= 2 * defaults.timeoutSeconds)
    }

    @Test("bad values are refused with the file, the line and the reason")
    func refusals() {
        let cases: [(String, String)] = [
            ("[schedule]\ninterval_seconds = 0", "v.toml:2: [schedule] interval_seconds = 0: outside 1–86400"),
            ("[schedule]\ntimeout_seconds = 30\nlease_seconds = 40", "v.toml:3: [schedule] lease_seconds = 40 must be at least twice timeout_seconds (30)"),
            ("[storage]\nbackend = \"mysql\"", "v.toml:2: [storage] backend = \"mysql\": sqlite or postgresql"),
            ("[storage]\nbackend = \"postgresql\"", "v.toml:1: [storage] backend = \"postgresql\" needs url"),
            ("[webhooks]\nurls = [\"https://x/\"]", "v.toml:1: [webhooks] urls without secret_file"),
            ("[webhooks]\nurls = [\"ftp://x/\"]\nsecret_file = \"s\"", "v.toml:2: [webhooks] urls: 'ftp://x/' is not an http:// or https:// URL"),
            ("[schedule]\nintervall = 3", "v.toml:2: [schedule] unknown key 'intervall'"),
            ("[scheduler]\n", "v.toml:1: unknown table [scheduler]"),
            ("port = 1", "v.toml:1: key 'port' is outside any table"),
            ("[log]\nlevel = \"loud\"", "v.toml:2: [log] level = \"loud\""),
        ]
        for (text, message) in cases {
            do {
                _ = try ServiceConfiguration.parse(text, file: "v.toml", relativeTo: ".")
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.description.hasPrefix(message), "\(error.description)")
            }
        }
    }

    @Test("PostgreSQL URLs: user, password, host, port, database; anything else refused")
    func postgresURL() throws {
        let c = try PostgresDatabase.parse("postgresql://vmv:s%40cret@db.example:6543/fleet")
        #expect(c == .init(user: "vmv", password: "s@cret", host: "db.example", port: 6543, database: "fleet"))
        #expect(try PostgresDatabase.parse("postgres://u@h/d") == .init(user: "u", password: nil, host: "h", port: 5432, database: "d"))
        for bad in ["mysql://u@h/d", "postgresql://h/d", "postgresql://u@h", "postgresql://u@h:99999/d", "postgresql://u@h/d?sslmode=x"] {
            #expect(throws: StorageError.self) { try PostgresDatabase.parse(bad) }
        }
    }
}

@Suite("Web page")
struct WebPageTests {
    @Test("names from hosts and logs are escaped; the server-side filter keeps matching rows only")
    func escaping() {
        let evil = HostStatus(name: "h1", url: "https://127.0.0.1:1", referenceSet: "default", intervalSeconds: nil, akName: nil, addedAt: 0,
                              verdict: .untrusted, verdictSince: 1, reasons: ["<script>alert(1)</script>"], platform: .trusted,
                              lastAttempt: 2, lastSuccess: 2, failures: 0, nextDue: 3, leaseOwner: nil,
                              vms: [VMStatus(uuid: "u", name: "\"><img src=x>", domid: 1, running: true, verdict: .untrusted, since: 1, reasons: [], updatedAt: 1)])
        var other = evil
        other.name = "h2"
        other.vms = []
        other.reasons = []
        other.verdict = .trusted
        let page = WebPage.overview(FleetStatus(generatedAt: 5, counts: ["untrusted": 1, "trusted": 1], hosts: [evil, other]), filter: "")
        #expect(!page.contains("<script>alert"))
        #expect(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(!page.contains("\"><img"))
        #expect(page.contains("data-host=\"h1\"") && page.contains("data-host=\"h2\""))
        let filtered = WebPage.overview(FleetStatus(generatedAt: 5, counts: [:], hosts: [evil, other]), filter: "H2")
        #expect(!filtered.contains("data-host=\"h1\"") && filtered.contains("data-host=\"h2\""))
        #expect(filtered.contains("<b id=\"shown\">1</b>"))
    }
}
