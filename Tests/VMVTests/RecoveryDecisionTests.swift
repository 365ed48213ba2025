import Testing
import TPMWire
@testable import VMV

/// The recovery rules case by case, on a real store's open epoch and stated TPM answers.
@Suite struct RecoveryDecisionTests {
    static let zero: [TPMAlgorithm: [UInt8]] = [.sha1: [UInt8](repeating: 0, count: 20), .sha256: [UInt8](repeating: 0, count: 32)]
    static let foreign: [TPMAlgorithm: [UInt8]] = [.sha1: [UInt8](repeating: 0xAB, count: 20), .sha256: [UInt8](repeating: 0xCD, count: 32)]

    /// An open epoch of `records` records (reset count 3).
    static func openEpoch(_ records: Int) throws -> (LogStore, StateDirectory) {
        let state = try StateDirectory()
        let store = try LogStore.open(state.layout)
        try Fixture.startEpoch(store)
        if records > 0 { try Fixture.append(store, records) }
        return (store, state)
    }

    static func tpm(_ values: [TPMAlgorithm: [UInt8]], reset: UInt32 = 3, restart: UInt32 = 0) -> Recovery.TPMState {
        .init(clock: Fixture.clock(reset: reset, restart: restart), banks: Fixture.banks, values: values, openEpochPCRValues: nil)
    }

    @Test func logAndPCREqualGoesOn() throws {
        let (store, _state) = try Self.openEpoch(10)
        defer { store.close(); _ = _state }
        let open = try #require(store.openEpoch)
        let d = Recovery.decide(open: open, lastEnded: nil, pcr: 15, tpm: Self.tpm(open.chain.values))
        #expect(d == Recovery.Decision(end: nil, next: .proceed))
    }

    @Test(arguments: [1, 2, 7])
    func aPCRBehindByTheLastRecordsFinishesThem(_ behind: Int) throws {
        let (store, _state) = try Self.openEpoch(10)
        defer { store.close(); _ = _state }
        let open = try #require(store.openEpoch)
        let stoppedAt = open.tail[open.tail.count - behind].before.values
        let d = Recovery.decide(open: open, lastEnded: nil, pcr: 15, tpm: Self.tpm(stoppedAt))
        #expect(d == Recovery.Decision(end: nil, next: .finish(tailIndex: open.tail.count - behind)))
        #expect(open.tail[open.tail.count - behind].record.seq == UInt64(10 - behind))
    }

    @Test func anEmptyEpochWhoseStartRecordWasNotExtendedFinishesIt() throws {
        let (store, _state) = try Self.openEpoch(1)
        defer { store.close(); _ = _state }
        let open = try #require(store.openEpoch)
        let d = Recovery.decide(open: open, lastEnded: nil, pcr: 15, tpm: Self.tpm(Self.zero))
        #expect(d == Recovery.Decision(end: nil, next: .finish(tailIndex: 0)))
    }

    @Test func aPCRNoRecordExplainsClosesTheEpochAsBrokenAndStartsFromIt() throws {
        let (store, _state) = try Self.openEpoch(10)
        defer { store.close(); _ = _state }
        let open = try #require(store.openEpoch)
        let d = Recovery.decide(open: open, lastEnded: nil, pcr: 15, tpm: Self.tpm(Self.foreign))
        #expect(d.end?.state == .broken)
        let reason = try #require(d.end?.reason)
        #expect(reason.hasPrefix("PCR 15 does not match epoch 0's log (10 records) in sha1, sha256"))
        #expect(reason.contains("sha256: log replays to \(Hex.encode(open.chain.values[.sha256] ?? [])), TPM holds \(String(repeating: "cd", count: 32))"))
        guard case .start(let next) = d.next else { Issue.record("expected a new epoch, got \(d.next)"); return }
        #expect(next.startPCRs == Self.foreign)
        #expect(next.reason.hasPrefix("epoch 0 was broken ("))
    }

