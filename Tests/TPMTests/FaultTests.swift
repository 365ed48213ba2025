import TestSupport
import Testing
import TPM
import TPMWire

/// What happens when the TPM goes away, comes back, or says it is busy.
@Suite struct FaultTests {
    static let pcr16 = try! PCRSelection(parsing: "sha256:16")
    static let zeros = [UInt8](repeating: 0, count: 32)

    @Test func killedSwtpmGivesAClearErrorAndTheNextCallRecovers() async throws {
        let simulator = try TPMSimulator.ephemeral()
        defer { simulator.stop() }
        let tpm = try await TPM.open(simulator.tcti)
        try await tpm.extend(pcr: 16, digests: [.sha1: [UInt8](repeating: 7, count: 20), .sha256: [UInt8](repeating: 7, count: 32)])
        #expect(try await tpm.readPCRs(Self.pcr16)[.sha256, 16] != Self.zeros)

        // swtpm dies mid-run, as in a crash.
        simulator.kill()
        let failure = await #expect(throws: TPMError.self) { try await tpm.readPCRs(Self.pcr16) }
        #expect(failure?.code == .transport)
        #expect(failure?.isTransportFailure == true)
        #expect(failure?.description.hasPrefix("Esys_PCR_Read(sha256:16): tcti:") == true, "\(String(describing: failure))")
        #expect(failure?.rc.map { $0 >> 16 } == 10, "a TCTI-layer response code")

        // Back on the same port: the next call reopens, and sees a power-cycled TPM
        // (PCRs reset, persistent objects kept).
        let restarted = try simulator.restart()
        defer { restarted.stop() }
        #expect(try await tpm.readPCRs(Self.pcr16)[.sha256, 16] == Self.zeros)
        #expect(try await tpm.handles(first: 0x8100_0000).contains(0x8101_0001))

        // Killed again and restarted without TPM2_Startup: the TPM answers TPM_RC_INITIALIZE,
        // and the actor sends Startup itself before carrying on.
        restarted.kill()
        let cold = try simulator.restart(startupClear: false)
        defer { cold.stop() }
        #expect(throws: HarnessError.self) { try TPM2Tools(cold).run("tpm2_pcrread", ["sha256:16"]) }
        #expect(try await tpm.readPCRs(Self.pcr16)[.sha256, 16] == Self.zeros)
        #expect(try TPM2Tools(cold).pcrRead("sha256:16")[.sha256, 16] == Self.zeros)
        await tpm.close()
    }

    @Test func opensATPMThatWaitsForStartup() async throws {
        let simulator = try TPMSimulator.ephemeral(startupClear: false)
        defer { simulator.stop() }
        let before = #expect(throws: HarnessError.self) { try TPM2Tools(simulator).run("tpm2_pcrread", ["sha256:0"]) }
        #expect(before?.description.contains("0x100") == true, "\(String(describing: before))")
        let tpm = try await TPM.open(simulator.tcti)
        #expect(try await tpm.readPCRs(PCRSelection(parsing: "sha256:0"))[.sha256, 0] == Self.zeros)
        #expect(try TPM2Tools(simulator).pcrRead("sha256:0")[.sha256, 0] == Self.zeros)
        await tpm.close()
    }

    /// swtpm cannot be made to answer TPM_RC_RETRY, so a proxy between ESYS and swtpm answers
    /// it in swtpm's place for the first N PCR_Read commands: the only fault that is faked.
    @Test func retriesWithBackoffWhenTheTPMSaysRetry() async throws {
        let simulator = try TPMSimulator.ephemeral()
        defer { simulator.stop() }
        let proxy = try RetryInjectingProxy(target: simulator.port, commandCode: 0x17E /* TPM_CC_PCR_Read */)
        defer { proxy.stop() }
        let tpm = try await TPM.open(proxy.tcti, retryPolicy: RetryPolicy(attempts: 3, firstDelay: .milliseconds(5)))
        let direct = try TPM2Tools(simulator).pcrRead("sha256:16")

        // ESYS submits a command up to five times by itself; eight RETRYs need a second ESYS
        // call from the actor's own retry (5 + 3 answered RETRY, the ninth goes through).
        proxy.inject(8)
        #expect(try await tpm.readPCRs(Self.pcr16) == direct)
        #expect(proxy.seen == 9)
        #expect(proxy.remaining == 0)

        // More RETRYs than ESYS and the policy allow (3 calls × 5 submissions): a typed error.
        proxy.inject(100)
        let busy = await #expect(throws: TPMError.self) { try await tpm.readPCRs(Self.pcr16) }
        #expect(busy?.code == .tpm)
        #expect(busy?.tpmBaseCode == 0x922)
        #expect(busy?.rc == 0x922)
        #expect(busy?.reason.hasSuffix("still so after 3 attempts") == true, "\(String(describing: busy))")
        #expect(proxy.remaining == 100 - 15)

        // And once the TPM stops saying RETRY, the same actor goes on.
        proxy.inject(0)
        #expect(try await tpm.readPCRs(Self.pcr16) == direct)
        await tpm.close()
    }
}
