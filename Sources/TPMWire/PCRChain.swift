/// One PCR's value in several banks as events extend it, from a given start.
///
/// `TCGEventLog.replay()` replays whole logs from the reset values; this is for a log of one
/// PCR stepped record by record: the VMV's log store tracks its PCR with it, and a verifier
/// replays an epoch that starts from values its epochStart record states.
public struct PCRChain: Hashable, Sendable {
    public private(set) var values: [TPMAlgorithm: [UInt8]]

    /// Starts at `values` (one per bank, each of its bank's digest size).
    public init(start values: [TPMAlgorithm: [UInt8]]) {
        self.values = values
    }

    /// Starts at the reset value of `pcr` in each bank.
    public init(initialFor pcr: Int, banks: [TPMAlgorithm]) {
        values = Dictionary(uniqueKeysWithValues: banks.map { ($0, PCRValues.initialValue(pcr: pcr, hash: $0)) })
    }

    public var banks: [TPMAlgorithm] { values.keys.sorted() }

    /// PCR = H(PCR ‖ digest) in every bank, with the event's digest for that bank. The event
    /// must carry one for each bank of the chain; an error leaves the chain unchanged.
    public mutating func extend(with event: TCGEvent) throws(WireError) {
        var next = values
        for (bank, value) in values {
            guard let digest = event.digest(for: bank) else {
                throw WireError(.invalidValue, "event for PCR \(event.pcrIndex): no \(bank.name) digest")
            }
            guard let extended = bank.extend(value, with: digest) else {
                throw WireError(.invalidValue, "event for PCR \(event.pcrIndex): the \(bank.name) digest is \(digest.count) bytes, or \(bank.name) cannot be computed here")
            }
            next[bank] = extended
        }
        values = next
    }

    /// The banks in which `other` holds a different value (a bank missing on either side counts).
    public func differingBanks(from other: [TPMAlgorithm: [UInt8]]) -> [TPMAlgorithm] {
        Set(values.keys).union(other.keys).sorted().filter { values[$0] != other[$0] }
    }
}
