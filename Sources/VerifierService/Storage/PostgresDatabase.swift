import FoundationEssentials
import Logging
import NIOCore
import PostgresNIO

/// The shared store: several verifier processes on one PostgreSQL database split the fleet
/// between them (claims with `FOR UPDATE SKIP LOCKED`, leases that fence late writers).
public final class PostgresDatabase: SQLDatabase {
    public let dialect = SQLDialect.postgresql
    let client: PostgresClient
    let runner: Task<Void, Never>
    let logger: Logger

    /// A key of `pg_advisory_xact_lock` for migrations ("vmv" in ASCII, then 1).
    static let migrationLock: Int64 = 0x766d_7601

    /// `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`; a password may also come from
    /// `VMV_PG_PASSWORD`. Loopback or a private network: this connection does not use TLS.
    public init(url: String, logger: Logger) throws {
        let c = try Self.parse(url)
        let password = c.password ?? ProcessInfo.processInfo.environment["VMV_PG_PASSWORD"]
        var configuration = PostgresClient.Configuration(host: c.host, port: c.port, username: c.user, password: password,
                                                         database: c.database, tls: .disable)
        configuration.options.maximumConnections = 16
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        runner = Task { await client.run() }
    }

    struct Coordinates: Equatable {
        var user: String
        var password: String?
        var host: String
        var port: Int
        var database: String
    }

    static func parse(_ url: String) throws(StorageError) -> Coordinates {
        var rest: Substring
        if url.hasPrefix("postgresql://") { rest = url.dropFirst("postgresql://".count) }
        else if url.hasPrefix("postgres://") { rest = url.dropFirst("postgres://".count) }
        else { throw StorageError("\(url): expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE") }
        guard let at = rest.lastIndex(of: "@") else { throw StorageError("\(url): no USER@ part") }
        let credentials = rest[..<at]
        rest = rest[rest.index(after: at)...]
        let user: String, password: String?
        if let colon = credentials.firstIndex(of: ":") {
            user = String(credentials[..<colon])
            password = String(credentials[credentials.index(after: colon)...]).removingPercentEncoding
        } else {
            user = String(credentials)
            password = nil
        }
        guard let slash = rest.firstIndex(of: "/") else { throw StorageError("\(url): no /DATABASE part") }
        let hostPort = rest[..<slash]
        let database = String(rest[rest.index(after: slash)...])
        var host = String(hostPort), port = 5432
        if let colon = hostPort.lastIndex(of: ":"), !hostPort.hasSuffix("]") {
            guard let p = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(p) else {
                throw StorageError("\(url): the port is not a number in 1–65535")
            }
            host = String(hostPort[..<colon])
            port = p
        }
        guard !user.isEmpty, !host.isEmpty, !database.isEmpty, !database.contains("?") else {
            throw StorageError("\(url): expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (no parameters)")
        }
        return Coordinates(user: user, password: password, host: host, port: port, database: database)
    }

    static func query(_ sql: String, _ binds: [SQLValue]) -> PostgresQuery {
        var b = PostgresBindings(capacity: binds.count)
        for v in binds {
            switch v {
            case .null: b.appendNull()
            case .integer(let i): b.append(i)
            case .real(let d): b.append(d)
            case .text(let s): b.append(s)
            }
        }
        return PostgresQuery(unsafeSQL: sql.numberedPlaceholders(), binds: b)
    }

    static func collect(_ rows: PostgresRowSequence) async throws -> [SQLRow] {
        var out: [SQLRow] = []
        for try await row in rows {
            var columns: [String: SQLValue] = [:]
            for cell in row {
                columns[cell.columnName] = try value(cell)
            }
            out.append(SQLRow(columns))
        }
        return out
    }

