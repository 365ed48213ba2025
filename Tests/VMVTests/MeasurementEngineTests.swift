import Crypto
import Foundation
import Testing
import TestSupport
import TPM
import TPMWire
import Verifier
@testable import VMV

/// The engine against a private swtpm: what it logs is what the PCR holds, in every bank, as
/// tpm2-tools read it; recovery in each case it must handle.
@Suite struct MeasurementEngineTests {
    /// A swtpm, a TPM actor on it, a state directory.
    final class Rig: @unchecked Sendable {
        let simulator: TPMSimulator
        let state: StateDirectory
        var tpm: TPM

        init() async throws {
            simulator = try TPMSimulator.ephemeral()
            state = try StateDirectory()
            tpm = try await TPM.open(simulator.tcti)
        }

        func engine(_ configuration: MeasurementEngine.Configuration = .init()) async throws -> MeasurementEngine {
            try await MeasurementEngine.open(stateDirectory: state.path, tpm: tpm, configuration: configuration)
        }

        /// Closes the actor's connection, so that tpm2-tools can reach the swtpm.
        func release() async { await tpm.close() }
        func reconnect() async throws { tpm = try await TPM.open(simulator.tcti) }

        func stop() async {
            await tpm.close()
            simulator.stop()
        }

        var reader: LogReader { LogReader(stateDirectory: state.path) }

        func tool(_ name: String, _ arguments: [String]) throws -> String {
            let r = try Tools.run(try Tools.path(name), arguments, environment: ["TPM2TOOLS_TCTI": "\(simulator.tcti)", "TSS2_LOG": "all+NONE"])
            guard r.status == 0 else { throw HarnessError("\(name) \(arguments): \(r.stderr)") }
            return r.stdout
        }
    }

    @Test func whatIsLoggedIsWhatThePCRHoldsAsTpm2ToolsReadIt() async throws {
        let rig = try await Rig()
        let engine = try await rig.engine()
        #expect(await engine.recovery?.outcome == .newEpoch)
        try await withThrowingTaskGroup(of: LogRecord.self) { group in
            for n in 0..<40 { group.addTask { try await engine.measure(Fixture.measurement(n)) } }
            var seqs = Set<UInt64>()
            for try await r in group {
                seqs.insert(r.seq)
                #expect(r.event.digest(for: .sha256) == Array(SHA256.hash(data: r.record.wireBytes)))
                #expect(r.event.digest(for: .sha1) == Array(Insecure.SHA1.hash(data: r.record.wireBytes)))
            }
            #expect(seqs == Set(1...40))
        }
        let status = await engine.status()
        #expect(status.records == 41 && status.extended == 41)
        await engine.close()
        await rig.release()

        // tpm2_pcrread, tpm2_eventlog on the exported log, the reader's replay: one value.
        let live = try Fixture.toolPCR(rig.simulator.tcti)
        let log = try rig.reader.read(epoch: 0, tcg: true)
        #expect(log.replayed == live)
        let file = rig.state.path + "/export.bin"
        try Data(log.tcgBytes).write(to: URL(fileURLWithPath: file))
        let eventlog = try rig.tool("tpm2_eventlog", [file])
        #expect(try Fixture.parsePCRSection(String(eventlog[eventlog.range(of: "pcrs:")!.lowerBound...]), pcr: 15) == live)
        #expect(eventlog.contains("EventNum: 40") && eventlog.contains("EV_EVENT_TAG"))

        // The verifier accepts it and its replay matches the live PCR.
        let verified = try MeasurementLogVerifier.verify(try TCGEventLog(bytes: log.tcgBytes), epoch: 0, pcr: 15).get()
        #expect(verified.entries.count == 41)
        #expect(verified.untrustedPlatformReason == nil)
        #expect(verified.check(against: PCRValues([.sha1: [15: live[.sha1] ?? []], .sha256: [15: live[.sha256] ?? []]])) == nil)
        await rig.stop()
    }

    @Test func aRestartOnTheSameTPMBootGoesOnInTheSameEpoch() async throws {
        let rig = try await Rig()
        var engine = try await rig.engine()
        for n in 0..<5 { _ = try await engine.measure(Fixture.measurement(n)) }
        await engine.close()
        engine = try await rig.engine()
        #expect(await engine.recovery?.outcome == .continued)
        #expect(await engine.recovery?.records == 6)
        let r = try await engine.measure(Fixture.measurement(9))
        #expect(r.seq == 6 && r.epoch == 0)
        await engine.close()
        #expect(try await Fixture.readPCR(rig.simulator.tcti) != [:])
        await rig.stop()
    }

