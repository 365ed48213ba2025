/// What replaying an event log gives: the PCR values it predicts, per bank, and which PCRs it
/// accounts for. The quote check compares these with the quoted values.
public struct TCGReplay: Hashable, Sendable {
    /// Replayed values of the covered PCRs, for every bank of the header this verifier can hash.
    public var values: PCRValues
    /// The PCRs the log determines, per replayed bank: those it extends, and PCR 0 when a
    /// StartupLocality event sets its starting value.
    public var covered: PCRSelection
    /// Banks in the header that this verifier cannot hash (sm3_256, sha3_*, unknown): not replayed.
    public var unreplayedBanks: [TPMAlgorithm]
    /// The locality PCR 0 started at, when the log says (StartupLocality, or 4 after an H-CRTM event).
    public var startupLocality: UInt8?
    /// Number of TCG_PCR_EVENT2 records (the header not counted).
    public var eventCount: Int

    /// True when the log has events for `pcr` in `bank`.
    public func covers(pcr: Int, bank: TPMAlgorithm) -> Bool {
        values[bank, pcr] != nil
    }

    /// The value `pcr` held before the log's first event: PCRValues.initialValue, except PCR 0
    /// after a StartupLocality event (0…0L).
    public func initialValue(pcr: Int, bank: TPMAlgorithm) -> [UInt8] {
        var v = PCRValues.initialValue(pcr: pcr, hash: bank)
        if pcr == 0, let locality = startupLocality, let last = v.indices.last { v[last] = locality }
        return v
    }

    /// What the TPM should hold if the log is complete: the replayed value for covered PCRs,
    /// the initial value for the others; nil for a bank that was not replayed.
    public func expectedValue(pcr: Int, bank: TPMAlgorithm) -> [UInt8]? {
        guard covered.banks.contains(where: { $0.hash == bank }) else { return nil }
        return values[bank, pcr] ?? initialValue(pcr: pcr, bank: bank)
    }
}

extension TCGEventLog {
    /// Replays the log into PCR values per bank (rules in docs/event-log.md).
    public func replay() throws(WireError) -> TCGReplay {
        var replayer = PCRReplayer(header: header)
        for (index, event) in events.enumerated() {
            // Array.withUnsafeBytes only rethrows untyped errors: carry the WireError in a Result.
            let extends = try event.data.withUnsafeBytes { data in
                Result { () throws(WireError) in try replayer.begin(index: index, pcr: event.pcrIndex, type: event.eventType, data: data) }
            }.get()
            guard extends else { continue }
            for i in replayer.banks.indices {
                let bank = replayer.banks[i]
                // Events built in memory may break the table: an error, not a trap.
                guard let digest = event.digest(for: bank.algorithm), digest.count == bank.size else {
                    throw WireError(.invalidValue, "event \(index): no \(bank.size)-byte \(bank.algorithm.name) digest")
                }
                digest.withUnsafeBytes { replayer.banks[i].extend(pcr: event.pcrIndex, with: $0) }
            }
            replayer.extended(pcr: event.pcrIndex)
        }
        return replayer.result(eventCount: events.count)
    }

    /// Parses and replays a log in one pass, without building events: the fast path for a
    /// log that is only checked against PCR values. Accepts exactly the logs that
    /// `TCGEventLog(bytes:)` then `replay()` accepts, with the same result. Of several faults it
    /// reports the first in file order: a replay rule broken by an early event can come before
    /// a framing error further on, which `init(bytes:)` would report.
    public static func replay(bytes: [UInt8]) throws(WireError) -> TCGReplay {
        var scanner = try TCGEventScanner(bytes)
        var replayer = PCRReplayer(header: scanner.header)
        try bytes.withUnsafeBytes { raw in Result { () throws(WireError) in
            while try scanner.next() {
                let pcr = scanner.pcrIndex
                let data = UnsafeRawBufferPointer(rebasing: raw[scanner.dataOffset..<(scanner.dataOffset + scanner.dataCount)])
                guard try replayer.begin(index: scanner.index, pcr: pcr, type: scanner.eventType, data: data) else { continue }
                for i in replayer.banks.indices {
                    let start = scanner.digestOffsets[replayer.banks[i].tablePosition]
                    replayer.banks[i].extend(pcr: pcr, with: UnsafeRawBufferPointer(rebasing: raw[start..<(start + replayer.banks[i].size)]))
                }
                replayer.extended(pcr: pcr)
            }
        } }.get()
        return replayer.result(eventCount: scanner.index + 1)
    }
}

/// The replay rules, fed one event at a time by either the parsed log or the scanner.
struct PCRReplayer {
    /// One replayed bank: 24 PCRs of `size` bytes each, in one buffer.
    struct Bank {
        let algorithm: TPMAlgorithm
        let tablePosition: Int
        let size: Int
        var pcrs: [UInt8]

