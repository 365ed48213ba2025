import FoundationEssentials
import Verifier

/// A host a verifier process holds for one attestation: its registration, where its replay
/// stands, and what the service last said about it and its VMs.
public struct ClaimedHost: Sendable {
    public var registration: HostRegistration
    public var state: HostState?
    public var verdict: FleetVerdict
    public var verdictSince: Double?
    public var failures: Int
    public var leaseUntil: Double
    /// When the host fell due.
    public var due: Double
    public var vms: [VMStatus]
}

/// Everything one attestation writes, in one transaction, fenced by the lease.
public struct Completion: Sendable {
    public var host: String
    public var owner: String
    public var started: Double
    public var finished: Double
    public var verdict: FleetVerdict
    public var reasons: [String]
    /// The platform's verdict when the evidence was sound (nil: unchanged).
    public var platform: FleetVerdict?
    /// The replay state after a sound attestation (nil: the stored one stays).
    public var state: HostState?
    /// The VMs as judged now (rows are inserted or replaced).
    public var vms: [VMStatus]
    /// The verdict changes this attestation made (ids are assigned by the store).
    public var changes: [VerdictChange]
    public var failures: Int
    public var nextDue: Double
    /// The metrics' failure reason, nil when trusted.
    public var reason: String?
}

/// The fleet's storage: hosts, their verdicts and replay state, the audit trail, the attempt
/// log, and the leases that split hosts between verifier processes. One implementation over
/// `SQLDatabase`: the same SQL on SQLite and PostgreSQL.
public struct FleetStore: Sendable {
    public let database: any SQLDatabase

    public init(_ database: any SQLDatabase) {
        self.database = database
    }

    /// Brings the schema up to `target` (default: the latest). Returns the steps applied.
    @discardableResult
    public func migrate(upTo target: Int? = nil) async throws -> [Int] {
        let current = try await database.schemaVersion()
        if current > FleetSchema.latest {
            throw StorageError("the database is at schema version \(current), newer than this verifier's \(FleetSchema.latest): upgrade vmv-verifier")
        }
        return try await database.migrate(FleetSchema.migrations, upTo: target)
    }