    static func value(_ cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int2: return .integer(Int64(try cell.decode(Int16.self)))
        case .int4: return .integer(Int64(try cell.decode(Int32.self)))
        case .int8: return .integer(try cell.decode(Int64.self))
        case .float4: return .real(Double(try cell.decode(Float.self)))
        case .float8: return .real(try cell.decode(Double.self))
        case .numeric: return .real(Double(try cell.decode(String.self)) ?? .nan)
        default: return .text(try cell.decode(String.self))
        }
    }

    public func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        do {
            return try await Self.collect(try await client.query(Self.query(sql, binds), logger: logger))
        } catch let e as PSQLError {
            throw Self.describe(e)
        }
    }

    @discardableResult
    public func transaction(_ statements: [SQLStatement]) async throws -> [[SQLRow]] {
        do {
            return try await client.withTransaction(logger: logger) { connection in
                var out: [[SQLRow]] = []
                for s in statements {
                    let rows = try await Self.collect(try await connection.query(Self.query(s.sql, s.binds), logger: self.logger))
                    // Statements that must change a number of rows say RETURNING.
                    if let expected = s.expectRows, rows.count != expected {
                        throw StorageError.conflict("\(s.sql.prefix(60))…: changed \(rows.count) rows, expected \(expected)")
                    }
                    out.append(rows)
                }
                return out
            }
        } catch let e as PostgresTransactionError {
            if let s = e.closureError as? StorageError { throw s }
            if let p = e.closureError as? PSQLError { throw Self.describe(p) }
            throw StorageError("PostgreSQL transaction: \(e.closureError.map { "\($0)" } ?? "\(e)")")
        } catch let e as PSQLError {
            throw Self.describe(e)
        }
    }

    public func migrate(_ migrations: [Migration], upTo target: Int?) async throws -> [Int] {
        _ = try await query(SchemaTable.create, [])
        var applied: [Int] = []
        for m in migrations where m.version <= (target ?? Int.max) {
            do {
                let did: Bool = try await client.withTransaction(logger: logger) { connection in
                    // One migrator at a time across processes; the version is read under the lock.
                    try await connection.query(Self.query("SELECT pg_advisory_xact_lock(?)", [.integer(Self.migrationLock)]), logger: self.logger)
                        .collect()
                    let rows = try await Self.collect(try await connection.query(Self.query(SchemaTable.current, []), logger: self.logger))
                    let current = Int(rows.first?["version"].int ?? 0)
                    guard m.version > current else { return false }
                    guard m.version == current + 1 else {
                        throw StorageError("schema version \(current) cannot take migration \(m.version) (\(m.description)): a step is missing")
                    }
                    for sql in m.statements(.postgresql) {
                        try await connection.query(PostgresQuery(unsafeSQL: sql), logger: self.logger).collect()
                    }
                    try await connection.query(Self.query(SchemaTable.record, [.integer(Int64(m.version)), .text(m.description), .real(Date().timeIntervalSince1970)]),
                                               logger: self.logger).collect()
                    return true
                }
                if did { applied.append(m.version) }
            } catch let e as PostgresTransactionError {
                if let s = e.closureError as? StorageError { throw s }
                throw StorageError("PostgreSQL migration \(m.version): \(e.closureError.map { "\($0)" } ?? "\(e)")")
            }
        }
        return applied
    }

    public func schemaVersion() async throws -> Int {
        let exists = try await query("SELECT to_regclass('vmv_schema')::text AS t", [])
        guard exists.first?["t"].string != nil else { return 0 }
        return Int(try await query(SchemaTable.current, []).first?["version"].int ?? 0)
    }

    public func close() async {
        runner.cancel()
        _ = await runner.value
    }

    static func describe(_ e: PSQLError) -> StorageError {
        let message = e.serverInfo?[.message] ?? "\(e.code)"
        let sqlState = e.serverInfo?[.sqlState]
        let kind: StorageError.Kind = sqlState == "23505" ? .duplicate : .failure
        return StorageError("PostgreSQL: \(message)\(sqlState.map { " (SQLSTATE \($0))" } ?? "")", kind: kind)
    }
}