    @Test func recoveryFinishesTheExtendsACrashLeftUndoneOnce() async throws {
        let rig = try await Rig()
        var engine = try await rig.engine()
        for n in 0..<3 { _ = try await engine.measure(Fixture.measurement(n)) }
        await engine.close()
        // As if the VMV died after the fsync of two records and before their extends.
        let store = try LogStore.open(rig.state.layout)
        try Fixture.append(store, 2)
        store.close()
        let pcrBefore = try await Fixture.readPCR(rig.simulator.tcti)

        engine = try await rig.engine()
        #expect(await engine.recovery?.outcome == .finishedExtends(first: 4, count: 2))
        await engine.close()
        let log = try rig.reader.read(epoch: 0)
        #expect(log.count == 6)
        let live = try await Fixture.readPCR(rig.simulator.tcti)
        #expect(live == log.replayed && live != pcrBefore)
        // And a second start finds nothing left to do: nothing is extended twice.
        engine = try await rig.engine()
        #expect(await engine.recovery?.outcome == .continued)
        await engine.close()
        #expect(try await Fixture.readPCR(rig.simulator.tcti) == live)
        await rig.stop()
    }

    @Test func aForeignExtendWhileStoppedBreaksTheEpochVisibly() async throws {
        let rig = try await Rig()
        var engine = try await rig.engine()
        for n in 0..<3 { _ = try await engine.measure(Fixture.measurement(n)) }
        await engine.close()
        await rig.release()
        _ = try rig.tool("tpm2_pcrextend", ["15:sha1=" + String(repeating: "11", count: 20) + ",sha256=" + String(repeating: "22", count: 32)])
        let foreign = try Fixture.toolPCR(rig.simulator.tcti)
        try await rig.reconnect()

        engine = try await rig.engine()
        let report = try #require(await engine.recovery)
        #expect(report.outcome == .newEpoch && report.epoch == 1)
        #expect(report.ended?.epoch == 0 && report.ended?.state == .broken)
        #expect(report.ended?.reason.contains("PCR 15 does not match epoch 0's log (4 records) in sha1, sha256") == true)
        _ = try await engine.measure(Fixture.measurement(7))
        await engine.close()
        await rig.release()

        let epochs = try rig.reader.epochs()
        #expect(epochs.map(\.state) == [.broken, .open])
        let log = try rig.reader.read(epoch: 1, tcg: true)
        let start = try #require(log.records.first?.record.epochStart)
        #expect(start.previousEpoch == 0 && start.previousEnd == .broken)
        #expect(start.startPCRs.map(\.bytes) == [foreign[.sha1] ?? [], foreign[.sha256] ?? []])
        // The verifier replays from the stated values, agrees with the TPM, and does not trust the platform.
        let verified = try MeasurementLogVerifier.verify(try TCGEventLog(bytes: log.tcgBytes)).get()
        let live = try Fixture.toolPCR(rig.simulator.tcti)
        #expect(verified.check(against: PCRValues([.sha1: [15: live[.sha1] ?? []], .sha256: [15: live[.sha256] ?? []]])) == nil)
        #expect(verified.untrustedPlatformReason?.hasPrefix("epoch 1 started from an unexplained PCR 15 state: epoch 0 was broken (PCR 15 does not match") == true)
        await rig.stop()
    }

    @Test func aForeignExtendAtRunTimeIsCaughtAtTheNextCommit() async throws {
        let rig = try await Rig()
        let engine = try await rig.engine()
        _ = try await engine.measure(Fixture.measurement(0))
        try await rig.tpm.extend(pcr: 15, hashing: Array("someone else".utf8))
        let caught = try await engine.measure(Fixture.measurement(1))
        #expect(caught.epoch == 0 && caught.seq == 2)
        let changes = await engine.epochChanges
        #expect(changes.count == 1)
        #expect(changes.first?.reason.hasPrefix("PCR 15 moved without a VMV extend after seq 2") == true, "\(changes)")
        let next = try await engine.measure(Fixture.measurement(2))
        #expect(next.epoch == 1 && next.seq == 1)
        await engine.close()
        #expect(try rig.reader.epochs().map(\.state) == [.broken, .open])
        #expect(try rig.reader.read(epoch: 1).replayed == (try await Fixture.readPCR(rig.simulator.tcti)))
        await rig.stop()
    }

