import TestSupport
import Testing
import TPM
import TPMWire

/// TPM2_ReadClock through the actor, against tpm2_readclock on the same swtpm, and across a
/// power cycle (the counter the measurement log starts a new epoch on).
@Suite struct ClockTests {
    /// `tpm2_readclock` YAML: `reset_count: N` and `restart_count: N` under clock_info.
    static func toolCounters(_ simulator: TPMSimulator) throws -> (reset: UInt32, restart: UInt32) {
        let text = try TPM2Tools(simulator).run("tpm2_readclock", [])
        func value(_ key: String) -> UInt32? {
            text.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(key + ":") }
                .flatMap { UInt32($0.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") }
        }
        guard let reset = value("reset_count"), let restart = value("restart_count") else {
            throw HarnessError("tpm2_readclock printed no counters: \(text)")
        }
        return (reset, restart)
    }

    @Test func readClockAgreesWithToolsAndCountsResets() async throws {
        let simulator = try TPMSimulator.ephemeral()
        defer { simulator.stop() }
        let tpm = try await TPM.open(simulator.tcti)
        let first = try await tpm.readClock()
        let tool = try Self.toolCounters(simulator)
        #expect(first.resetCount == tool.reset)
        #expect(first.restartCount == tool.restart)
        #expect(first.clock > 0)

        // A power cycle (swtpm killed, started again, TPM2_Startup(CLEAR)) is a TPM reset.
        simulator.kill()
        let restarted = try simulator.restart()
        defer { restarted.stop() }
        let second = try await tpm.readClock()
        #expect(second.resetCount == first.resetCount + 1)
        #expect(try Self.toolCounters(restarted).reset == second.resetCount)
        await tpm.close()
    }
}
