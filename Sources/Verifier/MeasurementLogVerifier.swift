import TPMWire

/// Why a VMV measurement log (one epoch) is not accepted: every problem found, each naming
/// the event (its position in the log, from 0) and what is wrong with it.
public struct MeasurementLogProblem: Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Hashable, Sendable {
        /// The log holds no event.
        case empty
        /// An event's digest in some bank is not the hash of its data.
        case digest
        /// The event data is not a VMV event record (version 1).
        case record
        /// The event extends another PCR than its record says, or than the log's.
        case pcr
        /// The event type is not EV_EVENT_TAG (types are not covered by digests, so a VMV log
        /// allows exactly one: an EV_NO_ACTION here would be skipped by other replays).
        case eventType
        /// seq is not 0, 1, 2, …: a record dropped, duplicated or reordered.
        case seq
        /// A record of another epoch.
        case epoch
        /// The first record is not an epochStart, or an epochStart comes later.
        case epochStart
        /// The replay does not give the PCR values it was compared with.
        case replay
    }

    public let code: Code
    /// The event's position in the log; nil for problems of the whole log.
    public let event: Int?
    public let reason: String

    public init(_ code: Code, event: Int?, _ reason: String) {
        self.code = code
        self.event = event
        self.reason = reason
    }

    public var description: String { event.map { "event \($0): \(reason)" } ?? reason }
}

/// The rejection of a log: the problems, in log order.
public struct MeasurementLogRejection: Error, Hashable, Sendable, CustomStringConvertible {
    public let problems: [MeasurementLogProblem]
    public var description: String { problems.map(\.description).joined(separator: "; ") }
}

/// A VMV measurement log that passed every check: only these records may reach appraisal.
public struct VerifiedMeasurementLog: Sendable {
    public struct Entry: Sendable, Hashable {
        public let record: VMVEventRecord
        /// What the PCR was extended with, per bank (each the hash of the record's bytes).
        public let digests: [TCGDigest]
    }

    /// Where the epoch's replay starts.
    public enum Start: Sendable, Hashable {
        /// The PCR's reset value: the log explains the PCR from the TPM's reset on.
        case resetValue
        /// Values the epochStart record states, which no log explains (after a broken epoch).
        case stated([TPMAlgorithm: [UInt8]])
    }

    public let epoch: UInt32
    public let pcr: Int
    public let start: Start
    public let entries: [Entry]
    /// The replayed value of the PCR in every bank of the log.
    public let replayed: [TPMAlgorithm: [UInt8]]

    /// The epochStart record (the first entry).
    public var epochStart: VMVEventRecord.EpochStart? { entries.first?.record.epochStart }

    /// Set when the platform cannot be trusted on this epoch alone: it started from a PCR
    /// value the log cannot explain ("epoch N started from an unexplained PCR state: …"),
    /// until a TPM reset starts a clean epoch.
    public var untrustedPlatformReason: String? {
        guard case .stated = start else { return nil }
        return "epoch \(epoch) started from an unexplained PCR \(pcr) state: \(epochStart?.reason ?? "no reason given")"
    }

    /// Compares the replay with PCR values from a quote (or a PCR file): every bank of `values`
    /// that holds this PCR must equal the replay. Nil when they agree, else the problem.
    public func check(against values: PCRValues) -> MeasurementLogProblem? {
        let banks = values.banks.keys.filter { values[$0, pcr] != nil }.sorted()
        guard !banks.isEmpty else {
            return MeasurementLogProblem(.replay, event: nil, "the values given have no PCR \(pcr)")
        }
        var differences: [String] = []
        for bank in banks {
            guard let replay = replayed[bank] else {
                differences.append("\(bank.name): the log has no \(bank.name) digests")
                continue
            }
            if replay != values[bank, pcr] {
                differences.append("\(bank.name): the log replays to \(Hex.encode(replay)), the PCR holds \(Hex.encode(values[bank, pcr] ?? []))")
            }
        }
        guard differences.isEmpty else {
            return MeasurementLogProblem(.replay, event: nil, "PCR \(pcr) does not match the log (epoch \(epoch), \(entries.count) records): " + differences.joined(separator: "; "))
        }
        return nil
    }
}