        @inline(__always)
        mutating func extend(pcr: Int, with digest: UnsafeRawBufferPointer) {
            let start = pcr * size
            let algorithm = self.algorithm
            pcrs.withUnsafeMutableBytes { all in
                algorithm.extend(UnsafeMutableRawBufferPointer(rebasing: all[start..<(start + size)]), with: digest)
            }
        }

        func value(_ pcr: Int) -> [UInt8] { Array(pcrs[(pcr * size)..<((pcr + 1) * size)]) }
    }

    static let startupLocalitySignature: [UInt8] = Array("StartupLocality".utf8) + [0]

    /// The banks being replayed; the caller extends each after `begin` says so.
    var banks: [Bank] = []
    private var unreplayed: [TPMAlgorithm] = []
    /// Bit n set: PCR n is covered (every event carries a digest for every bank).
    private var coveredMask: UInt32 = 0
    private var startupLocality: UInt8?
    private var startupEvent: Int?

    init(header: TCGSpecIDEvent) {
        let pcrCount = TCGEventScanner.pcrCount
        for (position, entry) in header.algorithms.enumerated() {
            guard entry.algorithm.isComputableHash, entry.algorithm.digestSize == entry.digestSize else {
                unreplayed.append(entry.algorithm)
                continue
            }
            var pcrs: [UInt8] = []
            pcrs.reserveCapacity(pcrCount * entry.digestSize)
            for pcr in 0..<pcrCount { pcrs += PCRValues.initialValue(pcr: pcr, hash: entry.algorithm) }
            banks.append(Bank(algorithm: entry.algorithm, tablePosition: position, size: entry.digestSize, pcrs: pcrs))
        }
    }

    /// Applies the rules to one event before its extend: true when the caller must extend
    /// every bank with the event's digest and then call `extended(pcr:)`.
    @inline(__always)
    mutating func begin(index: Int, pcr: Int, type: TCGEventType, data: UnsafeRawBufferPointer) throws(WireError) -> Bool {
        guard pcr >= 0, pcr < TCGEventScanner.pcrCount else {
            throw WireError(.invalidValue, "event \(index): pcrIndex \(pcr), a PC Client TPM has PCRs 0–\(TCGEventScanner.pcrCount - 1)")
        }
        if type == .noAction {
            if pcr == 0, data.starts(with: Self.startupLocalitySignature) {
                try setStartupLocality(index: index, data: data)
            }
            return false
        }
        if pcr == 0, type == .efiHCRTMEvent, coveredMask & 1 == 0 {
            // TPM 2.0 Library Part 1, 34.3: an H-CRTM sequence resets PCR 0 to 4 before its first extend.
            try setLocality(4, index: index, what: "EV_EFI_HCRTM_EVENT")
        }
        return true
    }

    /// Records that every bank of `pcr` was extended.
    @inline(__always)
    mutating func extended(pcr: Int) {
        coveredMask |= 1 << UInt32(pcr)
    }

    private mutating func setStartupLocality(index: Int, data: UnsafeRawBufferPointer) throws(WireError) {
        let expected = Self.startupLocalitySignature.count + 1
        guard data.count == expected else {
            throw WireError(.invalidValue, "event \(index): StartupLocality event data is \(data.count) bytes, expected \(expected)")
        }
        let locality = data[expected - 1]
        guard locality <= 4 else {
            throw WireError(.invalidValue, "event \(index): StartupLocality \(locality), localities are 0–4")
        }
        try setLocality(locality, index: index, what: "StartupLocality event")
    }

    private mutating func setLocality(_ locality: UInt8, index: Int, what: String) throws(WireError) {
        if let earlier = startupEvent {
            // The H-CRTM's locality 4 and a StartupLocality 4 event say the same thing.
            guard startupLocality == locality else {
                throw WireError(.invalidValue, "event \(index): \(what) sets PCR 0 to start at locality \(locality), event \(earlier) said \(startupLocality ?? 0)")
            }
            return
        }
        guard coveredMask & 1 == 0 else {
            throw WireError(.invalidValue, "event \(index): \(what) after PCR 0 was already extended")
        }
        startupLocality = locality
        startupEvent = index
        for i in banks.indices { banks[i].pcrs[banks[i].size - 1] = locality }
    }

    func result(eventCount: Int) -> TCGReplay {
        var covered = coveredMask
        if startupLocality != nil { covered |= 1 }
        let pcrs = (0..<TCGEventScanner.pcrCount).filter { covered & (1 << UInt32($0)) != 0 }
        var values = PCRValues()
        for bank in banks {
            for pcr in pcrs { values[bank.algorithm, pcr] = bank.value(pcr) }
        }
        return TCGReplay(
            values: values,
            covered: PCRSelection(banks: banks.map { PCRSelection.Bank(hash: $0.algorithm, pcrs: pcrs) }),
            unreplayedBanks: unreplayed,
            startupLocality: startupLocality,
            eventCount: eventCount)
    }
}
