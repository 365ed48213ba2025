import Crypto
import Foundation
import Testing
import TPM
import TPMWire
import Verifier
@testable import VMV

/// The verifier against tampered copies of a real log (written by the engine, extended into a
/// swtpm): each change is rejected, and the reason names the event and what is wrong.
@Suite(.serialized) struct TamperTests {
    /// A log of 12 records and the live PCR it replays to, made once for the suite.
    struct Evidence: Sendable {
        let log: TCGEventLog
        let live: PCRValues
        let otherEpoch: TCGEventLog
    }

    /// Made once, on first use, by whichever test comes first.
    actor Cache {
        static let shared = Cache()
        private var made: Evidence?

        func evidence() async throws -> Evidence {
            if let made { return made }
            let simulator = try TPMSimulator.ephemeral()
            defer { simulator.stop() }
            let state = try StateDirectory()
            let tpm = try await TPM.open(simulator.tcti)
            var engine = try await MeasurementEngine.open(stateDirectory: state.path, tpm: tpm)
            for n in 0..<11 { _ = try await engine.measure(Fixture.measurement(n)) }
            await engine.close()
            let values = try await tpm.readPCRs(PCRSelection(parsing: "sha1:15+sha256:15"))
            // A second epoch (after a foreign extend) to splice records from.
            try await tpm.extend(pcr: 15, hashing: Array("foreign".utf8))
            engine = try await MeasurementEngine.open(stateDirectory: state.path, tpm: tpm)
            for n in 0..<3 { _ = try await engine.measure(Fixture.measurement(n)) }
            await engine.close()
            await tpm.close()
            let reader = LogReader(stateDirectory: state.path)
            let evidence = Evidence(log: try TCGEventLog(bytes: try reader.read(epoch: 0, tcg: true).tcgBytes), live: values,
                                    otherEpoch: try TCGEventLog(bytes: try reader.read(epoch: 1, tcg: true).tcgBytes))
            made = evidence
            return evidence
        }
    }

    static func evidence() async throws -> Evidence { try await Cache.shared.evidence() }

    static func rejection(_ log: TCGEventLog) -> [MeasurementLogProblem] {
        switch MeasurementLogVerifier.verify(log, epoch: 0, pcr: 15) {
        case .success: return []
        case .failure(let rejection): return rejection.problems
        }
    }

    @Test func theUntouchedLogIsAcceptedAndReplaysToThePCR() async throws {
        let e = try await Self.evidence()
        let verified = try MeasurementLogVerifier.verify(e.log, epoch: 0, pcr: 15).get()
        #expect(verified.entries.map(\.record.seq) == Array(0...11))
        #expect(verified.check(against: e.live) == nil)
        #expect(verified.replayed[.sha256] == e.live[.sha256, 15])
    }

    @Test func aChangedDataByteIsRejectedByItsDigest() async throws {
        var log = try await Self.evidence().log
        log.events[5].data[log.events[5].data.count - 3] ^= 0x40
        let problems = Self.rejection(log)
        #expect(problems.first?.code == .digest)
        #expect(problems.first?.event == 5)
        #expect(problems.first?.reason.contains("digest") == true && problems.first?.reason.contains("is not the hash of the event data") == true)
    }

    @Test func aChangedRecordWithRecomputedDigestsNoLongerMatchesThePCR() async throws {
        var log = try await Self.evidence().log
        var record = try VMVEventRecord(wireBytes: log.events[5].data)
        record.subject = "kernel.rodata"
        log.events[5].data = record.wireBytes
        log.events[5].digests = log.events[5].digests.map { TCGDigest(algorithm: $0.algorithm, bytes: $0.algorithm.hash(record.wireBytes) ?? []) }
        let verified = try MeasurementLogVerifier.verify(log, epoch: 0, pcr: 15).get()
        let live = try await Self.evidence().live
        let problem = try #require(verified.check(against: live))
        #expect(problem.code == .replay)
        #expect(problem.reason.hasPrefix("PCR 15 does not match the log (epoch 0, 12 records): sha1: the log replays to"))
    }