    @Test func aTPMResetStartsANewEpoch() async throws {
        let rig = try await Rig()
        var engine = try await rig.engine()
        _ = try await engine.measure(Fixture.measurement(0))
        await engine.close()
        await rig.release()
        rig.simulator.kill()
        let restarted = try rig.simulator.restart()
        defer { restarted.stop() }
        rig.tpm = try await TPM.open(restarted.tcti)
        engine = try await rig.engine()
        let report = try #require(await engine.recovery)
        #expect(report.outcome == .newEpoch && report.epoch == 1)
        #expect(report.ended?.state == .reset)
        #expect(report.ended?.reason.hasPrefix("TPM reset: resetCount ") == true)
        await engine.close()
        let start = try #require(try rig.reader.read(epoch: 1).records.first?.record.epochStart)
        #expect(start.previousEnd == .tpmReset && start.startPCRs.isEmpty)
        await rig.tpm.close()
    }

    @Test func aTPMResetUnderARunningVMVEndsTheEpochAndTheNextStartsClean() async throws {
        let rig = try await Rig()
        let engine = try await rig.engine()
        _ = try await engine.measure(Fixture.measurement(0))
        rig.simulator.kill()
        // The TPM is gone: the extend fails; the record stays durable and unacknowledged.
        let failed = await #expect(throws: MeasurementLogError.self) { try await engine.measure(Fixture.measurement(1)) }
        #expect(failed?.code == .tpm)
        let restarted = try rig.simulator.restart()
        defer { restarted.stop() }
        // The next commit finds the PCR cleared by a reset: the epoch ends, a clean one starts.
        let next = try await engine.measure(Fixture.measurement(2))
        #expect(next.epoch == 1 && next.seq == 1)
        let changes = await engine.epochChanges
        #expect(changes.map(\.state) == [.reset])
        #expect(changes.first?.reason.hasPrefix("TPM reset while the VMV ran (resetCount ") == true, "\(changes)")
        await engine.close()
        await rig.tpm.close()
        let epochs = try rig.reader.epochs()
        #expect(epochs.map(\.state) == [.reset, .open])
        #expect(epochs.first?.endResetCount == epochs.last?.resetCount, "epoch 0 ended on the boot epoch 1 started on")
        #expect(try rig.reader.read(epoch: 0).count == 3, "the unextended record stays in epoch 0's log")
        let start = try #require(try rig.reader.read(epoch: 1).records.first?.record.epochStart)
        #expect(start.startPCRs.isEmpty && start.previousEnd == .tpmReset)
        #expect(try rig.reader.read(epoch: 1).replayed == (try await Fixture.readPCR(restarted.tcti)))
    }

    @Test func aRecordExtendedOntoAPCRClearedByAResetBreaksTheEpoch() async throws {
        let rig = try await Rig()
        let engine = try await rig.engine()
        _ = try await engine.measure(Fixture.measurement(0))
        rig.simulator.kill()
        let restarted = try rig.simulator.restart()
        defer { restarted.stop() }
        // The TPM actor reopens on the new swtpm: record 2 is extended onto the cleared PCR,
        // which no log explains; the check after the extend sees it and the reset.
        _ = try await engine.measure(Fixture.measurement(1))
        let changes = await engine.epochChanges
        #expect(changes.map(\.state) == [.broken])
        #expect(changes.first?.reason.hasPrefix("TPM reset while the VMV ran (resetCount ") == true, "\(changes)")
        let next = try await engine.measure(Fixture.measurement(2))
        #expect(next.epoch == 1 && next.seq == 1)
        await engine.close()
        await rig.tpm.close()
        let epoch1 = try rig.reader.read(epoch: 1)
        let start = try #require(epoch1.records.first?.record.epochStart)
        #expect(start.previousEnd == .broken && !start.startPCRs.isEmpty, "epoch 1 states the PCR values it starts from")
        #expect(epoch1.replayed == (try await Fixture.readPCR(restarted.tcti)))
    }

