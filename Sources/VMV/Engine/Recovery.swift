import TPMWire

/// What recovery found on start and what it did, for the daemon's log and for operators.
public struct RecoveryReport: Sendable, Hashable, CustomStringConvertible {
    public enum Outcome: Sendable, Hashable {
        /// The log replayed to the PCR: appending goes on.
        case continued
        /// The PCR was `count` extends behind the log (a crash between fsync and extend): the
        /// records from seq `first` were extended now, once each.
        case finishedExtends(first: UInt64, count: Int)
        /// A new epoch was started (see `ended` for the one before, if it was open).
        case newEpoch
    }

    public struct Ended: Sendable, Hashable {
        public var epoch: UInt32
        public var state: EpochManifest.State
        public var reason: String
    }

    public var outcome: Outcome
    /// The epoch appended to from now on, and its records after recovery.
    public var epoch: UInt32
    public var records: UInt64
    /// The epoch recovery ended, and why.
    public var ended: Ended?
    /// What the store repaired on open (torn tails cut).
    public var repairs: [String]

    public var description: String {
        var parts: [String] = []
        switch outcome {
        case .continued: parts.append("log and PCR agree: epoch \(epoch) goes on at seq \(records)")
        case .finishedExtends(let first, let count):
            parts.append("the PCR was \(count) extend\(count == 1 ? "" : "s") behind the log: extended seq \(first)\(count > 1 ? "–\(first + UInt64(count) - 1)" : "") of epoch \(epoch) now")
        case .newEpoch: parts.append("started epoch \(epoch)")
        }
        if let ended { parts.append("epoch \(ended.epoch) \(ended.state == .broken ? "closed as broken" : ended.state == .reset ? "ended by a TPM reset" : "closed"): \(ended.reason)") }
        parts += repairs
        return parts.joined(separator: "; ")
    }
}

/// The recovery rules (docs/measurement-log.md, "Recovery"), as a pure function of what the
/// store holds and what the TPM says, so that every case can be tested on its own.
enum Recovery {
    struct NewEpoch: Equatable {
        var reason: String
        /// The values the epoch starts from when the log cannot explain them; nil = reset values.
        var startPCRs: [TPMAlgorithm: [UInt8]]?
    }

    enum Next: Equatable {
        /// The open epoch goes on as it is.
        case proceed
        /// Extend the open epoch's `tail[index...]`: the PCR stopped before `tail[index]`.
        case finish(tailIndex: Int)
        case start(NewEpoch)
        /// Do not start: the message says why and what to configure.
        case refuse(String)
    }

    struct Decision: Equatable {
        /// End the open epoch first, in this state, for this reason.
        var end: (state: EpochManifest.State, reason: String)?
        var next: Next

        static func == (a: Decision, b: Decision) -> Bool {
            a.end?.state == b.end?.state && a.end?.reason == b.end?.reason && a.next == b.next
        }
    }

    /// What the TPM says.
    struct TPMState {
        var clock: TPMSClockInfo
        /// The allocated banks (the ones every extend covers).
        var banks: [TPMAlgorithm]
        /// The configured PCR's value in every allocated bank.
        var values: [TPMAlgorithm: [UInt8]]
        /// The open epoch's PCR, when the configuration now names another one.
        var openEpochPCRValues: [TPMAlgorithm: [UInt8]]?
    }

