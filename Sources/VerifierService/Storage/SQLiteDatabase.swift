import FoundationEssentials
// Why GRDB (7.10.0) and not sqlite-nio: GRDB links the system's libsqlite3 (Debian's 3.40,
// security updates from the distribution, RETURNING and UPSERT available) and builds in
// seconds, where sqlite-nio compiles its own copy of the 250k-line amalgamation on every cold
// build, which CI pays on 2 cores. GRDB's DatabasePool gives WAL mode with concurrent readers
// (the web page and API read while the scheduler writes) and one serialized writer, and runs
// its work on its own dispatch queues, off Swift's cooperative pool. We use it only as a
// connection layer: the SQL is shared with PostgreSQL (FleetStore), not GRDB's query builder.
import GRDB

/// The embedded store: one SQLite file, nothing to set up. One verifier process per file
/// (several processes may share a file on one machine — SQLite locks — but a fleet shared by
/// several verifiers belongs in PostgreSQL).
public final class SQLiteDatabase: SQLDatabase {
    public let dialect = SQLDialect.sqlite
    public let path: String
    let pool: DatabasePool

    public init(path: String) throws {
        var configuration = Configuration()
        // Another process holding the write lock: wait, do not fail.
        configuration.busyMode = .timeout(30)
        configuration.foreignKeysEnabled = true
        configuration.label = "vmv-fleet"
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw StorageError("\(path): cannot open the SQLite database: \(error)")
        }
        self.path = path
    }

    public func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        let arguments = StatementArguments(binds.map(Self.databaseValue))
        do {
            if sql.hasPrefix("SELECT") {
                return try await pool.read { db in try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.row) }
            }
            return try await pool.write { db in try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.row) }
        } catch let e as DatabaseError {
            throw Self.describe(e)
        }
    }

    @discardableResult
    public func transaction(_ statements: [SQLStatement]) async throws -> [[SQLRow]] {
        do {
            return try await pool.write { db in
                var out: [[SQLRow]] = []
                for s in statements {
                    let rows = try Row.fetchAll(db, sql: s.sql, arguments: StatementArguments(s.binds.map(Self.databaseValue)))
                    // RETURNING rows, or the rows the statement changed.
                    let changed = rows.isEmpty ? db.changesCount : rows.count
                    if let expected = s.expectRows, changed != expected {
                        throw StorageError.conflict("\(s.sql.prefix(60))…: changed \(changed) rows, expected \(expected)")
                    }
                    out.append(rows.map(Self.row))
                }
                return out
            }
        } catch let e as DatabaseError {
            throw Self.describe(e)
        }
    }

    public func migrate(_ migrations: [Migration], upTo target: Int?) async throws -> [Int] {
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: SchemaTable.create)
            var applied: [Int] = []
            for m in migrations where m.version <= (target ?? Int.max) {
                // BEGIN IMMEDIATE takes SQLite's write lock: a second process waits here, then
                // sees the step applied and skips it.
                try db.inTransaction(.immediate) {
                    let current = try Int.fetchOne(db, sql: SchemaTable.current) ?? 0
                    guard m.version > current else { return .commit }
                    guard m.version == current + 1 else {
                        throw StorageError("schema version \(current) cannot take migration \(m.version) (\(m.description)): a step is missing")
                    }
                    for sql in m.statements(.sqlite) { try db.execute(sql: sql) }
                    try db.execute(sql: SchemaTable.record, arguments: [m.version, m.description, Date().timeIntervalSince1970])
                    applied.append(m.version)
                    return .commit
                }
            }
            return applied
        }
    }

    public func schemaVersion() async throws -> Int {
        try await pool.read { db in
            guard try db.tableExists("vmv_schema") else { return 0 }
            return try Int.fetchOne(db, sql: SchemaTable.current) ?? 0
        }
    }

    public func close() async {
        try? pool.close()
    }

    static func databaseValue(_ v: SQLValue) -> DatabaseValue {
        switch v {
        case .null: .null
        case .integer(let i): i.databaseValue
        case .real(let d): d.databaseValue
        case .text(let s): s.databaseValue
        }
    }

    static func row(_ r: Row) -> SQLRow {
        var columns: [String: SQLValue] = [:]
        for (name, value) in zip(r.columnNames, r.databaseValues) {
            switch value.storage {
            case .null: columns[name] = .null
            case .int64(let i): columns[name] = .integer(i)
            case .double(let d): columns[name] = .real(d)
            case .string(let s): columns[name] = .text(s)
            case .blob(let b): columns[name] = .text(String(decoding: b, as: UTF8.self))
            }
        }
        return SQLRow(columns)
    }

    static func describe(_ e: DatabaseError) -> StorageError {
        let kind: StorageError.Kind = e.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY || e.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE ? .duplicate : .failure
        return StorageError("SQLite: \(e.message ?? "error \(e.resultCode)")", kind: kind)
    }
}
