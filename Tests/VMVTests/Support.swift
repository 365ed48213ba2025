import Crypto
import Foundation
import TestSupport
import TPM
import TPMWire
@testable import VMV

/// A state directory for one test, removed when the value goes away.
final class StateDirectory: @unchecked Sendable {
    let path: String

    init() throws {
        path = try TemporaryDirectory.make(prefix: "vmv-state").path
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var layout: LogLayout { LogLayout(stateDirectory: path) }
}

enum Fixture {
    static let banks: [TPMAlgorithm] = [.sha1, .sha256]
    static func clock(reset: UInt32 = 3, restart: UInt32 = 0) -> TPMSClockInfo {
        TPMSClockInfo(clock: 1000, resetCount: reset, restartCount: restart, safe: true)
    }

    static let guest: [UInt8] = Array(SHA256.hash(data: Array("test guest".utf8)).prefix(16))

    static func measurement(_ n: Int) -> VMV.Measurement {
        .memoryRegion(domain: .init(uuid: guest, id: 7, name: "guest-\(n % 3)"), subject: "kernel.text",
                      virtualStart: 0xffff_ffff_8100_0000 + UInt64(n) * 4096, pageSize: 4096, pageCount: 16,
                      merkleRoot: Array(SHA256.hash(data: Array("root \(n)".utf8))), attributes: [("n", String(n))])
    }

    /// Starts an epoch in `store` without a TPM (the store alone does not need one).
    static func startEpoch(_ store: LogStore, pcr: Int = 15, clock: TPMSClockInfo = clock(), startPCRs: [TPMAlgorithm: [UInt8]]? = nil) throws {
        try store.startEpoch(.init(pcr: pcr, banks: banks, clock: clock, reason: "test", startPCRs: startPCRs))
    }

    /// The next `count` records of the store's open epoch (an epochStart first when it is
    /// empty), as the engine would build them.
    static func records(_ store: LogStore, _ count: Int) throws -> (records: [VMVEventRecord], events: [TCGEvent]) {
        guard let open = store.openEpoch else { throw HarnessError("no open epoch") }
        let writer = try TCGEventLogWriter(header: open.header)
        var records: [VMVEventRecord] = [], events: [TCGEvent] = []
        for i in 0..<count {
            let seq = open.count + UInt64(i)
            let m = open.manifest
            let record = seq == 0
                ? VMVEventRecord(seq: 0, epoch: m.epoch, pcr: UInt32(m.pcr), time: 1, kind: .epochStart,
                                 epochStart: .init(resetCount: m.resetCount, restartCount: m.restartCount, reason: "test"))
                : measurement(Int(seq)).record(seq: seq, epoch: m.epoch, pcr: m.pcr, time: 1_764_280_000_000 + seq)
            records.append(record)
            events.append(try writer.measurement(pcr: m.pcr, type: .eventTag, data: record.wireBytes))
        }
        return (records, events)
    }

    /// Appends the next `count` records and publishes them as committed, as the engine does
    /// after their extends (there is no TPM here).
    @discardableResult
    static func append(_ store: LogStore, _ count: Int) throws -> [TCGEvent] {
        let (records, events) = try records(store, count)
        try store.append(events, records: records)
        store.publish(committed: store.openEpoch?.count ?? 0)
        return events
    }

    /// Reads PCR `pcr` in `banks` with a TPM actor opened for the occasion and closed again
    /// (a swtpm serves one connection at a time).
    static func readPCR(_ tcti: TCTIConfiguration, pcr: Int = 15, banks: [TPMAlgorithm] = banks) async throws -> [TPMAlgorithm: [UInt8]] {
        let tpm = try await TPM.open(tcti)
        let values = try await tpm.readPCRs(PCRSelection(banks: banks.map { .init(hash: $0, pcrs: [pcr]) }))
        await tpm.close()
        return Dictionary(uniqueKeysWithValues: banks.compactMap { b in values[b, pcr].map { (b, $0) } })
    }

    /// `tpm2_pcrread sha1:N+sha256:N` on the TCTI, parsed: the peer's view of the PCR.
    static func toolPCR(_ tcti: TCTIConfiguration, pcr: Int = 15) throws -> [TPMAlgorithm: [UInt8]] {
        let result = try Tools.run(try Tools.path("tpm2_pcrread"), ["sha1:\(pcr)+sha256:\(pcr)"],
                                   environment: ["TPM2TOOLS_TCTI": "\(tcti)", "TSS2_LOG": "all+NONE"])
        guard result.status == 0 else { throw HarnessError("tpm2_pcrread: \(result.stderr)") }
        return try parsePCRSection(result.stdout, pcr: pcr)
    }

    /// The `bank:` / `  N : 0xHEX` lines that tpm2_pcrread and tpm2_eventlog (its `pcrs:`
    /// section) print.
    static func parsePCRSection(_ text: String, pcr: Int) throws -> [TPMAlgorithm: [UInt8]] {
        var out: [TPMAlgorithm: [UInt8]] = [:]
        var bank: TPMAlgorithm?
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasSuffix(":"), let b = TPMAlgorithm(name: String(t.dropLast())) {
                bank = b
            } else if let bank, let colon = t.firstIndex(of: ":"), Int(t[..<colon].trimmingCharacters(in: .whitespaces)) == pcr {
                let hex = t[t.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                out[bank] = try Hex.decode(hex)
            }
        }
        return out
    }

    static func tcgReplay(_ bytes: [UInt8], pcr: Int = 15) throws -> [TPMAlgorithm: [UInt8]] {
        let replay = try TCGEventLog.replay(bytes: bytes)
        return Dictionary(uniqueKeysWithValues: banks.compactMap { b in replay.values[b, pcr].map { (b, $0) } })
    }
}

/// A child process started with posix_spawn and reaped with waitpid, so that a test can kill
/// it at any moment and know at once how it ended (Foundation's Process reaps on a thread of
/// its own and can miss a child that dies while it is being signalled).
struct Child {
    let pid: pid_t

    /// Starts `path` with `arguments`; standard output and error go to the files named, input
    /// is /dev/null, and the child starts with no signal blocked.
    static func spawn(_ path: String, _ arguments: [String], stdout: String, stderr: String,
                      environment: [String: String] = [:]) throws -> Child {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let merged = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw HarnessError("posix_spawn \(path): \(String(cString: strerror(rc)))") }
        return Child(pid: pid)
    }

    func kill() { _ = Glibc.kill(pid, SIGKILL) }

    /// Whether the child has ended (a zombie not yet waited for), without reaping it.
    func hasExited() -> Bool {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.isEmpty || stat.contains(") Z ")
    }

    /// Waits for the child; the signal that ended it, or nil when it exited (with `status`).
    func wait() -> (signal: Int32?, status: Int32) {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7F
        return signal != 0 ? (signal, 0) : (nil, (status >> 8) & 0xFF)
    }
}
