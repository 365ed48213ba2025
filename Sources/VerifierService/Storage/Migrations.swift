/// One step of the fleet schema. Versions only go up; a released step is never edited (a
/// change is a new step), so a database at any earlier version migrates to the current one.
public struct Migration: Sendable {
    public var version: Int
    public var description: String
    public var sqlite: [String]
    public var postgresql: [String]

    public func statements(_ dialect: SQLDialect) -> [String] {
        dialect == .sqlite ? sqlite : postgresql
    }
}

/// The table that records which steps were applied (the same in both databases).
enum SchemaTable {
    static let create = "CREATE TABLE IF NOT EXISTS vmv_schema (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    static let current = "SELECT COALESCE(MAX(version), 0) AS version FROM vmv_schema"
    static let record = "INSERT INTO vmv_schema (version, description, applied_at) VALUES (?, ?, ?)"
}

public enum FleetSchema {
    /// Every step, in order.
    public static let migrations: [Migration] = [v1, v2]
    public static var latest: Int { migrations.last?.version ?? 0 }

    /// Hosts with their registration, verdict, schedule, lease and replay state; VMs; and the
    /// audit trail of verdict changes.
    static let v1 = Migration(
        version: 1, description: "hosts, vms, verdict_changes",
        sqlite: [
            hosts(real: "REAL"),
            "CREATE INDEX hosts_due ON hosts (next_due)",
            vms(real: "REAL"),
            """
            CREATE TABLE verdict_changes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                \(changeColumns(real: "REAL")))
            """,
            "CREATE INDEX verdict_changes_subject ON verdict_changes (host, vm_uuid, at)",
        ],
        postgresql: [
            hosts(real: "DOUBLE PRECISION"),
            "CREATE INDEX hosts_due ON hosts (next_due)",
            vms(real: "DOUBLE PRECISION"),
            """
            CREATE TABLE verdict_changes (
                id BIGSERIAL PRIMARY KEY,
                \(changeColumns(real: "DOUBLE PRECISION")))
            """,
            "CREATE INDEX verdict_changes_subject ON verdict_changes (host, vm_uuid, at)",
        ])

    /// Every attestation attempt, with the process that ran it (kept for a retention period):
    /// the record that shows two verifiers never held one host at once, and when a host was
    /// last asked. Added after v1 shipped; the hosts table gains `attempts`.
    static let v2 = Migration(
        version: 2, description: "attestations (attempt log), hosts.attempts",
        sqlite: [
            attestations(real: "REAL", id: "INTEGER PRIMARY KEY AUTOINCREMENT"),
            "CREATE INDEX attestations_host ON attestations (host, started)",
            "CREATE INDEX attestations_finished ON attestations (finished)",
            "ALTER TABLE hosts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        ],
        postgresql: [
            attestations(real: "DOUBLE PRECISION", id: "BIGSERIAL PRIMARY KEY"),
            "CREATE INDEX attestations_host ON attestations (host, started)",
            "CREATE INDEX attestations_finished ON attestations (finished)",
            "ALTER TABLE hosts ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0",
        ])

    static func hosts(real: String) -> String {
        """
        CREATE TABLE hosts (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL UNIQUE,
            ak_pin TEXT,
            ak_name TEXT,
            reference_set TEXT NOT NULL,
            interval_seconds INTEGER,
            added_at \(real) NOT NULL,
            verdict TEXT NOT NULL DEFAULT 'pending',
            verdict_since \(real),
            reasons TEXT NOT NULL DEFAULT '[]',
            platform TEXT NOT NULL DEFAULT 'pending',
            last_attempt \(real),
            last_success \(real),
            failures INTEGER NOT NULL DEFAULT 0,
            next_due \(real) NOT NULL,
            lease_owner TEXT,
            lease_until \(real),
            state TEXT)
        """
    }

    static func vms(real: String) -> String {
        """
        CREATE TABLE vms (
            host TEXT NOT NULL REFERENCES hosts (name) ON DELETE CASCADE,
            uuid TEXT NOT NULL,
            name TEXT,
            domid BIGINT,
            running INTEGER NOT NULL,
            verdict TEXT NOT NULL,
            since \(real) NOT NULL,
            reasons TEXT NOT NULL,
            updated_at \(real) NOT NULL,
            PRIMARY KEY (host, uuid))
        """
    }

    static func changeColumns(real: String) -> String {
        """
        host TEXT NOT NULL,
            subject TEXT NOT NULL,
            vm_uuid TEXT,
            vm_name TEXT,
            at \(real) NOT NULL,
            previous TEXT,
            verdict TEXT NOT NULL,
            reasons TEXT NOT NULL,
            evidence TEXT NOT NULL,
            owner TEXT NOT NULL
        """
    }

    static func attestations(real: String, id: String) -> String {
        """
        CREATE TABLE attestations (
            id \(id),
            host TEXT NOT NULL,
            owner TEXT NOT NULL,
            started \(real) NOT NULL,
            finished \(real) NOT NULL,
            verdict TEXT NOT NULL,
            reason TEXT)
        """
    }
}