    static func decide(open: LogStore.OpenEpoch?, lastEnded: EpochManifest?, pcr: Int, tpm: TPMState) -> Decision {
        let initial = Dictionary(uniqueKeysWithValues: tpm.banks.map { ($0, PCRValues.initialValue(pcr: pcr, hash: $0)) })
        let atInitial = tpm.values == initial

        /// A new epoch whose log starts empty: the PCR must be at its reset value.
        func fresh(_ reason: String) -> Next {
            guard atInitial else { return .refuse(foreign(pcr: pcr, values: tpm.values, initial: initial)) }
            return .start(NewEpoch(reason: reason, startPCRs: nil))
        }
        /// A new epoch after a broken one, on the same TPM boot: from the values as they are.
        func fromHere(_ reason: String) -> Next {
            .start(NewEpoch(reason: reason, startPCRs: atInitial ? nil : tpm.values))
        }

        guard let open else {
            if let last = lastEnded, last.state == .broken, (last.endResetCount ?? last.resetCount) == tpm.clock.resetCount, last.pcr == pcr {
                // Ended as broken on this boot, then stopped before the next epoch began.
                return Decision(end: nil, next: fromHere(brokenStart(last.epoch, last.endReason ?? "")))
            }
            let reason = lastEnded.map { "after epoch \($0.epoch) (\($0.state.rawValue))" } ?? "first epoch in this state directory"
            return Decision(end: nil, next: fresh(reason))
        }
        let m = open.manifest
        if tpm.clock.resetCount != m.resetCount {
            let why = "TPM reset: resetCount \(m.resetCount) → \(tpm.clock.resetCount)"
            return Decision(end: (.reset, why), next: fresh("\(why), after epoch \(m.epoch)"))
        }
        if m.pcr != pcr {
            let agrees = tpm.openEpochPCRValues == open.chain.values
            let why = "the configured PCR changed from \(m.pcr) to \(pcr)"
            return Decision(end: (agrees ? .closed : .broken, agrees ? why : "\(why), and PCR \(m.pcr) no longer matched the log"),
                            next: fresh("\(why), after epoch \(m.epoch)"))
        }
        if Set(m.bankAlgorithms) != Set(tpm.banks) {
            let why = "the allocated banks changed from \(m.banks.joined(separator: ",")) to \(tpm.banks.map(\.name).joined(separator: ","))"
            return Decision(end: (.broken, why), next: fromHere(brokenStart(m.epoch, why)))
        }
        if let damage = open.damage {
            let why = "its log is damaged: \(damage)"
            return Decision(end: (.broken, why), next: fromHere(brokenStart(m.epoch, why)))
        }
        if tpm.values == open.chain.values {
            return Decision(end: nil, next: .proceed)
        }
        // A restart (Shutdown(STATE) + Startup(CLEAR)) clears the PCR without a reset; the
        // log's start value then says nothing about records left unextended.
        if atInitial && tpm.clock.restartCount != m.restartCount {
            let why = "TPM restart: restartCount \(m.restartCount) → \(tpm.clock.restartCount) cleared PCR \(pcr)"
            return Decision(end: (.reset, why), next: fresh("\(why), after epoch \(m.epoch)"))
        }
        if let index = open.tail.firstIndex(where: { $0.before.values == tpm.values }) {
            return Decision(end: nil, next: .finish(tailIndex: index))
        }
        let why = divergence(pcr: pcr, log: open.chain.values, tpm: tpm.values, records: open.count, epoch: m.epoch)
        return Decision(end: (.broken, why), next: fromHere(brokenStart(m.epoch, why)))
    }

    static func brokenStart(_ epoch: UInt32, _ why: String) -> String {
        "epoch \(epoch) was broken (\(why)); this epoch starts from the PCR value as found"
    }

    /// "PCR 15 does not match epoch 3's log (120 records) in sha256: log aa…, TPM bb…; sha1 …"
    static func divergence(pcr: Int, log: [TPMAlgorithm: [UInt8]], tpm: [TPMAlgorithm: [UInt8]], records: UInt64, epoch: UInt32) -> String {
        let banks = Set(log.keys).union(tpm.keys).sorted().filter { log[$0] != tpm[$0] }
        let detail = banks.map { "\($0.name): log replays to \(Hex.encode(log[$0] ?? [])), TPM holds \(Hex.encode(tpm[$0] ?? []))" }
        return "PCR \(pcr) does not match epoch \(epoch)'s log (\(records) records) in \(banks.map(\.name).joined(separator: ", ")), "
            + "and no record near its end explains it: something else extended PCR \(pcr), or records were lost; "
            + detail.joined(separator: "; ")
    }

    /// The refusal for a PCR that holds a value on a fresh epoch.
    static func foreign(pcr: Int, values: [TPMAlgorithm: [UInt8]], initial: [TPMAlgorithm: [UInt8]]) -> String {
        let bank = values.keys.sorted().first { values[$0] != initial[$0] } ?? .sha256
        return "PCR \(pcr) holds \(bank.name):\(Hex.encode(values[bank] ?? [])) but the VMV log for this TPM boot is empty: "
            + "something else extends PCR \(pcr); set `pcr = N` in the VMV configuration to a PCR no other component uses "
            + "(tpm2_pcrread and the firmware and IMA event logs show which are in use), or restart the TPM (reboot) to begin a clean epoch"
    }
}
