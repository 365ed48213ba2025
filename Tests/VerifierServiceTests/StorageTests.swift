import Foundation
import Logging
import Testing
import TestSupport
@testable import VerifierService
import Verifier

/// scripts/test-fleet.sh installs PostgreSQL and Chromium and sets VMV_TEST_FLEET=1; the suites
/// that need them are reported as skipped in the default run, which does not install them.
enum FleetScript {
    static let running = ProcessInfo.processInfo.environment["VMV_TEST_FLEET"] == "1"
    static var trait: ConditionTrait { .enabled(if: running, "needs PostgreSQL or Chromium: run by scripts/test-fleet.sh") }
}

/// A fresh database of one backend, and its teardown.
struct Backend: Sendable, CustomTestStringConvertible {
    enum Kind: String, Sendable { case sqlite, postgresql }
    let kind: Kind
    var testDescription: String { kind.rawValue }

    /// SQLite always; PostgreSQL in scripts/test-fleet.sh's run (a missing PostgreSQL fails it).
    static let all = [Backend(kind: .sqlite)] + (FleetScript.running ? [Backend(kind: .postgresql)] : [])

    /// Runs `body` against an empty database of this backend (a temporary SQLite file, or a
    /// private PostgreSQL cluster started for the test).
    func with(_ body: (any SQLDatabase) async throws -> Void) async throws {
        switch kind {
        case .sqlite:
            let dir = try TemporaryDirectory.make(prefix: "fleet-sqlite")
            defer { try? FileManager.default.removeItem(at: dir) }
            let db = try SQLiteDatabase(path: dir.appendingPathComponent("fleet.sqlite").path)
            do { try await body(db) } catch { await db.close(); throw error }
            await db.close()
        case .postgresql:
            let cluster = try PostgresCluster()
            defer { cluster.stop() }
            let db = try PostgresDatabase(url: cluster.url, logger: Logger(label: "test"))
            do { try await body(db) } catch { await db.close(); throw error }
            await db.close()
        }
    }
}

func registration(_ name: String, port: Int = 8443) -> HostRegistration {
    HostRegistration(name: name, url: "https://127.0.0.1:\(port)", akPin: nil, referenceSet: "default")
}

func completion(_ claimed: ClaimedHost, owner: String, at: Double, verdict: FleetVerdict, vms: [(String, FleetVerdict)] = []) -> Completion {
    let vmStatuses = vms.map { VMStatus(uuid: $0.0, name: "vm-" + $0.0.prefix(4), domid: 1, running: true, verdict: $0.1, since: at, reasons: ["r \($0.1)"], updatedAt: at) }
    var changes: [VerdictChange] = []
    if verdict != claimed.verdict {
        changes.append(VerdictChange(id: 0, host: claimed.registration.name, subject: .host, vmUUID: nil, vmName: nil, at: at,
                                     previous: claimed.verdict, verdict: verdict, reasons: ["because \(verdict)"], evidence: .none, owner: owner))
    }
    for vm in vmStatuses where claimed.vms.first(where: { $0.uuid == vm.uuid })?.verdict != vm.verdict {
        changes.append(VerdictChange(id: 0, host: claimed.registration.name, subject: .vm, vmUUID: vm.uuid, vmName: vm.name, at: at,
                                     previous: claimed.vms.first(where: { $0.uuid == vm.uuid })?.verdict, verdict: vm.verdict,
                                     reasons: vm.reasons, evidence: ChangeEvidence(epoch: 1, facts: [], records: ["{\"seq\":7}"], failedChecks: []),
                                     owner: owner))
    }
    return Completion(host: claimed.registration.name, owner: owner, started: at - 0.1, finished: at, verdict: verdict, reasons: ["because \(verdict)"],
                      platform: verdict == .unreachable ? nil : .trusted, state: nil, vms: vmStatuses, changes: changes,
                      failures: verdict == .unreachable ? claimed.failures + 1 : 0, nextDue: at + 10, reason: verdict == .trusted ? nil : verdict.rawValue)
}

@Suite("Fleet storage (SQLite and PostgreSQL)")
struct StorageTests {
    @Test("migrations: an empty database goes to the latest schema, and again is a no-op", arguments: Backend.all)
    func fromEmpty(_ backend: Backend) async throws {
        try await backend.with { db in
            #expect(try await db.schemaVersion() == 0)
            let store = FleetStore(db)
            #expect(try await store.migrate() == FleetSchema.migrations.map(\.version))
            #expect(try await db.schemaVersion() == FleetSchema.latest)
            #expect(try await store.migrate() == [])
            // The schema works: a host goes in and comes out.
            try await store.addHost(registration("a"), now: 100, firstDue: 100)
            #expect(try await store.hosts().map(\.name) == ["a"])
        }
    }

