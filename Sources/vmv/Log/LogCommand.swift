import ArgumentParser
import Foundation
import TPM
import TPMWire
import VMV

#if canImport(Glibc)
import Glibc
#endif

/// `vmv log …`: the measurement log, for operators.
struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Read, check and export the measurement log (safe while the VMV appends to it).",
        subcommands: [LogShowCommand.self, LogVerifyCommand.self, LogExportCommand.self, LogRecoverCommand.self,
                      LogStressCommand.self]
    )
}

/// The epoch a command reads: the one asked for, else the newest.
func selectEpoch(_ reader: LogReader, _ asked: UInt32?) throws -> EpochManifest {
    let epochs = try logCall { try reader.epochs() }
    if let asked {
        guard let m = epochs.first(where: { $0.epoch == asked }) else {
            throw ValidationErrorLine(message: "\(reader.layout.logDirectory): no epoch \(asked) (epochs: \(epochs.map { String($0.epoch) }.joined(separator: ", ")))")
        }
        return m
    }
    guard let latest = epochs.last else {
        throw ValidationErrorLine(message: "\(reader.layout.logDirectory): no measurement log yet (the VMV has not run with this state directory)")
    }
    return latest
}

/// Runs a log operation; its error becomes one line on stderr and a non-zero exit.
func logCall<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as MeasurementLogError {
        throw ValidationErrorLine(message: error.reason)
    }
}

extension EpochManifest {
    /// "epoch 3, PCR 15, banks sha1+sha256, open since 2026-…Z"
    var summary: String {
        var s = "epoch \(epoch), PCR \(pcr), banks \(banks.joined(separator: "+")), "
        switch state {
        case .open: s += "open since \(LogRecord.utc(started))"
        default: s += "\(state.rawValue) at \(LogRecord.utc(ended ?? started)): \(endReason ?? "")"
        }
        return s
    }
}

struct LogShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the log: seq, time, domain, what, digest, PCR.",
        discussion: """
            Reads the newest epoch (or --epoch N). Every record is checked as it is read (its \
            digests are the hash of its data, seq and epoch follow on); bytes after the last good \
            record are reported, not shown. While a VMV appends, only records whose PCR extend is \
            done are shown.
            """)

    @OptionGroup var host: StateOptions
    @Option(help: "Only records with seq ≥ N.") var since: UInt64 = 0
    @Option(help: ArgumentHelp("Only records of this domain (its name or UUID).", valueName: "name|uuid")) var domain: String?
    @Option(help: "The epoch to read (default: the newest).") var epoch: UInt32?
    @Flag(help: "Print JSON for machines.") var json = false

    struct Output: Encodable {
        let epoch: EpochManifest
        let records: [LogRecord]
        let trailing: String?
    }

    func run() async throws {
        let reader = LogReader(stateDirectory: host.stateDirectory)
        let manifest = try selectEpoch(reader, epoch)
        let log = try logCall { try reader.read(epoch: manifest.epoch, since: since) }
        let records = log.records.filter { matches($0.record) }
        if json { return try printJSON(Output(epoch: log.manifest, records: records, trailing: log.trailing)) }
        print("\(log.manifest.summary); \(log.count) record\(log.count == 1 ? "" : "s")\(log.writer.map { "; VMV pid \($0) appending" } ?? "")")
        print("  started: \(log.manifest.start.reason)")
        let rows = records.map { r -> [String] in
            [String(r.seq), String(LogRecord.utc(r.record.time).prefix(19)) + "Z", Self.domainColumn(r.record), Self.what(r.record),
             Self.digest(r.record), String(r.pcr)]
        }
        printTable(header: ["SEQ", "TIME", "DOMAIN", "WHAT", "DIGEST", "PCR"], rows: rows)
        if let trailing = log.trailing { print("after the last good record: \(trailing)") }
    }

    func matches(_ record: VMVEventRecord) -> Bool {
        guard let domain else { return true }
        guard let d = record.domain else { return false }
        return d.name == domain || d.uuidString == domain.lowercased()
    }

    static func domainColumn(_ r: VMVEventRecord) -> String {
        guard let d = r.domain else { return "-" }
        return d.name ?? String(d.uuidString.prefix(8))
    }

    static func what(_ r: VMVEventRecord) -> String {
        if let e = r.epochStart {
            return "epochStart (reset \(e.resetCount), restart \(e.restartCount)\(e.startPCRs.isEmpty ? "" : ", from stated PCR values"))"
        }
        var s = r.kind.name + (r.subject.map { " " + $0 } ?? "")
        if let region = r.region { s += " [\(region.pageCount)×\(region.pageSize) @ 0x\(String(region.virtualStart, radix: 16))]" }
        return s
    }

    static func digest(_ r: VMVEventRecord) -> String {
        guard let d = r.region?.merkleRoot ?? r.contentDigest else { return "-" }
        return "\(d.algorithm.name):\(Hex.encode(d.bytes.prefix(8)))…"
    }
}

