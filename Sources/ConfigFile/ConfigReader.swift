// Typed reading of a TOMLDocument: every value with its line, unknown keys and tables refused.
// Shared by `vmv serve` and `vmv-verifier serve` (pure Swift, so the verifier stays free of
// libtss2 and libxen).

/// A configuration that cannot be used: where, and why. The commands print it and exit 2.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int?
    public let reason: String

    public init(file: String, line: Int?, reason: String) {
        self.file = file
        self.line = line
        self.reason = reason
    }

    public var description: String {
        line.map { "\(file):\($0): \(reason)" } ?? "\(file): \(reason)"
    }
}

/// Reads the tables of a document one by one; `finish()` refuses what no table read.
public struct ConfigReader {
    public let document: TOMLDocument
    public let file: String
    public let directory: String?
    private var known: Set<String> = []

    public init(document: TOMLDocument, file: String, directory: String?) {
        self.document = document
        self.file = file
        self.directory = directory
    }

    /// Parses `text` (named `file` in errors; relative paths anchored at `directory`).
    public init(parsing text: String, file: String, directory: String?) throws(ConfigurationError) {
        do {
            self.init(document: try TOMLDocument(parsing: text), file: file, directory: directory)
        } catch {
            throw ConfigurationError(file: file, line: error.line, reason: error.reason)
        }
    }

    public struct Table {
        public let name: String
        let entries: [String: TOMLDocument.Entry]
        let file: String
        let directory: String?
        var used: Set<String> = []

        public func error(_ line: Int, _ reason: String) -> ConfigurationError {
            ConfigurationError(file: file, line: line, reason: "[\(name)] \(reason)")
        }

        public mutating func entry(_ key: String) -> TOMLDocument.Entry? {
            used.insert(key)
            return entries[key]
        }

        public mutating func string(_ key: String) throws(ConfigurationError) -> (String, Int)? {
            guard let e = entry(key) else { return nil }
            guard case .string(let s) = e.value.kind else { throw error(e.line, "\(key) must be a string, not \(e.value.typeName)") }
            return (s, e.line)
        }

        public mutating func integer(_ key: String) throws(ConfigurationError) -> (Int, Int)? {
            guard let e = entry(key) else { return nil }
            guard case .integer(let n) = e.value.kind else { throw error(e.line, "\(key) must be an integer, not \(e.value.typeName)") }
            guard let v = Int(exactly: n) else { throw error(e.line, "\(key) = \(n) is too large") }
            return (v, e.line)
        }

        public mutating func integer(_ key: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> (Int, Int)? {
            guard let (v, line) = try integer(key) else { return nil }
            guard range.contains(v) else {
                throw error(line, "\(key) = \(v): outside \(range.lowerBound)–\(range.upperBound)")
            }
            return (v, line)
        }

        public mutating func boolean(_ key: String) throws(ConfigurationError) -> (Bool, Int)? {
            guard let e = entry(key) else { return nil }
            guard case .boolean(let b) = e.value.kind else { throw error(e.line, "\(key) must be true or false, not \(e.value.typeName)") }
            return (b, e.line)
        }

        public mutating func strings(_ key: String) throws(ConfigurationError) -> ([String], Int)? {
            guard let e = entry(key) else { return nil }
            guard case .array(let items) = e.value.kind else { throw error(e.line, "\(key) must be an array of strings, not \(e.value.typeName)") }
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item.kind else { throw error(item.line, "\(key): every item must be a string, not \(item.typeName)") }
                out.append(s)
            }
            return (out, e.line)
        }

        /// `p` relative to the configuration file's directory (absolute paths unchanged).
        public func path(_ p: String) -> String {
            guard !p.hasPrefix("/"), let directory, !directory.isEmpty else { return p }
            return directory == "." ? p : directory + "/" + p
        }

        public func nonEmptyPath(_ p: String, _ line: Int, _ key: String) throws(ConfigurationError) -> String {
            guard !p.isEmpty else { throw error(line, "\(key) is empty") }
            return path(p)
        }
    }

    /// Reads table `name` (absent: an empty table, so defaults apply); a key `body` did not ask
    /// for is refused with its line and the known keys.
    public mutating func table(_ name: String, _ body: (inout Table) throws(ConfigurationError) -> Void) throws(ConfigurationError) {
        known.insert(name)
        var entries: [String: TOMLDocument.Entry] = [:]
        for e in document.tables[name] ?? [] { entries[e.key] = e }
        var table = Table(name: name, entries: entries, file: file, directory: directory)
        try body(&table)
        if let unknown = (document.tables[name] ?? []).first(where: { !table.used.contains($0.key) }) {
            let keys = table.used.sorted().joined(separator: ", ")
            throw table.error(unknown.line, "unknown key '\(unknown.key)' (known keys: \(keys))")
        }
    }

    /// Refuses top-level keys and tables nobody read.
    public func finish() throws(ConfigurationError) {
        if let top = document.tables[""]?.first {
            throw ConfigurationError(file: file, line: top.line,
                                     reason: "key '\(top.key)' is outside any table (put it under one of [\(known.sorted().joined(separator: "], ["))])")
        }
        let unknown = document.tableLines.filter { !known.contains($0.key) }.sorted { $0.value < $1.value }
        if let (name, line) = unknown.first {
            throw ConfigurationError(file: file, line: line,
                                     reason: "unknown table [\(name)] (known tables: [\(known.sorted().joined(separator: "], ["))])")
        }
    }
}
