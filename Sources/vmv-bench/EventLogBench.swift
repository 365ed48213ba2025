import ArgumentParser
import Foundation
import TPMWire

/// Event-log replay speed: vmv's one-pass replay (read + parse + extend) and the parse into
/// events followed by replay, beside `tpm2_eventlog` on the same file, with the ratio.
struct EventLogBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eventlog",
        abstract: "Replay speed for a generated event log, beside tpm2_eventlog."
    )

    @Option(help: "Events in the generated log.")
    var events = 100_000

    @Option(help: "Banks of the log, in tpm2-tools names, comma-separated.")
    var banks = "sha256"

    @Option(help: "Timed runs of each vmv replay; the fastest counts.")
    var runs = 5

    @Option(help: "Timed runs of tpm2_eventlog; the fastest counts.")
    var toolRuns = 3

    func run() throws {
        let bankList = try banks.split(separator: ",").map { name -> TPMAlgorithm in
            guard let alg = TPMAlgorithm(name: String(name)), alg.isComputableHash else {
                throw ValidationError("--banks: '\(name)' is not sha1, sha256, sha384 or sha512")
            }
            return alg
        }
        let tpm2Eventlog = try Bench.tool("tpm2_eventlog")

        // The log: what the VMV writes (EV_EFI_ACTION records for PCR 15, digest = hash of data).
        var writer = try TCGEventLogWriter(banks: bankList)
        for i in 0..<events {
            try writer.append(pcr: 15, type: .efiAction, data: Array("vmv measurement \(i): domain guest-\(i % 64) region text".utf8))
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-bench-eventlog-\(UUID().uuidString).bin")
        try Data(writer.bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let size = Double(writer.bytes.count)
        let n = Double(events)

        print("eventlog replay: \(events) events, banks \(bankList.map(\.name).joined(separator: ",")), \(Bench.format(size / 1e6)) MB")

        let onePass = try Bench.best(of: runs) {
            try TCGEventLog.replay(bytes: Array(try Data(contentsOf: file)))
        }
        line("vmv  replay(bytes:)  read+parse+extend", onePass.seconds, n, size)

        let parsed = try Bench.best(of: runs) {
            try TCGEventLog(bytes: Array(try Data(contentsOf: file))).replay()
        }
        line("vmv  TCGEventLog(bytes:).replay()", parsed.seconds, n, size)

        var toolOutput = ""
        let tool = try Bench.best(of: toolRuns) { () throws -> Int32 in
            let r = try Bench.run(tpm2Eventlog, [file.path])
            toolOutput = r.stdout
            return r.status
        }
        guard tool.result == 0 else { throw ValidationError("tpm2_eventlog failed on the generated log") }
        line("tpm2_eventlog (process, YAML output)", tool.seconds, n, size)

        print("ratio: vmv one-pass replay is \(Bench.format(tool.seconds / onePass.seconds, 1))x tpm2_eventlog"
              + " (parse+replay: \(Bench.format(tool.seconds / parsed.seconds, 1))x)")
        let target = n / onePass.seconds >= 1e6 ? "met" : "NOT met"
        print("target 1 M events/s on one core: \(target)")

        // The two must agree, or the speed means nothing (PCR 15 only: no rule differs here).
        let agree = bankList.allSatisfy { bank in
            guard let value = onePass.result.values[bank, 15] else { return false }
            return toolOutput.contains("  \(bank.name):\n    15 : 0x\(Hex.encode(value))\n")
        } && onePass.result == parsed.result
        print("check: PCR 15 equals tpm2_eventlog's in every bank: \(agree ? "yes" : "NO")")
        if !agree { throw ExitCode(1) }
    }

    private func line(_ what: String, _ seconds: Double, _ events: Double, _ bytes: Double) {
        let label = what.padding(toLength: 40, withPad: " ", startingAt: 0)
        print("  \(label) \(Bench.format(seconds * 1e3, 1)) ms  \(Bench.si(events / seconds))events/s  \(Bench.format(bytes / seconds / 1e6, 1)) MB/s")
    }
}
