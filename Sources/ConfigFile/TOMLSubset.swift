// vmv's configuration language: a strict subset of TOML 1.0, parsed here with line numbers.
//
// Why not TOMLKit (0.6.0, the TOML package on our list): it wraps toml++ and reports source
// positions only for syntax errors; a parsed value carries no line. `vmv serve` must reject an
// unknown key or a bad value (a port of 70000, a TCTI it cannot parse) with the file, the line
// and the reason, so every value needs its line. The configuration needs little of TOML, so a
// small parser of our own keeps that promise, adds no C++ build, and refuses everything else
// loudly instead of half-supporting it.
//
// Supported: `# comments`, `[table]` and `[table.sub]` headers, `key = value` with bare or
// quoted keys, basic strings ("…" with \" \\ \n \t \r \uXXXX escapes), literal strings ('…'),
// integers (decimal with `_`, 0x hex, 0o octal, 0b binary, signed), booleans, and arrays of
// those (over several lines, trailing comma allowed). Not supported, and refused by name:
// floats, dates, inline tables, arrays of tables, dotted keys, multi-line strings.

/// A value with the line it was written on.
public struct TOMLValue: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case string(String)
        case integer(Int64)
        case boolean(Bool)
        case array([TOMLValue])
    }
    public let kind: Kind
    public let line: Int

    public var typeName: String {
        switch kind {
        case .string: "a string"
        case .integer: "an integer"
        case .boolean: "a boolean"
        case .array: "an array"
        }
    }
}

/// A parsed file: for each table (by dotted name; "" for the top level), its keys in file order.
public struct TOMLDocument: Sendable {
    public struct Entry: Sendable {
        public let key: String
        public let value: TOMLValue
        /// The line of the key (the value may go on over later lines).
        public let line: Int
    }
    /// Table name → entries, in order of appearance.
    public private(set) var tables: [String: [Entry]] = ["": []]
    /// Table name → the line of its header.
    public private(set) var tableLines: [String: Int] = [:]

    public init(parsing text: String) throws(TOMLError) {
        var parser = TOMLParser(Array(text.utf8))
        var current = ""
        while true {
            parser.skipBlankLinesAndComments()
            guard let c = parser.peek() else { break }
            if c == UInt8(ascii: "[") {
                let line = parser.line
                let name = try parser.tableHeader()
                guard tableLines[name] == nil else {
                    throw TOMLError(line: line, reason: "table [\(name)] is defined twice (first on line \(tableLines[name] ?? 0))")
                }
                tableLines[name] = line
                tables[name, default: []] = []
                current = name
            } else {
                let line = parser.line
                let key = try parser.key()
                parser.skipSpaces()
                if parser.peek() == UInt8(ascii: ".") {
                    throw TOMLError(line: line, reason: "dotted keys ('\(key).…') are not supported; use a [table]")
                }
                guard parser.consume(UInt8(ascii: "=")) else {
                    throw TOMLError(line: parser.line, reason: "expected '=' after key '\(key)'")
                }
                parser.skipSpaces()
                let value = try parser.value()
                try parser.endOfLine()
                if let first = tables[current]?.first(where: { $0.key == key }) {
                    throw TOMLError(line: line, reason: "key '\(key)' is set twice\(current.isEmpty ? "" : " in [\(current)]") (first on line \(first.line))")
                }
                tables[current, default: []].append(Entry(key: key, value: value, line: line))
            }
        }
    }
}

/// A syntax error: the line and what is wrong. The file name is added by the caller.
public struct TOMLError: Error, Sendable, Equatable, CustomStringConvertible {
    public let line: Int
    public let reason: String
    public var description: String { "line \(line): \(reason)" }
}

struct TOMLParser {
    private let bytes: [UInt8]
    private var position = 0
    private(set) var line = 1
    /// Arrays nest at most this deep: a hostile file cannot exhaust the stack.
    static let maxDepth = 16
    private var depth = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func advance() {
        if position < bytes.count {
            if bytes[position] == UInt8(ascii: "\n") { line += 1 }
            position += 1
        }
    }

    mutating func consume(_ c: UInt8) -> Bool {
        guard peek() == c else { return false }
        advance()
        return true
    }

    mutating func skipSpaces() {
        while let c = peek(), c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { advance() }
    }