    @Test func refusesAPCRSomethingElseExtendsAndSaysWhatToConfigure() async throws {
        let rig = try await Rig()
        try await rig.tpm.extend(pcr: 15, hashing: Array("IMA or a boot loader".utf8))
        let refused = await #expect(throws: MeasurementLogError.self) { try await rig.engine() }
        #expect(refused?.code == .foreignPCR)
        #expect(refused?.reason.contains("something else extends PCR 15; set `pcr = N`") == true, "\(String(describing: refused))")
        #expect(try rig.reader.epochs().isEmpty, "nothing was written")
        // PCR 16 is free: the VMV starts there.
        let engine = try await rig.engine(.init(pcr: 16))
        #expect(try await engine.measure(Fixture.measurement(0)).pcr == 16)
        await engine.close()
        await rig.stop()
    }

    @Test func groupCommitCoalescesConcurrentMeasurements() async throws {
        let rig = try await Rig()
        let engine = try await rig.engine(.init(checkAfterExtend: false))
        let before = await engine.status().commits
        try await withThrowingTaskGroup(of: UInt64.self) { group in
            for n in 0..<300 { group.addTask { try await engine.measure(Fixture.measurement(n)).seq } }
            var seqs: [UInt64] = []
            for try await s in group { seqs.append(s) }
            #expect(Set(seqs) == Set(1...300))
        }
        let status = await engine.status()
        #expect(status.records == 301 && status.extended == 301)
        #expect(status.commits - before < 300, "\(status.commits - before) commits for 300 measurements")
        await engine.close()
        #expect(try rig.reader.read(epoch: 0).replayed == (try await Fixture.readPCR(rig.simulator.tcti)))
        await rig.stop()
    }

    @Test func bootMeasurementsHashTheBinaryTheConfigurationAndThePlatform() async throws {
        let rig = try await Rig()
        let config = rig.state.path + "/vmv.conf"
        try "pcr = 15\nmax_batch = 64 # smaller\n".write(toFile: config, atomically: true, encoding: .utf8)
        let configuration = try VMVConfiguration(parsing: try String(contentsOfFile: config, encoding: .utf8))
        #expect(configuration.maxBatch == 64)
        let engine = try await rig.engine(configuration.engine)
        let records = try await engine.measureBoot(configurationFile: config, configuration: configuration)
        await engine.close()
        #expect(records.map(\.record.kind) == [.vmvBinary, .vmvConfig, .platform] || records.map(\.record.kind) == [.vmvBinary, .vmvConfig, .platform, .platform])
        let binary = try #require(FileManager.default.contents(atPath: "/proc/self/exe"))
        #expect(records[0].record.contentDigest?.bytes == Array(SHA256.hash(data: binary)))
        #expect(records[0].record.attribute("size") == String(binary.count))
        #expect(records[1].record.contentDigest?.bytes == Array(SHA256.hash(data: Array(try #require(FileManager.default.contents(atPath: config))))))
        #expect(records[1].record.subject == config)
        let release = try String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(records[2].record.attribute("kernel.release") == release)
        // Without a file, the effective defaults are what is measured.
        let defaults = try BootMeasurements.collect(configurationFile: nil, configuration: VMVConfiguration())
        #expect(defaults[1].contentDigest?.bytes == Array(SHA256.hash(data: Array(VMVConfiguration().text.utf8))))
        #expect(try VMVConfiguration(parsing: VMVConfiguration().text) == VMVConfiguration())
        #expect(throws: VMVConfiguration.ParseError.self) { try VMVConfiguration(parsing: "pcr = 24") }
        #expect(throws: VMVConfiguration.ParseError.self) { try VMVConfiguration(parsing: "pcrr = 15") }
        await rig.stop()
    }

    @Test func aMeasurementTheFormatRefusesFailsBeforeAnythingIsWritten() async throws {
        let rig = try await Rig()
        let engine = try await rig.engine()
        let long = VMV.Measurement(kind: .kernelImage, domain: .init(uuid: Fixture.guest), subject: String(repeating: "x", count: 2000),
                                   contentDigest: TCGDigest(algorithm: .sha256, bytes: [UInt8](repeating: 0, count: 32)))
        let refused = await #expect(throws: MeasurementLogError.self) { try await engine.measure(long) }
        #expect(refused?.code == .invalidMeasurement)
        #expect(refused?.reason.contains("subject: 2000 bytes, at most 1024") == true, "\(String(describing: refused))")
        let start = VMV.Measurement(kind: .epochStart)
        #expect(await (try? engine.measure(start)) == nil)
        #expect(await engine.status().records == 1)
        await engine.close()
        await rig.stop()
    }
}
