import ArgumentParser
import Crypto
import Foundation
import TPMWire
import TPM
import VMV

/// `vmv log stress` (hidden): a stream of synthetic measurements through the real engine,
/// store and TPM, for the crash test (which kills it with SIGKILL at random points) and by hand.
///
/// Prints one JSON line when recovery is done, then `acked EPOCH SEQ` for every measurement
/// whose `measure` returned (durable and extended), each line written at once.
struct LogStressCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stress",
        abstract: "Append synthetic measurements as fast as possible (crash tests).",
        shouldDisplay: false)

    @OptionGroup var host: StateOptions
    @OptionGroup var tpmOptions: TPMOptions
    @Option(help: "Measurements to make in all; 0 goes on until killed.") var count = 0
    @Option(help: "Tasks calling measure() at once (more tasks, larger group commits).") var concurrency = 4
    @Option(help: "Measurements per second in all, at most; 0: as fast as possible.") var rate = 0
    @Flag(help: "Record the VMV's boot measurements first.") var boot = false

    struct Recovered: Encodable {
        let event = "recovered"
        let outcome: String
        let finished: Int
        let epoch: UInt32
        let records: UInt64
        let ended: EndedEpoch?
        let repairs: [String]
    }

    struct EndedEpoch: Encodable {
        let epoch: UInt32
        let state: String
        let reason: String
    }

    func validate() throws {
        guard rate >= 0, count >= 0, concurrency >= 1 else { throw ValidationError("--rate and --count must be ≥ 0, --concurrency ≥ 1") }
    }

    func run() async throws {
        let configuration = try host.configuration()
        try await tpmOptions.withTPM { tpm in try await stress(tpm, configuration) }
    }

    func stress(_ tpm: TPM, _ configuration: VMVConfiguration) async throws {
        let engine = try await openEngine(host, tpm, configuration)
        guard let report = await engine.recovery else { throw ValidationErrorLine(message: "no recovery report") }
        var outcome = "continued", finished = 0
        switch report.outcome {
        case .continued: break
        case .finishedExtends(_, let n): outcome = "finishedExtends"; finished = n
        case .newEpoch: outcome = "newEpoch"
        }
        let line = Recovered(outcome: outcome, finished: finished, epoch: report.epoch, records: report.records,
                             ended: report.ended.map { EndedEpoch(epoch: $0.epoch, state: $0.state.rawValue, reason: $0.reason) },
                             repairs: report.repairs)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        emit(String(decoding: try encoder.encode(line), as: UTF8.self))
        if boot {
            for r in try await engine.measureBoot(configurationFile: host.configurationFile, configuration: configuration) {
                emit("acked \(r.epoch) \(r.seq)")
            }
        }

        let uuid: [UInt8] = Array(SHA256.hash(data: Array("vmv stress guest".utf8)).prefix(16))
        let tasks = max(concurrency, 1)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    // Task t makes measurements t, t + tasks, t + 2·tasks, …
                    var n = task
                    while count == 0 || n < count {
                        let root = Array(SHA256.hash(data: Array("page tree \(n)".utf8)))
                        let m = Measurement.memoryRegion(
                            domain: .init(uuid: uuid, id: UInt32(1 + task), name: "stress-\(task)"), subject: "kernel.text",
                            virtualStart: 0xffff_ffff_8100_0000 &+ UInt64(n) &* 0x1000, pageSize: 4096, pageCount: 1024,
                            merkleRoot: root, attributes: [("n", String(n))])
                        let r = try await engine.measure(m)
                        emit("acked \(r.epoch) \(r.seq)")
                        n += tasks
                        // Each task makes rate / tasks per second: the crash test keeps epochs
                        // small enough to read after every kill.
                        if rate > 0 { try await Task.sleep(for: .microseconds(1_000_000 * tasks / rate)) }
                    }
                }
            }
            try await group.waitForAll()
        }
        await engine.close()
    }

    /// One line on standard output, written at once (no buffering: a crash loses no line).
    func emit(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { buffer in
            guard let base = buffer.baseAddress else { return }
            var done = 0
            while done < buffer.count {
                let n = write(1, base + done, buffer.count - done)
                if n <= 0 { return }
                done += n
            }
        }
    }
}