    @Test("migrations: a database at the previous version keeps its rows and gains the new schema", arguments: Backend.all)
    func fromPrevious(_ backend: Backend) async throws {
        try await backend.with { db in
            let store = FleetStore(db)
            #expect(try await store.migrate(upTo: FleetSchema.latest - 1) == Array(1..<FleetSchema.latest))
            #expect(try await db.schemaVersion() == FleetSchema.latest - 1)
            // A host and a change written by the previous version (its columns only).
            _ = try await db.query("INSERT INTO hosts (name, url, reference_set, added_at, next_due, verdict) VALUES (?, ?, ?, ?, ?, ?)",
                                   ["old", "https://10.0.0.1:8443", "default", 50, 60, "trusted"])
            _ = try await db.query("INSERT INTO verdict_changes (host, subject, at, verdict, reasons, evidence, owner) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   ["old", "host", 55, "trusted", "[\"ok\"]", "{\"facts\":[],\"records\":[],\"failedChecks\":[]}", "v0"])
            #expect(try await store.migrate() == [FleetSchema.latest])
            let hosts = try await store.hosts()
            #expect(hosts.map(\.name) == ["old"])
            #expect(hosts.first?.verdict == .trusted)
            // The new schema's parts work on the old rows: claim and complete (writes attestations, hosts.attempts).
            let claimed = try await store.claimDue(owner: "v1", now: 100, leaseSeconds: 30, limit: 10)
            #expect(claimed.map(\.registration.name) == ["old"])
            let c = try #require(claimed.first)
            _ = try await store.complete(completion(c, owner: "v1", at: 101, verdict: .untrusted))
            #expect(try await store.attempts(host: "old").count == 1)
            #expect(try await store.verdict(host: "old", vm: nil, at: 56).change?.verdict == .trusted)
            #expect(try await store.verdict(host: "old", vm: nil, at: 102).change?.verdict == .untrusted)
        }
    }

