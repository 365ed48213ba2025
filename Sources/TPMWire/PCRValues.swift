/// PCR values by bank and index: what a TPM read returns, what a PCR file holds, and what an
/// event-log replay produces. One type for all three so they compare directly.
public struct PCRValues: Hashable, Sendable {
    public private(set) var banks: [TPMAlgorithm: [Int: [UInt8]]]

    public init(_ banks: [TPMAlgorithm: [Int: [UInt8]]] = [:]) {
        self.banks = banks
    }

    public subscript(hash: TPMAlgorithm, pcr: Int) -> [UInt8]? {
        get { banks[hash]?[pcr] }
        set { banks[hash, default: [:]][pcr] = newValue }
    }

    /// The values in the order of `selection` (the order a quote's PCR digest uses);
    /// nil when one is missing.
    public func values(in selection: PCRSelection) -> [[UInt8]]? {
        var out: [[UInt8]] = []
        out.reserveCapacity(selection.count)
        for (hash, pcr) in selection.pairs {
            guard let v = self[hash, pcr] else { return nil }
            out.append(v)
        }
        return out
    }

    /// The selection these values cover, banks in algorithm order.
    public var selection: PCRSelection {
        PCRSelection(banks: banks.keys.sorted().map { PCRSelection.Bank(hash: $0, pcrs: Array(banks[$0]!.keys)) })
    }

    /// The value a PCR holds after a TPM reset: all zeros, except PCRs 17–22, which start at
    /// all ones (PC Client: they are reset only by a dynamic launch). PCR 0 may instead start
    /// at a locality value (see the event log's StartupLocality rule).
    public static func initialValue(pcr: Int, hash: TPMAlgorithm) -> [UInt8] {
        let size = hash.digestSize ?? 0
        return [UInt8](repeating: (17...22).contains(pcr) ? 0xff : 0x00, count: size)
    }
}