    mutating func skipComment() {
        if peek() == UInt8(ascii: "#") {
            while let c = peek(), c != UInt8(ascii: "\n") { advance() }
        }
    }

    mutating func skipBlankLinesAndComments() {
        while true {
            skipSpaces()
            skipComment()
            if peek() == UInt8(ascii: "\r") { advance() }
            guard consume(UInt8(ascii: "\n")) else { return }
        }
    }

    /// Whitespace and comments over any number of lines (inside arrays).
    mutating func skipWhitespaceAndComments() {
        while let c = peek() {
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") {
                advance()
            } else if c == UInt8(ascii: "#") {
                skipComment()
            } else {
                return
            }
        }
    }

    mutating func endOfLine() throws(TOMLError) {
        skipSpaces()
        skipComment()
        if peek() == UInt8(ascii: "\r") { advance() }
        guard peek() == nil || consume(UInt8(ascii: "\n")) else {
            throw TOMLError(line: line, reason: "unexpected \(describe(peek())) after the value (one key = value per line)")
        }
    }

    mutating func tableHeader() throws(TOMLError) -> String {
        advance()  // [
        if peek() == UInt8(ascii: "[") {
            throw TOMLError(line: line, reason: "arrays of tables ([[…]]) are not supported in vmv's configuration")
        }
        skipSpaces()
        var parts = [try key()]
        skipSpaces()
        while consume(UInt8(ascii: ".")) {
            skipSpaces()
            parts.append(try key())
            skipSpaces()
        }
        guard consume(UInt8(ascii: "]")) else {
            throw TOMLError(line: line, reason: "expected ']' to close the table header, found \(describe(peek()))")
        }
        try endOfLine()
        return parts.joined(separator: ".")
    }

    static func isBareKeyCharacter(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    mutating func key() throws(TOMLError) -> String {
        if peek() == UInt8(ascii: "\"") { return try basicString() }
        if peek() == UInt8(ascii: "'") { return try literalString() }
        let start = position
        while let c = peek(), Self.isBareKeyCharacter(c) { advance() }
        guard position > start else {
            throw TOMLError(line: line, reason: "expected a key, found \(describe(peek()))")
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    mutating func value() throws(TOMLError) -> TOMLValue {
        let line = self.line
        guard let c = peek() else { throw TOMLError(line: line, reason: "expected a value, found the end of the file") }
        switch c {
        case UInt8(ascii: "\""):
            if bytes[position...].starts(with: Array("\"\"\"".utf8)) {
                throw TOMLError(line: line, reason: "multi-line strings (\"\"\") are not supported in vmv's configuration")
            }
            return TOMLValue(kind: .string(try basicString()), line: line)
        case UInt8(ascii: "'"):
            if bytes[position...].starts(with: Array("'''".utf8)) {
                throw TOMLError(line: line, reason: "multi-line strings (''') are not supported in vmv's configuration")
            }
            return TOMLValue(kind: .string(try literalString()), line: line)
        case UInt8(ascii: "["):
            return TOMLValue(kind: .array(try array()), line: line)
        case UInt8(ascii: "{"):
            throw TOMLError(line: line, reason: "inline tables ({…}) are not supported; use a [table]")
        default:
            let start = position
            while let c = peek(), Self.isBareKeyCharacter(c) || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || c == UInt8(ascii: ":") {
                advance()
            }
            let word = String(decoding: bytes[start..<position], as: UTF8.self)
            if word == "true" { return TOMLValue(kind: .boolean(true), line: line) }
            if word == "false" { return TOMLValue(kind: .boolean(false), line: line) }
            if word.isEmpty { throw TOMLError(line: line, reason: "expected a value, found \(describe(c))") }
            if let n = Self.integer(word) { return TOMLValue(kind: .integer(n), line: line) }
            if word.contains(".") || word.contains("e") || word == "inf" || word == "nan" || word.contains(":") {
                throw TOMLError(line: line, reason: "'\(word)' is a float or a date, which vmv's configuration does not use")
            }
            throw TOMLError(line: line, reason: "'\(word)' is not a value (strings need quotes)")
        }
    }

    static func integer(_ word: String) -> Int64? {
        var text = Substring(word)
        var negative = false
        if text.first == "+" || text.first == "-" {
            negative = text.first == "-"
            text = text.dropFirst()
        }
        var radix = 10
        if text.hasPrefix("0x") { radix = 16 } else if text.hasPrefix("0o") { radix = 8 } else if text.hasPrefix("0b") { radix = 2 }
        if radix != 10 {
            guard !negative, word.first != "+" else { return nil }
            text = text.dropFirst(2)
        } else if text.count > 1, text.first == "0" {
            return nil  // TOML forbids leading zeros
        }
        // Underscores only between digits.
        guard !text.isEmpty, text.first != "_", text.last != "_", !text.contains("__") else { return nil }
        let digits = text.filter { $0 != "_" }
        guard let magnitude = UInt64(digits, radix: radix) else { return nil }
        if negative {
            return magnitude <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- magnitude) : nil
        }
        return magnitude <= UInt64(Int64.max) ? Int64(magnitude) : nil
    }

    mutating func array() throws(TOMLError) -> [TOMLValue] {
        let open = line
        advance()  // [
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else {
            throw TOMLError(line: line, reason: "arrays nested deeper than \(Self.maxDepth)")
        }
        var items: [TOMLValue] = []
        while true {
            skipWhitespaceAndComments()
            guard let c = peek() else {
                throw TOMLError(line: open, reason: "the array opened here is never closed")
            }
            if c == UInt8(ascii: "]") {
                advance()
                return items
            }
            items.append(try value())
            skipWhitespaceAndComments()
            if consume(UInt8(ascii: ",")) { continue }
            guard consume(UInt8(ascii: "]")) else {
                throw TOMLError(line: line, reason: "expected ',' or ']' in the array, found \(describe(peek()))")
            }
            return items
        }
    }

    mutating func literalString() throws(TOMLError) -> String {
        let open = line
        advance()  // '
        let start = position
        while let c = peek(), c != UInt8(ascii: "'") {
            guard c != UInt8(ascii: "\n") else {
                throw TOMLError(line: open, reason: "the string is not closed on its line")
            }
            advance()
        }
        guard peek() != nil else { throw TOMLError(line: open, reason: "the string is not closed on its line") }
        let text = bytes[start..<position]
        advance()
        return try utf8(text, open)
    }

    mutating func basicString() throws(TOMLError) -> String {
        let open = line
        advance()  // "
        var out: [UInt8] = []
        while true {
            guard let c = peek(), c != UInt8(ascii: "\n") else {
                throw TOMLError(line: open, reason: "the string is not closed on its line")
            }
            advance()
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 && c != UInt8(ascii: "\t") || c == 0x7F {
                throw TOMLError(line: line, reason: "control character 0x\(String(c, radix: 16)) in a string (use an escape)")
            }
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                continue
            }
            guard let e = peek() else { throw TOMLError(line: open, reason: "the string is not closed on its line") }
            advance()
            switch e {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "n"): out.append(UInt8(ascii: "\n"))
            case UInt8(ascii: "t"): out.append(UInt8(ascii: "\t"))
            case UInt8(ascii: "r"): out.append(UInt8(ascii: "\r"))
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"), UInt8(ascii: "U"):
                let count = e == UInt8(ascii: "u") ? 4 : 8
                var scalar: UInt32 = 0
                for _ in 0..<count {
                    guard let h = peek(), let v = Self.hexValue(h) else {
                        throw TOMLError(line: line, reason: "\\\(Character(Unicode.Scalar(e))) needs \(count) hex digits")
                    }
                    scalar = scalar << 4 | UInt32(v)
                    advance()
                }
                guard let u = Unicode.Scalar(scalar) else {
                    throw TOMLError(line: line, reason: "\\u\(String(scalar, radix: 16)) is not a Unicode scalar value")
                }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default:
                throw TOMLError(line: line, reason: "unknown escape \\\(describe(e)) in a string")
            }
        }
        return try utf8(out[...], open)
    }

    private func utf8(_ bytes: ArraySlice<UInt8>, _ line: Int) throws(TOMLError) -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw TOMLError(line: line, reason: "the string is not valid UTF-8")
        }
        return s
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    func describe(_ c: UInt8?) -> String {
        guard let c else { return "the end of the file" }
        if c == UInt8(ascii: "\n") { return "the end of the line" }
        if c >= 0x21 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        return "byte 0x\(String(c, radix: 16))"
    }
}
