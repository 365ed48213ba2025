import ArgumentParser
import FoundationEssentials
import TPMWire
import Verifier

/// `vmv-verifier log …`: VMV measurement logs (one epoch, as `vmv log export --format tcg`
/// writes it), checked the way a remote verifier checks them before appraisal.
struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Check VMV measurement logs.",
        subcommands: [Check.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a VMV measurement log: digests, records, seq/epoch/PCR, replay; optionally against PCR values.",
            discussion: """
                FILE is one epoch's TCG log (vmv log export --format tcg). Every event's digest \
                must be the hash of its data in every bank before the data is read as a VMV record; \
                the records must name the event's PCR, follow seq 0, 1, 2, … in one epoch, and \
                start with an epochStart. The log is replayed from the reset value, or from the \
                values its epochStart states (then the platform is reported untrusted). With \
                --expect or --pcrs, the replay must equal those values.

                Exit status: 0 the log is valid (and matches); 1 it was checked and rejected (the \
                lines say which event and why); 2 the file cannot be read or is not an event log.
                """
        )

        @Argument(help: "The log (TCG crypto-agile binary).") var file: String
        @Option(help: "The epoch the log must be.") var epoch: UInt32?
        @Option(help: "The PCR the log must be for.") var pcr: Int?
        @Option(help: ArgumentHelp("An expected PCR value, BANK:PCR=HEX (repeatable), e.g. from a quote.", valueName: "bank:pcr=hex"))
        var expect: [String] = []
        @Option(help: ArgumentHelp("Expected PCR values as tpm2-tools writes them (tpm2_quote -o / tpm2_pcrread -o).", valueName: "file"))
        var pcrs: String?
        @Option(help: "The format of --pcrs: serialized, marshaled, or values.") var pcrsFormat: PCRFileFormat = .serialized
        @Flag(help: "Print JSON instead of text.") var json = false

        struct Output: Encodable {
            let valid: Bool
            let epoch: UInt32?
            let pcr: Int?
            let records: [VMVEventRecord]
            let replayed: [String: String]
            let untrustedPlatform: String?
            let problems: [ProblemOutput]
        }

        struct ProblemOutput: Encodable {
            let code: String
            let event: Int?
            let reason: String
        }

        func run() throws {
            let log: TCGEventLog
            do {
                log = try TCGEventLog(bytes: try InputFile.bytes(file))
            } catch let error as InputFile.Error {
                throw malformedInput(error.description)
            } catch let error as WireError {
                throw malformedInput("\(file): not a valid event log: \(error.reason)")
            }
            let expected = try expectedValues()

            var problems: [MeasurementLogProblem] = []
            var verified: VerifiedMeasurementLog?
            switch MeasurementLogVerifier.verify(log, epoch: epoch, pcr: pcr) {
            case .success(let v):
                verified = v
                if !expected.banks.isEmpty, let problem = v.check(against: expected) { problems.append(problem) }
            case .failure(let rejection):
                problems = rejection.problems
            }
            let valid = problems.isEmpty
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let output = Output(
                    valid: valid, epoch: verified?.epoch, pcr: verified?.pcr,
                    records: valid ? verified?.entries.map(\.record) ?? [] : [],
                    replayed: Dictionary(uniqueKeysWithValues: (verified?.replayed ?? [:]).map { ($0.key.name, Hex.encode($0.value)) }),
                    untrustedPlatform: verified?.untrustedPlatformReason,
                    problems: problems.map { ProblemOutput(code: $0.code.rawValue, event: $0.event, reason: $0.reason) })
                print(String(decoding: try encoder.encode(output), as: UTF8.self))
            } else if let v = verified, valid {
                let banks = v.replayed.keys.sorted()
                print("valid: epoch \(v.epoch), PCR \(v.pcr), \(v.entries.count) records (seq 0–\(v.entries.count - 1)), every digest the hash of its record")
                for bank in banks { print("  \(bank.name): \(v.pcr) : 0x\(Hex.encode(v.replayed[bank] ?? []))") }
                if !expected.banks.isEmpty { print("the replay equals the expected PCR \(v.pcr) values") }
                if let untrusted = v.untrustedPlatformReason { print("platform untrusted: \(untrusted)") }
            } else {
                print("rejected: \(problems.count) problem\(problems.count == 1 ? "" : "s")")
                for p in problems { print("  \(p.code.rawValue): \(p)") }
            }
            if !valid { throw ExitCode(1) }
        }

        /// --expect and --pcrs together.
        func expectedValues() throws -> PCRValues {
            var expected = PCRValues()
            for item in expect {
                let parsed = Result { () throws(WireError) in try Self.parseExpectation(item) }
                switch parsed {
                case .success(let (bank, index, value)): expected[bank, index] = value
                case .failure(let error): throw ValidationError("--expect \(item): \(error.reason)")
                }
            }
            if let pcrs {
                let bytes: [UInt8]
                do { bytes = try InputFile.bytes(pcrs) } catch { throw malformedInput(error.description) }
                let file = Result { () throws(WireError) in try PCRFile(bytes: bytes, format: pcrsFormat) }
                switch file {
                case .success(let f):
                    for (bank, byPCR) in f.values.banks { for (index, value) in byPCR { expected[bank, index] = value } }
                case .failure(let error): throw malformedInput("\(pcrs): not a PCR file: \(error.reason)")
                }
            }
            return expected
        }

        /// `sha256:15=HEX`
        static func parseExpectation(_ text: String) throws(WireError) -> (TPMAlgorithm, Int, [UInt8]) {
            let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
            let left = parts.first?.split(separator: ":").map(String.init) ?? []
            guard parts.count == 2, left.count == 2, let bank = TPMAlgorithm(name: left[0]), let size = bank.digestSize,
                  let index = Int(left[1]), (0..<PCRSelection.pcClientPCRCount).contains(index) else {
                throw WireError(.syntax, "expected BANK:PCR=HEX, e.g. sha256:15=3fa1…")
            }
            let value = try Hex.decode(parts[1], field: "value")
            guard value.count == size else {
                throw WireError(.invalidValue, "\(value.count) bytes, a \(bank.name) value has \(size)")
            }
            return (bank, index, value)
        }
    }
}