    @Test func aDroppedRecordIsRejected() async throws {
        var log = try await Self.evidence().log
        log.events.remove(at: 4)
        let problems = Self.rejection(log)
        #expect(problems.first?.code == .seq && problems.first?.event == 4)
        #expect(problems.first?.reason == "seq 5 where 4 comes next: record 4 missing (dropped or reordered)")
    }

    @Test func theLastRecordDroppedIsCaughtByTheReplay() async throws {
        var log = try await Self.evidence().log
        log.events.removeLast()
        let verified = try MeasurementLogVerifier.verify(log, epoch: 0, pcr: 15).get()
        let live = try await Self.evidence().live
        #expect(verified.check(against: live)?.code == .replay)
    }

    @Test func reorderedRecordsAreRejected() async throws {
        var log = try await Self.evidence().log
        log.events.swapAt(6, 7)
        let problems = Self.rejection(log)
        #expect(problems.map(\.code) == [.seq, .seq])
        #expect(problems.map(\.event) == [6, 7])
        #expect(problems.last?.reason == "seq 6 where 7 comes next: reordered")
    }

    @Test func aDuplicatedRecordIsRejected() async throws {
        var log = try await Self.evidence().log
        log.events.insert(log.events[3], at: 4)
        let problems = Self.rejection(log)
        #expect(problems.first?.code == .seq && problems.first?.event == 4)
        #expect(problems.first?.reason == "seq 3 again: a duplicated record")
    }

    @Test func aRecordMovedToAnotherPCRIsRejected() async throws {
        var log = try await Self.evidence().log
        log.events[8].pcrIndex = 16
        let problems = Self.rejection(log)
        #expect(problems.first?.code == .pcr && problems.first?.event == 8)
        #expect(problems.first?.reason == "seq 8 is extended into PCR 16 but its record says PCR 15: moved to another PCR")
    }

    @Test func oneBanksDigestChangedIsRejectedNamingTheBank() async throws {
        var log = try await Self.evidence().log
        let i = log.events[2].digests.firstIndex { $0.algorithm == .sha1 } ?? 0
        log.events[2].digests[i].bytes[0] ^= 0x01
        let problems = Self.rejection(log)
        #expect(problems.first?.code == .digest && problems.first?.event == 2)
        #expect(problems.first?.reason.hasPrefix("sha1 digest ") == true)
    }

    @Test func anEventTypeOtherReplaysWouldSkipIsRejected() async throws {
        var log = try await Self.evidence().log
        log.events[3].eventType = .noAction
        let problems = Self.rejection(log)
        #expect(problems.first?.code == .eventType && problems.first?.event == 3)
    }

    @Test func aRecordOfAnotherEpochIsRejected() async throws {
        var log = try await Self.evidence().log
        log.events[2] = try await Self.evidence().otherEpoch.events[2]
        let problems = Self.rejection(log)
        #expect(problems.first?.code == .epoch)
        #expect(problems.first?.reason == "seq 2 belongs to epoch 1, the log is epoch 0")
    }

    @Test func aLogWithoutItsEpochStartIsRejected() async throws {
        var log = try await Self.evidence().log
        log.events.removeFirst()
        let problems = Self.rejection(log)
        #expect(problems.contains { $0.code == .epochStart && $0.event == 0 })
        #expect(problems.contains { $0.code == .seq && $0.event == 0 })
    }

    @Test func theStartedFromStatedValuesEpochIsAcceptedButNotTrusted() async throws {
        let other = try await Self.evidence().otherEpoch
        let verified = try MeasurementLogVerifier.verify(other).get()
        #expect(verified.epoch == 1)
        guard case .stated(let values) = verified.start else { Issue.record("expected stated start values"); return }
        #expect(values[.sha256] != [UInt8](repeating: 0, count: 32))
        #expect(verified.untrustedPlatformReason?.hasPrefix("epoch 1 started from an unexplained PCR 15 state: epoch 0 was broken") == true)
    }
}