/// Prints rows in columns as wide as their widest cell (the last column is not padded).
func printTable(header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    for row in [header] + rows {
        print(row.enumerated().map { i, cell in
            i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count)
        }.joined(separator: "  "))
    }
}

struct LogVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Replay the log against the live TPM: one line says whether log and PCR agree in every bank, or where they diverge.",
        discussion: """
            Exit status: 0 the log replays to the PCR in every bank; 1 they diverge (the line says \
            in which bank and after which seq, or that no record explains the PCR); 2 the log or \
            the TPM cannot be read. A swtpm serves one client at a time: against a swtpm, run this \
            while no VMV holds it.
            """)

    @OptionGroup var host: StateOptions
    @OptionGroup var tpmOptions: TPMOptions
    @Option(help: "The epoch to check (default: the newest).") var epoch: UInt32?
    @Flag(help: "Print JSON for machines.") var json = false

    struct Output: Encodable {
        let agrees: Bool
        let epoch: UInt32
        let pcr: Int
        let records: UInt64
        let banks: [String: [String: String]]
        let message: String
    }

    func run() async throws {
        let reader = LogReader(stateDirectory: host.stateDirectory)
        let manifest = try selectEpoch(reader, epoch)
        var log = try logCall { try reader.read(epoch: manifest.epoch, tail: 1024) }
        var values: [TPMAlgorithm: [UInt8]] = [:]
        var clock: TPMSClockInfo?
        do {
            try await tpmOptions.withTPM { tpm in
                clock = try await tpm.readClock()
                let allocated = try await tpm.allocatedBanks()
                let banks = log.manifest.bankAlgorithms.filter { allocated.contains($0) }
                // A VMV appending between the two reads moves both: read again until they are from one moment.
                for attempt in 0..<5 {
                    let read = try await tpm.readPCRs(PCRSelection(banks: banks.map { .init(hash: $0, pcrs: [log.manifest.pcr]) }))
                    values = Dictionary(uniqueKeysWithValues: banks.compactMap { b in read[b, log.manifest.pcr].map { (b, $0) } })
                    if values == log.replayed || log.writer == nil || attempt == 4 { break }
                    log = try logCall { try reader.read(epoch: manifest.epoch, tail: 1024) }
                }
            }
        } catch let error as TPMError {
            throw ValidationErrorLine(message: "cannot read the TPM: \(error)")
        }
        let (agrees, message) = Self.judge(log, values: values, clock: clock)
        if json {
            var banks: [String: [String: String]] = [:]
            for bank in Set(log.replayed.keys).union(values.keys) {
                banks[bank.name] = ["log": Hex.encode(log.replayed[bank] ?? []), "tpm": Hex.encode(values[bank] ?? [])]
            }
            try printJSON(Output(agrees: agrees, epoch: log.manifest.epoch, pcr: log.manifest.pcr, records: log.count, banks: banks, message: message))
        } else {
            print(message)
        }
        if !agrees { throw ExitCode(1) }
    }

    static func judge(_ log: LogReader.EpochLog, values: [TPMAlgorithm: [UInt8]], clock: TPMSClockInfo?) -> (Bool, String) {
        let m = log.manifest
        let pcr = m.pcr
        let records = "epoch \(m.epoch), \(log.count) record\(log.count == 1 ? "" : "s")\(log.count > 0 ? " (seq 0–\(log.count - 1))" : "")"
        let banks = log.replayed.keys.sorted()
        let differing = banks.filter { log.replayed[$0] != values[$0] }
        let missing = banks.filter { values[$0] == nil }
        var note = ""
        if m.state != .open { note = "; note: the epoch is \(m.state.rawValue) (\(m.endReason ?? ""))" }
        if let trailing = log.trailing { note += "; after the last good record: \(trailing)" }
        if differing.isEmpty {
            return (true, "log and PCR \(pcr) agree in \(banks.map(\.name).joined(separator: ", ")): \(records)\(note)")
        }
        if !missing.isEmpty {
            return (false, "log and PCR \(pcr) cannot be compared: the TPM has no \(missing.map(\.name).joined(separator: ", ")) bank allocated (\(records))\(note)")
        }
        if let clock, clock.resetCount != m.resetCount {
            return (false, "log and PCR \(pcr) diverge: the TPM was reset since epoch \(m.epoch) began (resetCount \(m.resetCount) → \(clock.resetCount); the log has \(log.count) record\(log.count == 1 ? "" : "s")), so the PCR no longer holds this epoch; the VMV starts a new epoch on its next start\(note)")
        }
        let agreeing = banks.filter { !differing.contains($0) }
        let detail = differing.map { "\($0.name): log \(Hex.encode(log.replayed[$0] ?? [])), TPM \(Hex.encode(values[$0] ?? []))" }.joined(separator: "; ")
        var where_ = "no record near the end of the log explains the TPM's value: something else extended PCR \(pcr), or records were lost"
        if let i = log.tail.firstIndex(where: { $0.before == values }) {
            let first = log.tail[i].record.seq
            where_ = first == 0 ? "the PCR holds the epoch's start value: no record is extended yet"
                : "the TPM holds the value after seq \(first - 1): seq \(first)–\(log.count - 1) are logged but not extended (a VMV stopped between fsync and extend; its next start extends them)"
        }
        return (false, "log and PCR \(pcr) diverge in \(differing.map(\.name).joined(separator: ", "))\(agreeing.isEmpty ? "" : " (\(agreeing.map(\.name).joined(separator: ", ")) agree)"): \(records); \(where_); \(detail)\(note)")
    }
}