    @Test func aTPMResetEndsTheEpochAndStartsAFreshOne() throws {
        let (store, _state) = try Self.openEpoch(4)
        defer { store.close(); _ = _state }
        let open = try #require(store.openEpoch)
        let d = Recovery.decide(open: open, lastEnded: nil, pcr: 15, tpm: Self.tpm(Self.zero, reset: 4))
        #expect(d.end?.state == .reset)
        #expect(d.end?.reason == "TPM reset: resetCount 3 → 4")
        #expect(d.next == .start(.init(reason: "TPM reset: resetCount 3 → 4, after epoch 0", startPCRs: nil)))

        // After a reset, a PCR that already holds something is someone else's.
        let refused = Recovery.decide(open: open, lastEnded: nil, pcr: 15, tpm: Self.tpm(Self.foreign, reset: 4))
        #expect(refused.end?.state == .reset)
        guard case .refuse(let message) = refused.next else { Issue.record("expected a refusal"); return }
        #expect(message.hasPrefix("PCR 15 holds sha1:\(String(repeating: "ab", count: 20)) but the VMV log for this TPM boot is empty: something else extends PCR 15; set `pcr = N`"))
    }

    @Test func aTPMRestartThatClearedThePCREndsTheEpoch() throws {
        let (store, _state) = try Self.openEpoch(4)
        defer { store.close(); _ = _state }
        let open = try #require(store.openEpoch)
        let d = Recovery.decide(open: open, lastEnded: nil, pcr: 15, tpm: Self.tpm(Self.zero, restart: 1))
        #expect(d.end?.state == .reset)
        #expect(d.end?.reason.hasPrefix("TPM restart: restartCount 0 → 1") == true)
    }

    @Test func aFreshStateStartsOnlyOnAPCRAtItsResetValue() throws {
        #expect(Recovery.decide(open: nil, lastEnded: nil, pcr: 15, tpm: Self.tpm(Self.zero))
                == Recovery.Decision(end: nil, next: .start(.init(reason: "first epoch in this state directory", startPCRs: nil))))
        let refused = Recovery.decide(open: nil, lastEnded: nil, pcr: 16, tpm: Self.tpm(Self.foreign))
        guard case .refuse(let message) = refused.next else { Issue.record("expected a refusal"); return }
        #expect(message.contains("something else extends PCR 16; set `pcr = N` in the VMV configuration to a PCR no other component uses"))
    }

    @Test func aBrokenEpochEndedBeforeItsSuccessorStartedIsFollowedFromThePCRAsFound() throws {
        let (store, _state) = try Self.openEpoch(4)
        defer { store.close(); _ = _state }
        try store.endEpoch(.broken, reason: "because")
        let last = try #require(store.lastEnded)
        let d = Recovery.decide(open: nil, lastEnded: last, pcr: 15, tpm: Self.tpm(Self.foreign))
        #expect(d.next == .start(.init(reason: "epoch 0 was broken (because); this epoch starts from the PCR value as found", startPCRs: Self.foreign)))
        // On another boot the same PCR value is someone else's.
        guard case .refuse = Recovery.decide(open: nil, lastEnded: last, pcr: 15, tpm: Self.tpm(Self.foreign, reset: 9)).next else {
            Issue.record("expected a refusal"); return
        }
    }

    @Test func aChangedPCRClosesTheEpochCleanlyWhenItStillReplayed() throws {
        let (store, _state) = try Self.openEpoch(4)
        defer { store.close(); _ = _state }
        let open = try #require(store.openEpoch)
        var tpm = Self.tpm(Self.zero)
        tpm.openEpochPCRValues = open.chain.values
        let d = Recovery.decide(open: open, lastEnded: nil, pcr: 16, tpm: tpm)
        #expect(d.end?.state == .closed)
        #expect(d.end?.reason == "the configured PCR changed from 15 to 16")
        tpm.openEpochPCRValues = Self.foreign
        #expect(Recovery.decide(open: open, lastEnded: nil, pcr: 16, tpm: tpm).end?.state == .broken)
    }
}
