import ArgumentParser
import TPMWire

/// `vmv-verifier eventlog …`: TCG crypto-agile event logs on their own, without a quote.
struct EventLogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eventlog",
        abstract: "Read TCG PC Client crypto-agile event logs.",
        subcommands: [Replay.self]
    )

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replay an event log and print the PCR values it predicts, per bank.",
            discussion: """
                FILE is a crypto-agile log (Spec ID Event03): a firmware log such as \
                /sys/kernel/security/tpm0/binary_bios_measurements, or a VMV measurement log. \
                Only the PCRs the log has events for are printed. Exit 0 when the log replays, \
                2 when the file cannot be read or is not a well-formed log.
                """
        )

        @Argument(help: "The event log (binary).")
        var file: String

        @Flag(help: "Print JSON instead of the tpm2_eventlog-style text.")
        var json = false

        func run() throws {
            let replay: TCGReplay
            do {
                replay = try TCGEventLog.replay(bytes: try InputFile.bytes(file))
            } catch let error as InputFile.Error {
                throw malformedInput(error.description)
            } catch let error as WireError {
                throw malformedInput("\(file): not a valid event log: \(error.reason)")
            }
            print(json ? Self.json(replay) : Self.text(replay), terminator: "")
        }

        /// The `pcrs:` section as tpm2_eventlog prints it, after a short summary.
        static func text(_ replay: TCGReplay) -> String {
            var out = "events: \(replay.eventCount)\n"
            if let locality = replay.startupLocality { out += "startupLocality: \(locality)\n" }
            if !replay.unreplayedBanks.isEmpty {
                out += "unreplayedBanks: [\(replay.unreplayedBanks.map(\.name).joined(separator: ", "))]\n"
            }
            out += "pcrs:\n"
            for bank in replay.covered.banks where !bank.pcrs.isEmpty {
                out += "  \(bank.hash.name):\n"
                for pcr in bank.pcrs {
                    let index = String(pcr).padding(toLength: 2)
                    out += "    \(index) : 0x\(Hex.encode(replay.values[bank.hash, pcr] ?? []))\n"
                }
            }
            return out
        }

        /// `{"events":N,"startupLocality":L|null,"unreplayedBanks":[…],"pcrs":{"sha256":{"0":"hex",…},…}}`,
        /// banks in header order, PCRs ascending. Every string is an algorithm name or hex.
        static func json(_ replay: TCGReplay) -> String {
            let banks = replay.covered.banks.map { bank in
                let pcrs = bank.pcrs.map { "\"\($0)\":\"\(Hex.encode(replay.values[bank.hash, $0] ?? []))\"" }
                return "\"\(bank.hash.name)\":{\(pcrs.joined(separator: ","))}"
            }
            let locality = replay.startupLocality.map { String($0) } ?? "null"
            let unreplayed = replay.unreplayedBanks.map { "\"\($0.name)\"" }.joined(separator: ",")
            return "{\"events\":\(replay.eventCount),\"startupLocality\":\(locality),"
                + "\"unreplayedBanks\":[\(unreplayed)],\"pcrs\":{\(banks.joined(separator: ","))}}\n"
        }
    }
}

extension String {
    fileprivate func padding(toLength width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