    static func json<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String, _ what: String) throws(StorageError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(text.utf8)) } catch {
            throw StorageError("\(what): stored JSON is not a \(T.self) (\(ReferenceDocument.describe(error)))")
        }
    }

    static func verdict(_ row: SQLRow, _ column: String) throws(StorageError) -> FleetVerdict {
        let text = try row.text(column)
        guard let v = FleetVerdict(rawValue: text) else { throw StorageError("column \(column): '\(text)' is not a verdict") }
        return v
    }

    // MARK: Hosts

    /// Registers a host, first due at `firstDue` (the caller spreads new hosts over an interval).
    public func addHost(_ r: HostRegistration, now: Double, firstDue: Double) async throws {
        if let problem = r.problem { throw StorageError(problem) }
        do {
            _ = try await database.query(
                "INSERT INTO hosts (name, url, ak_pin, ak_name, reference_set, interval_seconds, added_at, next_due) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [.text(r.name), .text(r.url), SQLValue(r.akPin.map(Self.json)), SQLValue(r.akPin?.akName), .text(r.referenceSet),
                 SQLValue(r.intervalSeconds), .real(now), .real(firstDue)])
        } catch let e as StorageError where e.kind == .duplicate {
            throw StorageError("a host named \(r.name) or with the URL \(r.url) is already registered", kind: .duplicate)
        }
    }

    /// Removes a host and its VMs (its verdict history stays, for audit). False: no such host.
    public func removeHost(_ name: String) async throws -> Bool {
        let rows = try await database.query("DELETE FROM hosts WHERE name = ? RETURNING name", [.text(name)])
        return !rows.isEmpty
    }

    static let hostColumns = """
        name, url, ak_pin, ak_name, reference_set, interval_seconds, added_at, verdict, verdict_since, reasons, platform,
        last_attempt, last_success, failures, next_due, lease_owner, lease_until
        """

    static func status(_ row: SQLRow, vms: [VMStatus]) throws(StorageError) -> HostStatus {
        HostStatus(
            name: try row.text("name"), url: try row.text("url"), referenceSet: try row.text("reference_set"),
            intervalSeconds: row["interval_seconds"].int.map { Int($0) }, akName: row["ak_name"].string,
            addedAt: try row.real("added_at"), verdict: try verdict(row, "verdict"), verdictSince: row["verdict_since"].double,
            reasons: try decode([String].self, try row.text("reasons"), "hosts.reasons"), platform: try verdict(row, "platform"),
            lastAttempt: row["last_attempt"].double, lastSuccess: row["last_success"].double,
            failures: Int(try row.integer("failures")), nextDue: try row.real("next_due"),
            leaseOwner: row["lease_owner"].string, vms: vms)
    }

    /// Hosts (all, or one by name) with their VMs, by name.
    public func hosts(name: String? = nil, withVMs: Bool = true) async throws -> [HostStatus] {
        let rows = try await database.query(
            "SELECT \(Self.hostColumns) FROM hosts" + (name == nil ? "" : " WHERE name = ?") + " ORDER BY name",
            name.map { [.text($0)] } ?? [])
        var vmsByHost: [String: [VMStatus]] = [:]
        if withVMs {
            let vmRows = try await database.query(
                "SELECT host, uuid, name, domid, running, verdict, since, reasons, updated_at FROM vms" + (name == nil ? "" : " WHERE host = ?")
                    + " ORDER BY host, name, uuid",
                name.map { [.text($0)] } ?? [])
            for r in vmRows { vmsByHost[try r.text("host"), default: []].append(try Self.vm(r)) }
        }
        var out: [HostStatus] = []
        for r in rows { out.append(try Self.status(r, vms: vmsByHost[try r.text("name")] ?? [])) }
        return out
    }

    /// The registration of one host (with its AK pin).
    public func registration(_ name: String) async throws -> HostRegistration? {
        guard let row = try await database.query(
            "SELECT name, url, ak_pin, reference_set, interval_seconds FROM hosts WHERE name = ?", [.text(name)]).first
        else { return nil }
        return try Self.registration(row)
    }

    static func registration(_ row: SQLRow) throws(StorageError) -> HostRegistration {
        HostRegistration(
            name: try row.text("name"), url: try row.text("url"),
            akPin: try row["ak_pin"].string.map { (s: String) throws(StorageError) in try decode(AKPin.self, s, "hosts.ak_pin") },
            referenceSet: try row.text("reference_set"), intervalSeconds: row["interval_seconds"].int.map { Int($0) })
    }

    static func vm(_ r: SQLRow) throws(StorageError) -> VMStatus {
        VMStatus(uuid: try r.text("uuid"), name: r["name"].string, domid: r["domid"].int.flatMap { UInt32(exactly: $0) },
                 running: (r["running"].int ?? 0) != 0, verdict: try verdict(r, "verdict"), since: try r.real("since"),
                 reasons: try decode([String].self, try r.text("reasons"), "vms.reasons"), updatedAt: try r.real("updated_at"))
    }

    /// How many hosts hold each verdict.
    public func countsByVerdict() async throws -> [FleetVerdict: Int] {
        var out: [FleetVerdict: Int] = [:]
        for r in try await database.query("SELECT verdict, COUNT(*) AS n FROM hosts GROUP BY verdict", []) {
            out[try Self.verdict(r, "verdict")] = Int(try r.integer("n"))
        }
        return out
    }

    // MARK: Scheduling

    /// Takes up to `limit` hosts that are due and not leased by another process, leasing them
    /// to `owner` until `now + leaseSeconds`. Two processes never receive the same host while
    /// its lease runs: PostgreSQL skips rows another claim has locked; SQLite serializes writers.
    public func claimDue(owner: String, now: Double, leaseSeconds: Double, limit: Int) async throws -> [ClaimedHost] {
        guard limit > 0 else { return [] }
        let lock = database.dialect == .postgresql ? " FOR UPDATE SKIP LOCKED" : ""
        let rows = try await database.query(
            """
            UPDATE hosts SET lease_owner = ?, lease_until = ?
            WHERE name IN (SELECT name FROM hosts WHERE next_due <= ? AND (lease_until IS NULL OR lease_until < ?)
                           ORDER BY next_due LIMIT ?\(lock))
            RETURNING name, url, ak_pin, reference_set, interval_seconds, verdict, verdict_since, failures, lease_until, next_due, state
            """,
            [.text(owner), .real(now + leaseSeconds), .real(now), .real(now), .integer(Int64(limit))])
        guard !rows.isEmpty else { return [] }
        var claimed: [ClaimedHost] = []
        for r in rows {
            let name = try r.text("name")
            claimed.append(ClaimedHost(
                registration: try Self.registration(r),
                state: try r["state"].string.map { (s: String) throws(StorageError) in try Self.decode(HostState.self, s, "hosts.state of \(name)") },
                verdict: try Self.verdict(r, "verdict"), verdictSince: r["verdict_since"].double,
                failures: Int(try r.integer("failures")), leaseUntil: try r.real("lease_until"), due: try r.real("next_due"), vms: []))
        }
        // The VMs of the claimed hosts, in one query.
        let names = claimed.map(\.registration.name)
        let placeholders = Array(repeating: "?", count: names.count).joined(separator: ", ")
        let vmRows = try await database.query(
            "SELECT host, uuid, name, domid, running, verdict, since, reasons, updated_at FROM vms WHERE host IN (\(placeholders))",
            names.map { .text($0) })
        var byHost: [String: [VMStatus]] = [:]
        for r in vmRows { byHost[try r.text("host"), default: []].append(try Self.vm(r)) }
        for i in claimed.indices { claimed[i].vms = byHost[claimed[i].registration.name] ?? [] }
        return claimed
    }

    /// The earliest time a host falls due (nil: no hosts).
    public func nextDue() async throws -> Double? {
        try await database.query("SELECT MIN(next_due) AS t FROM hosts", []).first?["t"].double
    }

    /// Writes an attestation's outcome, if `owner` still holds the host's lease; otherwise
    /// throws `StorageError` of kind `.conflict` and writes nothing (another process took over,
    /// or the host was removed). Returns the changes with the ids the store gave them.
    public func complete(_ c: Completion) async throws -> [VerdictChange] {
        var statements: [SQLStatement] = []
        let sinceClause = "verdict_since = CASE WHEN verdict = ? AND verdict_since IS NOT NULL THEN verdict_since ELSE ? END"
        statements.append(SQLStatement(
            """
            UPDATE hosts SET \(sinceClause), verdict = ?, reasons = ?, platform = COALESCE(?, platform), last_attempt = ?,
                last_success = CASE WHEN ? = 1 THEN ? ELSE last_success END, failures = ?, next_due = ?, state = COALESCE(?, state),
                attempts = attempts + 1, lease_owner = NULL, lease_until = NULL
            WHERE name = ? AND lease_owner = ? RETURNING name
            """,
            [.text(c.verdict.rawValue), .real(c.finished), .text(c.verdict.rawValue), .text(Self.json(c.reasons)), SQLValue(c.platform?.rawValue),
             .real(c.finished), .integer(c.state != nil ? 1 : 0), .real(c.finished), .integer(Int64(c.failures)), .real(c.nextDue),
             SQLValue(c.state.map(Self.json)), .text(c.host), .text(c.owner)],
            expectRows: 1))
        for vm in c.vms {
            statements.append(SQLStatement(
                """
                INSERT INTO vms (host, uuid, name, domid, running, verdict, since, reasons, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (host, uuid) DO UPDATE SET name = excluded.name, domid = excluded.domid, running = excluded.running,
                    verdict = excluded.verdict, since = excluded.since, reasons = excluded.reasons, updated_at = excluded.updated_at
                """,
                [.text(c.host), .text(vm.uuid), SQLValue(vm.name), vm.domid.map { .integer(Int64($0)) } ?? .null, .integer(vm.running ? 1 : 0),
                 .text(vm.verdict.rawValue), .real(vm.since), .text(Self.json(vm.reasons)), .real(vm.updatedAt)]))
        }
        for ch in c.changes {
            statements.append(SQLStatement(
                "INSERT INTO verdict_changes (host, subject, vm_uuid, vm_name, at, previous, verdict, reasons, evidence, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [.text(ch.host), .text(ch.subject.rawValue), SQLValue(ch.vmUUID), SQLValue(ch.vmName), .real(ch.at), SQLValue(ch.previous?.rawValue),
                 .text(ch.verdict.rawValue), .text(Self.json(ch.reasons)), .text(Self.json(ch.evidence)), .text(ch.owner)]))
        }
        statements.append(SQLStatement(
            "INSERT INTO attestations (host, owner, started, finished, verdict, reason) VALUES (?, ?, ?, ?, ?, ?)",
            [.text(c.host), .text(c.owner), .real(c.started), .real(c.finished), .text(c.verdict.rawValue), SQLValue(c.reason)]))
        let results = try await database.transaction(statements)
        let firstChange = 1 + c.vms.count
        var out = c.changes
        for i in out.indices {
            let rows = firstChange + i < results.count ? results[firstChange + i] : []
            out[i].id = rows.first?["id"].int ?? 0
        }
        return out
    }

    /// Gives back every lease `owner` holds (a verifier shutting down), due at once.
    public func releaseLeases(owner: String) async throws {
        _ = try await database.query("UPDATE hosts SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", [.text(owner)])
    }

    // MARK: History

    static let changeColumns = "id, host, subject, vm_uuid, vm_name, at, previous, verdict, reasons, evidence, owner"

    static func change(_ r: SQLRow) throws(StorageError) -> VerdictChange {
        let subject = try r.text("subject")
        guard let s = VerdictChange.Subject(rawValue: subject) else { throw StorageError("verdict_changes.subject: '\(subject)'") }
        return VerdictChange(
            id: try r.integer("id"), host: try r.text("host"), subject: s, vmUUID: r["vm_uuid"].string, vmName: r["vm_name"].string,
            at: try r.real("at"), previous: try r["previous"].string.map { (p: String) throws(StorageError) in
                guard let v = FleetVerdict(rawValue: p) else { throw StorageError("verdict_changes.previous: '\(p)'") }
                return v
            },
            verdict: try verdict(r, "verdict"), reasons: try decode([String].self, try r.text("reasons"), "verdict_changes.reasons"),
            evidence: try decode(ChangeEvidence.self, try r.text("evidence"), "verdict_changes.evidence"), owner: try r.text("owner"))
    }

    /// Verdict changes, oldest first: of a host (its own and its VMs'), of one VM (UUID or
    /// name) of a host, or all; only those with id > `afterID`.
    public func changes(host: String? = nil, vm: String? = nil, afterID: Int64 = 0, limit: Int = 1000) async throws -> [VerdictChange] {
        var sql = "SELECT \(Self.changeColumns) FROM verdict_changes WHERE id > ?"
        var binds: [SQLValue] = [.integer(afterID)]
        if let host {
            sql += " AND host = ?"
            binds.append(.text(host))
        }
        if let vm {
            sql += " AND subject = 'vm' AND (vm_uuid = ? OR vm_name = ?)"
            binds += [.text(vm.lowercased()), .text(vm)]
        }
        sql += " ORDER BY id LIMIT ?"
        binds.append(.integer(Int64(limit)))
        var out: [VerdictChange] = []
        for r in try await database.query(sql, binds) { out.append(try Self.change(r)) }
        return out
    }

    /// The id of the newest change (0: none).
    public func newestChangeID() async throws -> Int64 {
        try await database.query("SELECT COALESCE(MAX(id), 0) AS id FROM verdict_changes", []).first?["id"].int ?? 0
    }

    /// Changes with the given ids (the SSE feed's late commits).
    public func changes(ids: [Int64]) async throws -> [VerdictChange] {
        guard !ids.isEmpty else { return [] }
        let placeholders = Array(repeating: "?", count: ids.count).joined(separator: ", ")
        var out: [VerdictChange] = []
        for r in try await database.query("SELECT \(Self.changeColumns) FROM verdict_changes WHERE id IN (\(placeholders)) ORDER BY id",
                                          ids.map { .integer($0) }) {
            out.append(try Self.change(r))
        }
        return out
    }

    /// "Was VM X (or host H itself, with vm nil) trusted at time T?": the change in force at T
    /// and the last attempt kept before T.
    public func verdict(host: String, vm: String?, at: Double) async throws -> VerdictAt {
        var sql = "SELECT \(Self.changeColumns) FROM verdict_changes WHERE host = ? AND at <= ?"
        var binds: [SQLValue] = [.text(host), .real(at)]
        if let vm {
            sql += " AND subject = 'vm' AND (vm_uuid = ? OR vm_name = ?)"
            binds += [.text(vm.lowercased()), .text(vm)]
        } else {
            sql += " AND subject = 'host'"
        }
        sql += " ORDER BY at DESC, id DESC LIMIT 1"
        let change = try await database.query(sql, binds).first.map { (r: SQLRow) throws(StorageError) in try Self.change(r) }
        let attempt = try await database.query(
            "SELECT host, owner, started, finished, verdict, reason FROM attestations WHERE host = ? AND finished <= ? ORDER BY finished DESC LIMIT 1",
            [.text(host), .real(at)]).first.map { (r: SQLRow) throws(StorageError) in try Self.attempt(r) }
        return VerdictAt(host: host, vm: vm, at: at, change: change, lastAttempt: attempt, trusted: change?.verdict == .trusted)
    }

    static func attempt(_ r: SQLRow) throws(StorageError) -> AttestationAttempt {
        AttestationAttempt(host: try r.text("host"), owner: try r.text("owner"), started: try r.real("started"),
                           finished: try r.real("finished"), verdict: try verdict(r, "verdict"), reason: r["reason"].string)
    }

    /// Attempts kept, oldest first (of one host, or all).
    public func attempts(host: String? = nil, since: Double = 0, limit: Int = 100_000) async throws -> [AttestationAttempt] {
        var out: [AttestationAttempt] = []
        for r in try await database.query(
            "SELECT host, owner, started, finished, verdict, reason FROM attestations WHERE started >= ?"
                + (host == nil ? "" : " AND host = ?") + " ORDER BY started LIMIT ?",
            [.real(since)] + (host.map { [SQLValue.text($0)] } ?? []) + [.integer(Int64(limit))]) {
            out.append(try Self.attempt(r))
        }
        return out
    }

    /// Deletes attempts that finished before `before` (verdict changes are never pruned).
    @discardableResult
    public func pruneAttempts(before: Double) async throws -> Int {
        try await database.query("DELETE FROM attestations WHERE finished < ? RETURNING id", [.real(before)]).count
    }
}
