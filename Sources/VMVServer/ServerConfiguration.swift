import ConfigFile
import FoundationEssentials
import TPM
import TPMWire
import Verifier
import VMV

/// Everything `vmv serve` can be told, with its defaults. docs/configuration.md describes every
/// option; `vmv.example.toml` sets each one to its default.
///
/// Relative paths in a file are taken relative to the file's directory, so a configuration and
/// its certificates can move together.
public struct ServerConfiguration: Sendable, Equatable {
    // [tpm]
    /// Where the TPM is: `simulator` (a private swtpm, the default), `simulator:DIR`,
    /// `device:/dev/tpmrm0`, `swtpm:host=…,port=…`, or any tpm2-tss TCTI.
    public var tcti: TCTIConfiguration = .simulator(stateDirectory: nil)
    /// The PCR the VMV log is extended into.
    public var pcr: Int = 15
    /// The persistent handle of the AK.
    public var akHandle: UInt32 = 0x8101_0003

    // [state]
    /// The log store and the VMV's own state.
    public var stateDirectory: String = ".vmv/state"

    // [listen]
    public var address: String = "127.0.0.1"
    public var port: Int = 8443

    // [tls]
    public var certificate: String = "certs/server.pem"
    public var privateKey: String = "certs/server.key"
    public var clientCA: String = "certs/ca.pem"

    // [quote]
    public var batching: Bool = true
    /// How long the first request of a batch waits for others.
    public var batchWindowMilliseconds: Int = 10
    /// A batch is quoted at once when it reaches this many requests.
    public var maxBatch: Int = 256

    // [limits]
    public var maxBodyBytes: Int = 64 * 1024
    /// Sustained requests per second per client certificate (token bucket), and its burst.
    public var ratePerSecond: Int = 50
    public var rateBurst: Int = 100
    /// A request must arrive whole within this time of its first byte.
    public var requestTimeoutSeconds: Int = 10
    /// A connection with no request for this long (including a TLS handshake that never ends) is closed.
    public var idleTimeoutSeconds: Int = 30
    /// Connections served at once; more wait in the listen backlog.
    public var maxConnections: Int = 1024

    // [measure]
    /// Seconds between measurements of every guest; 0 measures at start and on new domains only.
    public var intervalSeconds: Int = 60
    /// A guest's kernel regions are first measured this long after the domain started: Linux
    /// patches its own text while it boots, and a root taken then is never seen again.
    public var settleSeconds: Int = 30
    /// `auto` measures guests when Xen is there and says so in one line when it is not;
    /// `on` refuses to start without Xen; `off` never looks.
    public var xen: XenMode = .auto

    // [measurement_log]: the log store and the engine (VMVConfiguration's settings)
    /// Bytes per log segment before a new one starts.
    public var segmentSize: Int = 4 << 20
    /// Ended epochs kept, and (0: no limit) the days an ended epoch is kept.
    public var retainEpochs: Int = 16
    public var retainDays: Int = 0
    /// The most measurements one group commit (one write and fsync) takes.
    public var groupCommitMax: Int = 256
    /// Read the PCR after every commit, so that a foreign extend closes the epoch at once.
    public var checkAfterExtend: Bool = true

    // [logging]
    public var logLevel: String = "info"

    public enum XenMode: String, Sendable, Equatable, CaseIterable {
        case auto, on, off
    }

    public init() {}

    /// The file it came from, if any.
    public var source: String?
}

