import FoundationEssentials
import TPMWire

#if canImport(Glibc)
import Glibc
#endif

/// What a verifier remembers about one host after a verdict: the TPM clock it last saw (so a
/// quote from a TPM state restored from a copy is caught), and where its log replay stands (so
/// the next attestation replays only new records and still appraises the whole epoch).
public struct HostState: Codable, Hashable, Sendable {
    public static let schema = "vmv-verifier-state/v1"

    public var schema: String
    /// "host:port" as attested.
    public var host: String
    /// The AK's Name (hex) the quotes were signed with.
    public var akName: String
    /// TPMS_CLOCK_INFO of the last verified quote.
    public var clock: UInt64
    public var resetCount: UInt32
    public var restartCount: UInt32
    /// The log position: records before `nextSeq` of `epoch` are replayed and appraised.
    public var epoch: UInt32
    public var nextSeq: UInt64
    /// The log's PCR and its value per bank (name → hex) after record `nextSeq - 1`.
    public var pcr: Int
    public var pcrs: [String: String]
    /// What the epoch's records said, for appraisal of the whole epoch.
    public var facts: EpochFacts
    /// When the verdict was given (ISO 8601) and what it was for the platform.
    public var verdictAt: String
    public var platform: TrustLevel

    public init(host: String, akName: String, clock: UInt64, resetCount: UInt32, restartCount: UInt32, epoch: UInt32,
                nextSeq: UInt64, pcr: Int, pcrs: [String: String], facts: EpochFacts, verdictAt: String, platform: TrustLevel) {
        schema = Self.schema
        self.host = host
        self.akName = akName
        self.clock = clock
        self.resetCount = resetCount
        self.restartCount = restartCount
        self.epoch = epoch
        self.nextSeq = nextSeq
        self.pcr = pcr
        self.pcrs = pcrs
        self.facts = facts
        self.verdictAt = verdictAt
        self.platform = platform
    }

    /// The PCR values as a chain start, or nil when a bank's value is not hex of its size.
    var pcrValues: [TPMAlgorithm: [UInt8]]? {
        var out: [TPMAlgorithm: [UInt8]] = [:]
        for (name, hex) in pcrs {
            guard let alg = TPMAlgorithm(name: name), let bytes = try? Hex.decode(hex), bytes.count == alg.digestSize else { return nil }
            out[alg] = bytes
        }
        return out
    }
}

/// Where per-host state lives. The CLI keeps one JSON file per host; a verifier service keeps
/// it in a database behind the same protocol.
public protocol HostStateStore: Sendable {
    /// The state stored for `host`, nil when there is none.
    func load(host: String) async throws -> HostState?
    /// Replaces the state of `state.host`, atomically: a reader sees the old state or the new one.
    func save(_ state: HostState) async throws
}

/// One JSON file per host in a directory: `<host>_<port>.json`, written to a temporary file,
/// fsynced and renamed into place (and the directory fsynced), so a crash never leaves half a state.
public struct JSONFileHostStateStore: HostStateStore {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public func path(host: String) -> String {
        let safe = String(host.map { c -> Character in c.isLetter || c.isNumber || c == "." || c == "-" ? c : "_" })
        return directory + "/" + safe + ".json"
    }

    public func load(host: String) async throws -> HostState? {
        let path = path(host: host)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EvidenceError("\(path): cannot read the stored state")
        }
        let state: HostState
        do { state = try JSONDecoder().decode(HostState.self, from: data) } catch {
            throw EvidenceError("\(path): not a verifier state file (\(ReferenceDocument.describe(error))); move it away to start over")
        }
        guard state.schema == HostState.schema, state.host == host else {
            throw EvidenceError("\(path): state of \(state.host) in schema \(state.schema), expected \(host) in \(HostState.schema)")
        }
        return state
    }

    public func save(_ state: HostState) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = Array(try encoder.encode(state)) + [0x0a]
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try AtomicFile.write(path(host: state.host), bytes, mode: 0o644)
    }
}

/// Writing a file so that readers see the old content or the new, never a mix: a temporary
/// file in the same directory, fsync, rename, fsync of the directory.
public enum AtomicFile {
    public static func write(_ path: String, _ bytes: [UInt8], mode: mode_t) throws(EvidenceError) {
        let temporary = path + ".tmp-\(getpid())"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw EvidenceError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = fchmod(fd, mode) == 0
        var offset = 0
        while ok, offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { ok = false } else { offset += n }
        }
        ok = ok && fsync(fd) == 0
        let reason = String(cString: strerror(errno))
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw EvidenceError("cannot write \(path): \(reason)")
        }
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) } ?? "."
        let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }
}
