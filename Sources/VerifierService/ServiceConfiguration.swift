import ConfigFile
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Everything `vmv-verifier serve` can be told, with its defaults (docs/fleet.md describes
/// each key; `vmv-verifier.example.toml` sets each one). Relative paths are taken relative to the
/// file's directory.
public struct ServiceConfiguration: Sendable, Equatable {
    // [service]
    /// This process's name in leases and the audit trail (default: hostname-pid).
    public var owner: String = Self.defaultOwner()

    // [listen]
    public var address = "127.0.0.1"
    public var port = 9443

    // [tls]: the management API and web page (mutual TLS, no plaintext listener).
    public var certificate = "certs/verifier-server.pem"
    public var privateKey = "certs/verifier-server.key"
    public var clientCA = "certs/ca.pem"

    // [hosts]: how this verifier talks to VMV hosts.
    public var hostsCA = "certs/ca.pem"
    public var hostsCertificate = "certs/verifier.pem"
    public var hostsKey = "certs/verifier.key"
    public var skipHostnameVerification = false

    // [storage]
    public enum Backend: String, Sendable, Equatable { case sqlite, postgresql }
    public var backend: Backend = .sqlite
    public var sqlitePath = "fleet.sqlite"
    public var postgresURL: String?

    // [schedule]
    public var intervalSeconds = 60
    public var jitterPercent = 10
    public var maxBackoffSeconds = 600
    public var timeoutSeconds = 20
    public var maxConcurrent = 64
    /// A lease outlives the attempt it covers: at least twice the timeout.
    public var leaseSeconds = 60
    /// A verdict older than this is shown `unreachable` ("no attestation since …"), whatever it was.
    public var staleAfterSeconds: Int?

    // [references]: reference sets by name → directory.
    public var references: [String: String] = ["default": "measurements"]

    // [trust]
    public var akCA: String?

    // [webhooks]
    public var webhookURLs: [String] = []
    public var webhookSecretFile: String?
    public var webhookMaxAttempts = 8
    public var webhookFirstRetrySeconds = 1
    public var webhookCA: String?

    // [retention]
    public var attestationsHours = 24

    // [log]
    public var logLevel = "info"

    public var source: String?

    public init() {}

    public static func defaultOwner() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count) == 0 ? String(cString: buffer) : "verifier"
        return "\(host)-\(getpid())"
    }

    /// The effective stale limit: three intervals plus the timeout, unless configured.
    public var staleAfter: Double {
        Double(staleAfterSeconds ?? (3 * intervalSeconds + timeoutSeconds))
    }
}