extension ServerConfiguration {
    /// Reads and checks a configuration file.
    public static func load(file path: String) throws(ConfigurationError) -> ServerConfiguration {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError(file: path, line: nil, reason: "cannot read the file: \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(file: path, line: nil, reason: "the file is not UTF-8 text")
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parse(text, file: path, relativeTo: directory)
    }

    /// Parses configuration text; `file` names it in errors, `directory` anchors relative paths.
    public static func parse(_ text: String, file: String, relativeTo directory: String?) throws(ConfigurationError) -> ServerConfiguration {
        var reader = try ConfigReader(parsing: text, file: file, directory: directory)
        var c = ServerConfiguration()
        c.source = file

        try reader.table("tpm") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (text, line) = try t.string("tcti") {
                do throws(TPMError) {
                    var tcti = try TCTIConfiguration(parsing: text)
                    if case .simulator(let dir?) = tcti { tcti = .simulator(stateDirectory: t.path(dir)) }
                    c.tcti = tcti
                } catch {
                    throw t.error(line, "tcti: \(error.reason)")
                }
            }
            if let (pcr, line) = try t.integer("pcr") {
                // PCRs 0–7 are the firmware's, 16 is the debug PCR (resettable), 17–22 the
                // dynamic launch's (reset by it), 23 the application PCR (resettable).
                guard (8...15).contains(pcr) else {
                    throw t.error(line, "pcr = \(pcr): the VMV log needs a static, non-resettable PCR nothing else extends (8–15)")
                }
                c.pcr = pcr
            }
            if let (handle, line) = try t.integer("ak_handle") {
                guard (0x8100_0000...0x817F_FFFF).contains(handle) else {
                    throw t.error(line, "ak_handle = 0x\(String(handle, radix: 16)): not a persistent handle in the owner's range 0x81000000–0x817fffff")
                }
                c.akHandle = UInt32(handle)
            }
        }
        try reader.table("state") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (dir, line) = try t.string("directory") {
                guard !dir.isEmpty else { throw t.error(line, "directory is empty") }
                c.stateDirectory = t.path(dir)
            }
        }
        try reader.table("listen") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (address, line) = try t.string("address") {
                guard !address.isEmpty, !address.contains(" ") else {
                    throw t.error(line, "address '\(address)' is not a host name or IP address")
                }
                c.address = address
            }
            if let (port, line) = try t.integer("port") {
                guard (0...65535).contains(port) else { throw t.error(line, "port = \(port): outside 0–65535 (0: any free port)") }
                c.port = port
            }
        }
        try reader.table("tls") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, line) = try t.string("certificate") { c.certificate = try t.nonEmptyPath(v, line, "certificate") }
            if let (v, line) = try t.string("key") { c.privateKey = try t.nonEmptyPath(v, line, "key") }
            if let (v, line) = try t.string("client_ca") { c.clientCA = try t.nonEmptyPath(v, line, "client_ca") }
        }
        try reader.table("quote") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, _) = try t.boolean("batching") { c.batching = v }
            if let (v, _) = try t.integer("batch_window_ms", in: 0...1000) { c.batchWindowMilliseconds = v }
            if let (v, _) = try t.integer("max_batch", in: 1...QuoteBinding.maxLeafCount) { c.maxBatch = v }
        }
        try reader.table("limits") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, _) = try t.integer("max_body_bytes", in: 1024...(16 << 20)) { c.maxBodyBytes = v }
            if let (v, _) = try t.integer("rate_per_second", in: 1...1_000_000) { c.ratePerSecond = v }
            if let (v, _) = try t.integer("rate_burst", in: 1...1_000_000) { c.rateBurst = v }
            if let (v, _) = try t.integer("request_timeout_seconds", in: 1...3600) { c.requestTimeoutSeconds = v }
            if let (v, _) = try t.integer("idle_timeout_seconds", in: 1...86400) { c.idleTimeoutSeconds = v }
            if let (v, _) = try t.integer("max_connections", in: 1...1_000_000) { c.maxConnections = v }
        }
        try reader.table("measure") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, _) = try t.integer("interval_seconds", in: 0...86400) { c.intervalSeconds = v }
            if let (v, _) = try t.integer("settle_seconds", in: 0...3600) { c.settleSeconds = v }
            if let (v, line) = try t.string("xen") {
                guard let mode = XenMode(rawValue: v) else {
                    throw t.error(line, "xen = \"\(v)\": expected one of \(XenMode.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))")
                }
                c.xen = mode
            }
        }
        try reader.table("measurement_log") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, _) = try t.integer("segment_size", in: 4096...(1 << 30)) { c.segmentSize = v }
            if let (v, _) = try t.integer("retain_epochs", in: 0...1_000_000) { c.retainEpochs = v }
            if let (v, _) = try t.integer("retain_days", in: 0...36_500) { c.retainDays = v }
            if let (v, _) = try t.integer("max_batch", in: 1...65_536) { c.groupCommitMax = v }
            if let (v, _) = try t.boolean("check_after_extend") { c.checkAfterExtend = v }
        }
        try reader.table("logging") { (t: inout ConfigReader.Table) throws(ConfigurationError) in
            if let (v, line) = try t.string("level") {
                let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
                guard levels.contains(v) else {
                    throw t.error(line, "level = \"\(v)\": expected one of \(levels.joined(separator: ", "))")
                }
                c.logLevel = v
            }
        }
        try reader.finish()
        if c.rateBurst < 1 { c.rateBurst = 1 }
        return c
    }
}

extension ServerConfiguration {
    /// The measurement engine's part: what `MeasurementEngine.open` and the boot measurement
    /// of the configuration (without a file: its defaults as text) take.
    public var measurementLog: VMVConfiguration {
        var v = VMVConfiguration()
        v.pcr = pcr
        v.segmentSize = segmentSize
        v.retainEpochs = retainEpochs
        v.retainDays = retainDays
        v.maxBatch = groupCommitMax
        v.checkAfterExtend = checkAfterExtend
        return v
    }

    /// The effective settings, in the configuration's own syntax (`vmv serve --check`).
    public var summary: String {
        func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        return """
            # effective configuration\(source.map { " of \($0)" } ?? "")
            [tpm]
            tcti = \(q(tcti.description))
            pcr = \(pcr)
            ak_handle = 0x\(String(akHandle, radix: 16))

            [state]
            directory = \(q(stateDirectory))

            [listen]
            address = \(q(address))
            port = \(port)

            [tls]
            certificate = \(q(certificate))
            key = \(q(privateKey))
            client_ca = \(q(clientCA))

            [quote]
            batching = \(batching)
            batch_window_ms = \(batchWindowMilliseconds)
            max_batch = \(maxBatch)

            [limits]
            max_body_bytes = \(maxBodyBytes)
            rate_per_second = \(ratePerSecond)
            rate_burst = \(rateBurst)
            request_timeout_seconds = \(requestTimeoutSeconds)
            idle_timeout_seconds = \(idleTimeoutSeconds)
            max_connections = \(maxConnections)

            [measure]
            interval_seconds = \(intervalSeconds)
            settle_seconds = \(settleSeconds)
            xen = \(q(xen.rawValue))

            [measurement_log]
            segment_size = \(segmentSize)
            retain_epochs = \(retainEpochs)
            retain_days = \(retainDays)
            max_batch = \(groupCommitMax)
            check_after_extend = \(checkAfterExtend)

            [logging]
            level = \(q(logLevel))
            """
    }
}