    @Test("hosts: add, refuse a duplicate name or URL, list, remove", arguments: Backend.all)
    func hosts(_ backend: Backend) async throws {
        try await backend.with { db in
            let store = FleetStore(db)
            try await store.migrate()
            try await store.addHost(registration("b", port: 1), now: 1, firstDue: 1)
            try await store.addHost(registration("a", port: 2), now: 1, firstDue: 1)
            await #expect(throws: StorageError.self) { try await store.addHost(registration("a", port: 3), now: 1, firstDue: 1) }
            do {
                try await store.addHost(registration("c", port: 1), now: 1, firstDue: 1)
                Issue.record("a second host with the same URL was stored")
            } catch let e as StorageError {
                #expect(e.kind == .duplicate)
                #expect(e.description.contains("already registered"))
            }
            #expect(try await store.hosts().map(\.name) == ["a", "b"])
            #expect(try await store.hosts().allSatisfy { $0.verdict == .pending })
            #expect(try await store.removeHost("a"))
            #expect(try await !store.removeHost("a"))
            #expect(try await store.hosts().map(\.name) == ["b"])
            // A registration the API would refuse is refused by the store too.
            await #expect(throws: StorageError.self) {
                try await store.addHost(HostRegistration(name: "bad name", url: "https://x:1", akPin: nil, referenceSet: "default"), now: 1, firstDue: 1)
            }
        }
    }

    @Test("leases: two owners never hold one host; a lost lease writes nothing; an expired lease is taken over", arguments: Backend.all)
    func leases(_ backend: Backend) async throws {
        try await backend.with { db in
            let store = FleetStore(db)
            try await store.migrate()
            for i in 0..<10 { try await store.addHost(registration("h\(i)", port: 1000 + i), now: 0, firstDue: Double(i)) }
            let a = try await store.claimDue(owner: "A", now: 100, leaseSeconds: 30, limit: 4)
            let b = try await store.claimDue(owner: "B", now: 100, leaseSeconds: 30, limit: 10)
            #expect(a.count == 4)
            #expect(b.count == 6)
            #expect(Set(a.map(\.registration.name)).isDisjoint(with: b.map(\.registration.name)))
            // Earliest due first.
            #expect(a.map(\.registration.name).sorted() == ["h0", "h1", "h2", "h3"])
            #expect(try await store.claimDue(owner: "C", now: 110, leaseSeconds: 30, limit: 10).isEmpty)
            // A's lease on h0 expires; C takes h0 (and the others whose leases expired).
            let c = try await store.claimDue(owner: "C", now: 131, leaseSeconds: 30, limit: 1)
            let h0 = try #require(a.first { $0.registration.name == c.first?.registration.name })
            // A finishes late: its outcome is refused, nothing is written.
            do {
                _ = try await store.complete(completion(h0, owner: "A", at: 132, verdict: .trusted))
                Issue.record("a completion without the lease was written")
            } catch let e as StorageError {
                #expect(e.kind == .conflict)
            }
            #expect(try await store.hosts(name: h0.registration.name).first?.verdict == .pending)
            #expect(try await store.attempts(host: h0.registration.name).isEmpty)
            // C's completion is written and frees the host until its next due time.
            let cHost = try #require(c.first)
            _ = try await store.complete(completion(cHost, owner: "C", at: 133, verdict: .trusted))
            let after = try #require(try await store.hosts(name: cHost.registration.name).first)
            #expect(after.verdict == .trusted)
            #expect(after.leaseOwner == nil)
            #expect(after.nextDue == 143)
            // A host removed while leased: the completion is refused.
            let b0 = try #require(b.first)
            #expect(try await store.removeHost(b0.registration.name))
            await #expect(throws: StorageError.self) { _ = try await store.complete(completion(b0, owner: "B", at: 120, verdict: .trusted)) }
            // Leases given back at shutdown make hosts claimable at once.
            try await store.releaseLeases(owner: "B")
            #expect(try await store.claimDue(owner: "D", now: 121, leaseSeconds: 30, limit: 100).count == 5)
        }
    }

    @Test("concurrent claims from two owners: every host once per round, never by both", arguments: Backend.all)
    func concurrentClaims(_ backend: Backend) async throws {
        try await backend.with { db in
            let store = FleetStore(db)
            try await store.migrate()
            let n = 60
            for i in 0..<n { try await store.addHost(registration("h\(i)", port: 2000 + i), now: 0, firstDue: 0) }
            let results = try await withThrowingTaskGroup(of: (String, [String]).self) { group in
                for owner in ["A", "B"] {
                    group.addTask {
                        var mine: [String] = []
                        for _ in 0..<20 {
                            mine += try await store.claimDue(owner: owner, now: 10, leaseSeconds: 60, limit: 3).map(\.registration.name)
                        }
                        return (owner, mine)
                    }
                }
                var out: [String: [String]] = [:]
                for try await (owner, names) in group { out[owner] = names }
                return out
            }
            let a = results["A"] ?? [], b = results["B"] ?? []
            #expect(Set(a).isDisjoint(with: b))
            #expect(a.count == Set(a).count && b.count == Set(b).count)
            #expect(Set(a + b).count == n)
            #expect(try await store.hosts().allSatisfy { $0.leaseOwner == "A" || $0.leaseOwner == "B" })
        }
    }

    @Test("audit: every change kept with reasons and records; the verdict in force at T", arguments: Backend.all)
    func audit(_ backend: Backend) async throws {
        try await backend.with { db in
            let store = FleetStore(db)
            try await store.migrate()
            try await store.addHost(registration("x"), now: 0, firstDue: 0)
            let vm = "6f1c2a54-0c4e-4a55-9d2b-1b2c3d4e5f60"
            var claimed = try #require(try await store.claimDue(owner: "A", now: 1000, leaseSeconds: 30, limit: 1).first)
            let first = try await store.complete(completion(claimed, owner: "A", at: 1000, verdict: .trusted, vms: [(vm, .trusted)]))
            #expect(first.count == 2)
            #expect(first.allSatisfy { $0.id > 0 })
            // Same verdicts again: no change recorded, `since` kept.
            _ = try await store.hosts()
            claimed = try #require(try await store.claimDue(owner: "A", now: 1010, leaseSeconds: 30, limit: 1).first)
            #expect(claimed.vms.map(\.verdict) == [.trusted])
            #expect(try await store.complete(completion(claimed, owner: "A", at: 1010, verdict: .trusted, vms: [(vm, .trusted)])).isEmpty)
            claimed = try #require(try await store.claimDue(owner: "B", now: 1020, leaseSeconds: 30, limit: 1).first)
            let second = try await store.complete(completion(claimed, owner: "B", at: 1020, verdict: .untrusted, vms: [(vm, .untrusted)]))
            #expect(second.map(\.verdict) == [.untrusted, .untrusted])
            #expect(second.map(\.id).min() ?? 0 > first.map(\.id).max() ?? 0)

            let history = try await store.changes(host: "x", vm: vm)
            #expect(history.map(\.verdict) == [.trusted, .untrusted])
            #expect(history.last?.previous == .trusted)
            #expect(history.last?.evidence.records == ["{\"seq\":7}"])
            #expect(history.last?.owner == "B")
            // By name too.
            #expect(try await store.changes(host: "x", vm: "vm-6f1c").count == 2)

            #expect(try await store.verdict(host: "x", vm: vm, at: 999).change == nil)
            #expect(try await store.verdict(host: "x", vm: vm, at: 999).trusted == false)
            let t1 = try await store.verdict(host: "x", vm: vm, at: 1015)
            #expect(t1.trusted)
            #expect(t1.change?.at == 1000)
            #expect(t1.lastAttempt?.finished == 1010)
            let t2 = try await store.verdict(host: "x", vm: vm, at: 1020)
            #expect(!t2.trusted)
            #expect(t2.change?.verdict == .untrusted)
            #expect(try await store.verdict(host: "x", vm: nil, at: 1005).change?.subject == .host)
            // The history outlives the host.
            #expect(try await store.removeHost("x"))
            #expect(try await store.changes(host: "x").count == 4)
            #expect(try await store.newestChangeID() == second.map(\.id).max())
            // Retention prunes attempts, never changes.
            #expect(try await store.pruneAttempts(before: 1015) == 2)
            #expect(try await store.changes(host: "x").count == 4)
        }
    }
}
