import ArgumentParser
import Crypto
import Foundation
import TPM
import TPMWire
import VMV

#if canImport(Glibc)
import Glibc
#endif

/// Measurement-log speed: measurements per second through the engine (durable append + PCR
/// extend in every bank of a swtpm, + the PCR read-back), one at a time and concurrently
/// (group commit); the store's append rate without the TPM; each beside its reference in the
/// same run: TPM2_PCR_Extend alone on the same swtpm (through the TPM actor, and one
/// `tpm2_pcrextend` process per extend), and a plain pwrite+fsync loop of the same record size.
struct LogBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Measurement log: measure() with extend, append without, beside raw extends and write+fsync."
    )

    @Option(help: "Measurements in each timed engine round.") var measurements = 500
    @Option(help: "Tasks calling measure() at once in the concurrent run.") var concurrency = 32
    @Option(help: "Records in each append round (no TPM).") var appends = 1000
    @Option(help: "tpm2_pcrextend processes to time.") var toolRuns = 50
    @Option(help: "Rounds; each figure is the best round (the least disturbed by other work on the machine).")
    var rounds = 3
    @Option(help: "Directory for the logs and files (it needs a real fsync: not tmpfs for a fair figure).")
    var directory = FileManager.default.temporaryDirectory.path

    func run() async throws {
        let simulator = try TPMSimulator.ephemeral()
        defer { simulator.stop() }
        let tpm = try await TPM.open(simulator.tcti)
        let base = directory + "/vmv-bench-log-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let banks = try await tpm.allocatedBanks()
        print("measurement log: swtpm (banks \(banks.map(\.name).joined(separator: ","))), files in \(base) (\(Self.filesystem(base))), best of \(rounds) rounds")

        // One engine per mode, kept across rounds (each round goes on in the same epoch).
        let sequentialEngine = try await MeasurementEngine.open(stateDirectory: base + "/sequential", tpm: tpm)
        let concurrentEngine = try await MeasurementEngine.open(stateDirectory: base + "/concurrent", tpm: tpm, configuration: .init(pcr: 16))
        let digests = Dictionary(uniqueKeysWithValues: banks.map { ($0, [UInt8](repeating: 0x5A, count: $0.digestSize ?? 32)) })
        let perTask = measurements / concurrency
        let concurrentCount = Double(perTask * concurrency)
        let n = Double(measurements)
        var best = [String: Double]()
        func keep(_ key: String, _ rate: Double) { best[key] = max(best[key] ?? 0, rate) }
        var recordSize = 0
        var next = 0

        for round in 0..<max(rounds, 1) {
            // Engine, one measurement at a time: append + fsync, extend, PCR read-back each.
            keep("sequential", n / (try await Self.time {
                for _ in 0..<measurements { _ = try await sequentialEngine.measure(Self.measurement(next)); next += 1 }
            }))
            if round == 0 { recordSize = try Self.recordSize(base + "/sequential") }
            // Engine, `concurrency` tasks at once: group commit.
            let offset = next
            keep("concurrent", concurrentCount / (try await Self.time {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for t in 0..<concurrency {
                        group.addTask {
                            for i in 0..<perTask { _ = try await concurrentEngine.measure(Self.measurement(offset + t * perTask + i)) }
                        }
                    }
                    try await group.waitForAll()
                }
            }))
            next += perTask * concurrency
            // Reference: TPM2_PCR_Extend alone, through the same actor (every bank, one command).
            keep("extend", n / (try await Self.time {
                for _ in 0..<measurements { try await tpm.extend(pcr: 23, digests: digests) }
            }))
            // Reference: the least any durable-before-extend log pays: pwrite + fsync, then the extend.
            let raw = try Self.RawFile(base + "/raw-extend.bin", size: recordSize)
            keep("fsyncExtend", n / (try await Self.time { try await Self.appendAndExtend(raw, tpm, digests, count: measurements) }))
            // The store alone, and the plain write + fsync loop of the same size.
            keep("append1", try Self.appendRun(base + "/append-1-\(round)", count: appends, batch: 1))
            keep("appendN", try Self.appendRun(base + "/append-n-\(round)", count: appends, batch: concurrency))
            let plain = try Self.RawFile(base + "/raw-\(round).bin", size: recordSize)
            keep("fsync", Double(appends) / (try await Self.time { for _ in 0..<appends { try plain.appendAndSync() } }))
        }
        let commits = await concurrentEngine.status().commits
        await sequentialEngine.close()
        await concurrentEngine.close()
        await tpm.close()

        // Reference: tpm2_pcrextend, one process per extend (how a shell script would log).
        let tool = try Bench.tool("tpm2_pcrextend")
        let spec = "23:" + banks.map { "\($0.name)=" + String(repeating: "5a", count: $0.digestSize ?? 32) }.joined(separator: ",")
        setenv("TPM2TOOLS_TCTI", "\(simulator.tcti)", 1)
        setenv("TSS2_LOG", "all+NONE", 1)
        let toolRate = Double(toolRuns) / (try await Self.time {
            for _ in 0..<toolRuns {
                let r = try Bench.run(tool, [spec])
                guard r.status == 0 else { throw ValidationError("tpm2_pcrextend failed: \(r.stderr)") }
            }
        })

        func rate(_ key: String) -> Double { best[key] ?? 0 }
        print("record: \(recordSize) bytes (TCG_PCR_EVENT2, sha1+sha256 digests, a memoryRegion VMV record)")
        print("with the PCR extend (swtpm):")
        Self.line("engine measure(), 1 at a time", rate("sequential"))
        Self.line("engine measure(), \(concurrency) at a time (\(commits) commits in all)", rate("concurrent"))
        Self.line("reference: pwrite+fsync, then TPM2_PCR_Extend", rate("fsyncExtend"))
        Self.line("reference: TPM2_PCR_Extend alone (actor)", rate("extend"))
        Self.line("reference: tpm2_pcrextend (a process each)", toolRate)
        print("without the extend (the store alone):")
        Self.line("append, 1 record per fsync", rate("append1"))
        Self.line("append, \(concurrency) records per fsync", rate("appendN"))
        Self.line("reference: pwrite+fsync loop, \(recordSize) B", rate("fsync"))
        print("ratios: measure() 1 at a time = \(Bench.format(rate("sequential") / rate("fsyncExtend")))x pwrite+fsync+extend, "
              + "\(Bench.format(rate("sequential") / toolRate, 1))x tpm2_pcrextend; "
              + "\(concurrency) at a time = \(Bench.format(rate("concurrent") / rate("fsyncExtend"), 1))x pwrite+fsync+extend; "
              + "append = \(Bench.format(rate("append1") / rate("fsync")))x pwrite+fsync, batched \(Bench.format(rate("appendN") / rate("fsync"), 1))x")
    }

    static func measurement(_ n: Int) -> VMV.Measurement {
        .memoryRegion(domain: .init(uuid: [UInt8](repeating: 0x42, count: 16), id: 7, name: "bench-guest"), subject: "kernel.text",
                      virtualStart: 0xffff_ffff_8100_0000 &+ UInt64(n) &* 4096, pageSize: 4096, pageCount: 3072,
                      merkleRoot: Array(SHA256.hash(data: Array("root \(n)".utf8))), attributes: [("kernel.release", "6.1.0-27-amd64")])
    }

    static func time(_ body: () async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        try await body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }

    /// `count` times: pwrite + fsync, then TPM2_PCR_Extend of PCR 23. The write is taken as a
    /// Result and then thrown: a plain throwing call next to the typed-throws extend in one
    /// async function crashed the Swift 6.3 optimizer in release builds ("While splitting
    /// coroutine"), which broke `scripts/bench.sh` for every benchmark.
    static func appendAndExtend(_ raw: RawFile, _ tpm: TPM, _ digests: [TPMAlgorithm: [UInt8]], count: Int) async throws {
        for _ in 0..<count {
            let written = Result { try raw.appendAndSync() }
            try written.get()
            try await tpm.extend(pcr: 23, digests: digests)
        }
    }

    static func line(_ what: String, _ rate: Double) {
        print("  \(what.padding(toLength: 46, withPad: " ", startingAt: 0)) \(Bench.si(rate))/s")
    }

    /// Bytes of the second record of the epoch's log (the first is the epochStart).
    static func recordSize(_ state: String) throws -> Int {
        let log = try LogReader(stateDirectory: state).read(epoch: 0, since: 1)
        return log.records.first?.event.serializedSize ?? 0
    }

    /// Appends `count` records through the store alone, `batch` per fsync; records per second.
    static func appendRun(_ state: String, count: Int, batch: Int) throws -> Double {
        let store = try LogStore.open(LogLayout(stateDirectory: state))
        defer { store.close() }
        try store.startEpoch(.init(pcr: 15, banks: [.sha1, .sha256], clock: TPMSClockInfo(clock: 0, resetCount: 0, restartCount: 0, safe: true),
                                   reason: "benchmark"))
        guard let header = store.openEpoch?.header else { throw ValidationError("no epoch") }
        let writer = try TCGEventLogWriter(header: header)
        func build(_ from: UInt64, _ k: Int) throws -> ([VMVEventRecord], [TCGEvent]) {
            var records: [VMVEventRecord] = [], events: [TCGEvent] = []
            for i in 0..<k {
                let seq = from + UInt64(i)
                let record = seq == 0
                    ? VMVEventRecord(seq: 0, epoch: 0, pcr: 15, time: 0, kind: .epochStart,
                                     epochStart: .init(resetCount: 0, restartCount: 0, reason: "benchmark"))
                    : VMVEventRecord(seq: seq, epoch: 0, pcr: 15, time: seq, kind: .memoryRegion,
                                     domain: .init(uuid: [UInt8](repeating: 0x42, count: 16), id: 7, name: "bench-guest"),
                                     subject: "kernel.text",
                                     region: .init(virtualStart: 0xffff_ffff_8100_0000 &+ seq &* 4096, pageSize: 4096, pageCount: 3072,
                                                   merkleRoot: TCGDigest(algorithm: .sha256, bytes: Array(SHA256.hash(data: Array("root \(seq)".utf8))))),
                                     attributes: [.init("kernel.release", "6.1.0-27-amd64")])
                records.append(record)
                events.append(try writer.measurement(pcr: 15, type: .eventTag, data: record.wireBytes))
            }
            return (records, events)
        }
        let (first, firstEvents) = try build(0, 1)
        try store.append(firstEvents, records: first)
        var seconds = 0.0
        var done = 0
        while done < count {
            let k = min(batch, count - done)
            let (records, events) = try build(UInt64(done + 1), k)
            let start = ContinuousClock.now
            try store.append(events, records: records)
            let elapsed = ContinuousClock.now - start
            seconds += Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            done += k
        }
        return Double(count) / seconds
    }

    /// A file appended to with pwrite + fsync of `size` bytes at a time, nothing else.
    final class RawFile {
        let fd: Int32
        let path: String
        let bytes: [UInt8]
        var offset = 0

        init(_ path: String, size: Int) throws {
            self.path = path
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ValidationError("\(path): cannot open") }
            bytes = [UInt8](repeating: 0xA5, count: max(size, 1))
        }

        deinit { close(fd) }

        func appendAndSync() throws {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard n == bytes.count, fsync(fd) == 0 else { throw ValidationError("\(path): write or fsync failed") }
            offset += n
        }
    }

    /// The file system type of `path` (`stat -f`): fsync costs differ by orders of magnitude.
    static func filesystem(_ path: String) -> String {
        guard let r = try? Bench.run("/usr/bin/stat", ["-f", "-c", "%T", path]), r.status == 0 else { return "unknown file system" }
        let type = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return type == "tmpfs" ? "tmpfs: fsync costs nothing here" : type
    }
}