/// Checks one epoch's VMV measurement log, go-attestation style: the log is parsed first
/// (`TCGEventLog(bytes:)`), then each event is checked — its digest in every bank must be the
/// hash of its data, and only then is the data parsed as a VMV record, which must name the
/// event's PCR, carry the next seq and the log's epoch — and then the records are replayed
/// onto the epoch's start values. Nothing is returned unless every event passes; the caller
/// compares the replay with quoted values (`VerifiedMeasurementLog.check(against:)`).
public enum MeasurementLogVerifier {
    /// - Parameters:
    ///   - epoch: the epoch the log must be (for instance the one the VMV says it serves).
    ///   - pcr: the PCR the log must be for.
    public static func verify(_ log: TCGEventLog, epoch expectedEpoch: UInt32? = nil, pcr expectedPCR: Int? = nil)
        -> Result<VerifiedMeasurementLog, MeasurementLogRejection>
    {
        var problems: [MeasurementLogProblem] = []
        guard !log.events.isEmpty else {
            return .failure(MeasurementLogRejection(problems: [MeasurementLogProblem(.empty, event: nil, "the log has no events")]))
        }
        var entries: [VerifiedMeasurementLog.Entry] = []
        var logPCR = expectedPCR
        var logEpoch = expectedEpoch
        var seen = Set<UInt64>()
        for (i, event) in log.events.enumerated() {
            func problem(_ code: MeasurementLogProblem.Code, _ reason: String) {
                problems.append(MeasurementLogProblem(code, event: i, reason))
            }
            do {
                try VMVEventRecord.checkDigests(of: event)
            } catch {
                problem(.digest, error.reason)
                continue
            }
            let record: VMVEventRecord
            do {
                record = try VMVEventRecord(wireBytes: event.data)
            } catch {
                problem(.record, "the data is not a VMV event record: \(error.reason)")
                continue
            }
            var ok = true
            if event.eventType != .eventTag {
                problem(.eventType, "event type \(event.eventType.name): a VMV log has only EV_EVENT_TAG events")
                ok = false
            }
            if Int(record.pcr) != event.pcrIndex {
                problem(.pcr, "seq \(record.seq) is extended into PCR \(event.pcrIndex) but its record says PCR \(record.pcr): moved to another PCR")
                ok = false
            } else if let p = logPCR, p != event.pcrIndex {
                problem(.pcr, "seq \(record.seq) is for PCR \(event.pcrIndex), the log is for PCR \(p)")
                ok = false
            }
            if logPCR == nil { logPCR = event.pcrIndex }
            if let e = logEpoch, record.epoch != e {
                problem(.epoch, "seq \(record.seq) belongs to epoch \(record.epoch), the log is epoch \(e)")
                ok = false
            }
            if logEpoch == nil { logEpoch = record.epoch }
            if record.seq != UInt64(i) {
                let what: String
                if seen.contains(record.seq) {
                    what = "seq \(record.seq) again: a duplicated record"
                } else if record.seq > UInt64(i) {
                    what = "seq \(record.seq) where \(i) comes next: record\(record.seq - UInt64(i) > 1 ? "s" : "") \(i)\(record.seq - UInt64(i) > 1 ? "–\(record.seq - 1)" : "") missing (dropped or reordered)"
                } else {
                    what = "seq \(record.seq) where \(i) comes next: reordered"
                }
                problem(.seq, what)
                ok = false
            }
            seen.insert(record.seq)
            if (i == 0) != (record.kind == .epochStart) {
                problem(.epochStart, i == 0 ? "the first record is a \(record.kind.name), an epoch starts with an epochStart record"
                                            : "an epochStart record at seq \(record.seq), only the first record may be one")
                ok = false
            }
            if ok { entries.append(.init(record: record, digests: event.digests)) }
        }
        guard problems.isEmpty, let first = entries.first, let pcr = logPCR else {
            return .failure(MeasurementLogRejection(problems: problems))
        }

        // Replay onto the start values: the stated ones, or the PCR's reset value.
        let banks = log.header.banks
        var start: VerifiedMeasurementLog.Start = .resetValue
        var chain = PCRChain(initialFor: pcr, banks: banks)
        if let stated = first.record.epochStart?.startPCRs, !stated.isEmpty {
            let values = Dictionary(stated.map { ($0.algorithm, $0.bytes) }, uniquingKeysWith: { a, _ in a })
            guard Set(values.keys) == Set(banks) else {
                return .failure(MeasurementLogRejection(problems: [MeasurementLogProblem(.epochStart, event: 0,
                    "the epochStart record states PCR values for \(stated.map(\.algorithm.name)), the log's banks are \(banks.map(\.name))")]))
            }
            start = .stated(values)
            chain = PCRChain(start: values)
        }
        for (i, event) in log.events.enumerated() {
            do {
                try chain.extend(with: event)
            } catch {
                return .failure(MeasurementLogRejection(problems: [MeasurementLogProblem(.replay, event: i, error.reason)]))
            }
        }
        return .success(VerifiedMeasurementLog(epoch: first.record.epoch, pcr: pcr, start: start, entries: entries, replayed: chain.values))
    }
}
