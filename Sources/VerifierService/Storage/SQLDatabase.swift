/// A value bound to or read from SQL: the four types the fleet schema uses.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)

    public var int: Int64? {
        switch self {
        case .integer(let v): v
        case .real(let v): Int64(exactly: v.rounded(.down))
        default: nil
        }
    }

    public var double: Double? {
        switch self {
        case .real(let v): v
        case .integer(let v): Double(v)
        default: nil
        }
    }

    public var string: String? {
        if case .text(let s) = self { return s }
        return nil
    }
}

extension SQLValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .real(value) }
    public init(nilLiteral: ()) { self = .null }

    public init(_ s: String?) { self = s.map { .text($0) } ?? .null }
    public init(_ d: Double?) { self = d.map { .real($0) } ?? .null }
    public init(_ i: Int?) { self = i.map { .integer(Int64($0)) } ?? .null }
}

/// One result row, by column name.
public struct SQLRow: Sendable {
    public var columns: [String: SQLValue]

    public init(_ columns: [String: SQLValue]) { self.columns = columns }

    public subscript(_ name: String) -> SQLValue { columns[name] ?? .null }

    func text(_ name: String) throws(StorageError) -> String {
        guard let s = self[name].string else { throw StorageError("column \(name): expected text, found \(self[name])") }
        return s
    }

    func real(_ name: String) throws(StorageError) -> Double {
        guard let d = self[name].double else { throw StorageError("column \(name): expected a number, found \(self[name])") }
        return d
    }

    func integer(_ name: String) throws(StorageError) -> Int64 {
        guard let i = self[name].int else { throw StorageError("column \(name): expected an integer, found \(self[name])") }
        return i
    }
}

/// A statement of a transaction. `expectRows`: the statement must change exactly that many
/// rows, or the whole transaction is rolled back with `StorageError.conflict` (how a verifier
/// that lost its lease finds out, without a read inside the transaction).
public struct SQLStatement: Sendable {
    public var sql: String
    public var binds: [SQLValue]
    public var expectRows: Int?

    public init(_ sql: String, _ binds: [SQLValue] = [], expectRows: Int? = nil) {
        self.sql = sql
        self.binds = binds
        self.expectRows = expectRows
    }
}

public enum SQLDialect: String, Sendable {
    case sqlite, postgresql
}

/// What the fleet store needs from a database: single statements (autocommit), and batches of
/// statements run as one transaction. SQL is written once with `?` placeholders; a backend
/// turns them into its own (`$1`, `$2`… for PostgreSQL). Where the dialects differ (the lock of
/// a claim, column types of the schema) the store asks `dialect`.
public protocol SQLDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// One statement in its own transaction; the rows it returns (a SELECT, or RETURNING).
    func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow]
    /// Statements in one transaction: all or nothing. Returns each statement's rows (RETURNING).
    @discardableResult
    func transaction(_ statements: [SQLStatement]) async throws -> [[SQLRow]]
    /// Applies the migrations above the current schema version, each in its own transaction,
    /// holding a lock that keeps two processes from migrating at once. Returns the versions applied.
    func migrate(_ migrations: [Migration], upTo target: Int?) async throws -> [Int]
    /// The highest migration version applied (0: an empty database).
    func schemaVersion() async throws -> Int
    func close() async
}

/// A failure of storage: a message that names the table or column, or a lost race.
public struct StorageError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case failure, conflict, notFound, duplicate }
    public let kind: Kind
    public let description: String

    public init(_ description: String, kind: Kind = .failure) {
        self.kind = kind
        self.description = description
    }

    public static func conflict(_ d: String) -> StorageError { StorageError(d, kind: .conflict) }
}

extension String {
    /// `?` placeholders (outside quotes) as `$1`, `$2`, …
    func numberedPlaceholders() -> String {
        var out = ""
        var n = 0
        var inQuote = false
        for c in self {
            if c == "'" { inQuote.toggle() }
            if c == "?" && !inQuote {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        return out
    }
}