struct LogExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write an epoch's log as the TCG crypto-agile binary (what tpm2_eventlog reads) or as JSON.",
        discussion: """
            --format tcg writes the epoch's segments as one file: the Spec ID header, then every \
            TCG_PCR_EVENT2 record, byte for byte as stored (`tpm2_eventlog FILE` replays it). \
            An epoch that starts from stated PCR values (after a broken epoch) replays from \
            them, which a TCG replay from zero cannot know; `vmv-verifier log check` can.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case tcg, json }

    @OptionGroup var host: StateOptions
    @Option(help: "tcg or json.") var format: Format
    @Option(help: "The epoch to export (default: the newest).") var epoch: UInt32?
    @Option(name: .shortAndLong, help: ArgumentHelp("Write to this file instead of standard output.", valueName: "file"))
    var output: String?

    struct Output: Encodable {
        let epoch: EpochManifest
        let banks: [String]
        let records: [LogRecord]
    }

    func run() async throws {
        let reader = LogReader(stateDirectory: host.stateDirectory)
        let manifest = try selectEpoch(reader, epoch)
        let log = try logCall { try reader.read(epoch: manifest.epoch, tcg: format == .tcg) }
        let bytes: [UInt8]
        switch format {
        case .tcg:
            if output == nil, isatty(1) != 0 {
                throw ValidationError("the TCG log is binary: give --output FILE or redirect standard output")
            }
            bytes = log.tcgBytes
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            bytes = Array(try encoder.encode(Output(epoch: log.manifest, banks: log.header.banks.map(\.name), records: log.records))) + [0x0A]
        }
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: Data(bytes)) else {
                throw ValidationErrorLine(message: "\(output): cannot write")
            }
        } else {
            FileHandle.standardOutput.write(Data(bytes))
        }
    }
}

struct LogRecoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Open the log as the VMV does on start: reconcile it with the TPM, say what that did, and exit.",
        discussion: """
            Recovery compares the log's replay with the PCR: equal, the epoch goes on; the PCR a \
            few extends behind (a crash between fsync and extend), those are extended now, once; a \
            TPM reset, a new epoch; anything else, the epoch is closed as broken and a new one \
            states the PCR value it starts from. It refuses to start on a PCR that something else \
            extends, and says what to configure. --boot then records the VMV's own boot \
            measurements (binary, configuration, platform facts).
            """)

    @OptionGroup var host: StateOptions
    @OptionGroup var tpmOptions: TPMOptions
    @Flag(help: "Also record the VMV's boot measurements.") var boot = false

    func run() async throws {
        let configuration = try host.configuration()
        try await tpmOptions.withTPM { tpm in
            let engine = try await openEngine(host, tpm, configuration)
            if let report = await engine.recovery { print(report) }
            if boot {
                for r in try await engine.measureBoot(configurationFile: host.configurationFile, configuration: configuration) {
                    print("seq \(r.seq): \(LogShowCommand.what(r.record)) \(LogShowCommand.digest(r.record))")
                }
            }
            await engine.close()
        }
    }
}

/// Opens the measurement engine on the state directory; its errors become one line.
func openEngine(_ host: StateOptions, _ tpm: TPM, _ configuration: VMVConfiguration) async throws -> MeasurementEngine {
    do {
        return try await MeasurementEngine.open(stateDirectory: host.stateDirectory, tpm: tpm, configuration: configuration.engine,
                                                logger: vmvLogger)
    } catch let error as MeasurementLogError {
        throw ValidationErrorLine(message: error.reason)
    }
}