extension ServiceConfiguration {
    public static func load(file path: String) throws(ConfigurationError) -> ServiceConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(file: path, line: nil, reason: "cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(file: path, line: nil, reason: "the file is not UTF-8 text")
        }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        return try parse(text, file: path, relativeTo: directory.isEmpty ? "/" : directory)
    }

    public static func parse(_ text: String, file: String, relativeTo directory: String?) throws(ConfigurationError) -> ServiceConfiguration {
        var reader = try ConfigReader(parsing: text, file: file, directory: directory)
        let document = reader.document
        var c = ServiceConfiguration()
        c.source = file

        try reader.table("service") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (owner, line) = try t.string("owner") {
                guard !owner.isEmpty, owner.count <= 128 else { throw t.error(line, "owner: 1–128 characters") }
                c.owner = owner
            }
        }
        try reader.table("listen") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (a, _) = try t.string("address") { c.address = a }
            if let (p, _) = try t.integer("port", in: 0...65535) { c.port = p }
        }
        try reader.table("tls") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (p, l) = try t.string("certificate") { c.certificate = try t.nonEmptyPath(p, l, "certificate") } else { c.certificate = t.path(c.certificate) }
            if let (p, l) = try t.string("key") { c.privateKey = try t.nonEmptyPath(p, l, "key") } else { c.privateKey = t.path(c.privateKey) }
            if let (p, l) = try t.string("client_ca") { c.clientCA = try t.nonEmptyPath(p, l, "client_ca") } else { c.clientCA = t.path(c.clientCA) }
        }
        try reader.table("hosts") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (p, l) = try t.string("ca") { c.hostsCA = try t.nonEmptyPath(p, l, "ca") } else { c.hostsCA = t.path(c.hostsCA) }
            if let (p, l) = try t.string("certificate") { c.hostsCertificate = try t.nonEmptyPath(p, l, "certificate") } else { c.hostsCertificate = t.path(c.hostsCertificate) }
            if let (p, l) = try t.string("key") { c.hostsKey = try t.nonEmptyPath(p, l, "key") } else { c.hostsKey = t.path(c.hostsKey) }
            if let (b, _) = try t.boolean("insecure_skip_hostname_verification") { c.skipHostnameVerification = b }
        }
        try reader.table("storage") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (b, line) = try t.string("backend") {
                guard let backend = Backend(rawValue: b) else { throw t.error(line, "backend = \"\(b)\": sqlite or postgresql") }
                c.backend = backend
            }
            if let (p, l) = try t.string("path") { c.sqlitePath = try t.nonEmptyPath(p, l, "path") } else { c.sqlitePath = t.path(c.sqlitePath) }
            if let (u, line) = try t.string("url") {
                guard u.hasPrefix("postgresql://") || u.hasPrefix("postgres://") else {
                    throw t.error(line, "url: postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
                }
                c.postgresURL = u
            }
            if c.backend == .postgresql, c.postgresURL == nil {
                throw t.error(document.tableLines["storage"] ?? 1, "backend = \"postgresql\" needs url = \"postgresql://…\"")
            }
        }
        try reader.table("schedule") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, _) = try t.integer("interval_seconds", in: 1...86_400) { c.intervalSeconds = v }
            if let (v, _) = try t.integer("jitter_percent", in: 0...50) { c.jitterPercent = v }
            if let (v, _) = try t.integer("max_backoff_seconds", in: 1...86_400) { c.maxBackoffSeconds = v }
            if let (v, _) = try t.integer("timeout_seconds", in: 1...600) { c.timeoutSeconds = v }
            if let (v, _) = try t.integer("max_concurrent", in: 1...4096) { c.maxConcurrent = v }
            if let (v, _) = try t.integer("stale_after_seconds", in: 1...864_000) { c.staleAfterSeconds = v }
            let lease = try t.integer("lease_seconds", in: 2...3600)
            if let (v, _) = lease { c.leaseSeconds = v } else { c.leaseSeconds = max(c.leaseSeconds, 2 * c.timeoutSeconds + 5) }
            if c.leaseSeconds < 2 * c.timeoutSeconds {
                throw t.error(lease?.1 ?? 1, "lease_seconds = \(c.leaseSeconds) must be at least twice timeout_seconds (\(c.timeoutSeconds)): a lease must outlive the attempt it covers, or two verifiers could attest one host at once")
            }
        }
        try reader.table("references") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            var sets: [String: String] = [:]
            for e in document.tables["references"] ?? [] {
                guard let (p, l) = try t.string(e.key) else { continue }
                sets[e.key] = try t.nonEmptyPath(p, l, e.key)
            }
            c.references = sets.isEmpty ? ["default": t.path("measurements")] : sets
        }
        try reader.table("trust") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (p, l) = try t.string("ak_ca") { c.akCA = try t.nonEmptyPath(p, l, "ak_ca") }
        }
        try reader.table("webhooks") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (urls, line) = try t.strings("urls") {
                for u in urls where !(u.hasPrefix("https://") || u.hasPrefix("http://")) {
                    throw t.error(line, "urls: '\(u)' is not an http:// or https:// URL")
                }
                c.webhookURLs = urls
            }
            if let (p, l) = try t.string("secret_file") { c.webhookSecretFile = try t.nonEmptyPath(p, l, "secret_file") }
            if let (v, _) = try t.integer("max_attempts", in: 1...100) { c.webhookMaxAttempts = v }
            if let (v, _) = try t.integer("first_retry_seconds", in: 1...3600) { c.webhookFirstRetrySeconds = v }
            if let (p, l) = try t.string("ca") { c.webhookCA = try t.nonEmptyPath(p, l, "ca") }
            if !c.webhookURLs.isEmpty, c.webhookSecretFile == nil {
                throw t.error(document.tableLines["webhooks"] ?? 1, "urls without secret_file: webhooks are always signed")
            }
        }
        try reader.table("retention") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, _) = try t.integer("attestations_hours", in: 1...87_600) { c.attestationsHours = v }
        }
        try reader.table("log") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, line) = try t.string("level") {
                guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(v) else {
                    throw t.error(line, "level = \"\(v)\": trace, debug, info, notice, warning, error or critical")
                }
                c.logLevel = v
            }
        }
        try reader.finish()
        return c
    }

    /// The webhook secret: the file's bytes, trailing newline removed; at least 16 bytes.
    public func webhookSecret() throws(ConfigurationError) -> [UInt8] {
        guard let path = webhookSecretFile else { return [] }
        guard var bytes = FileManager.default.contents(atPath: path).map({ Array($0) }) else {
            throw ConfigurationError(file: path, line: nil, reason: "cannot read the webhook secret")
        }
        while bytes.last == 0x0a || bytes.last == 0x0d { bytes.removeLast() }
        guard bytes.count >= 16 else { throw ConfigurationError(file: path, line: nil, reason: "the webhook secret has \(bytes.count) bytes; use at least 16 (e.g. `openssl rand -hex 32`)") }
        return bytes
    }
}
