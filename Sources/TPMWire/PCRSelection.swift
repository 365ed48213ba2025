/// TPML_PCR_SELECTION: which PCRs of which banks.
///
/// Banks keep their wire order (the PCR digest of a quote is computed in that order) and
/// their `sizeofSelect`, so parse → serialise is byte-exact. Equality for policy purposes is
/// `isSameSelection(as:)`, which compares the set of (bank, PCR) pairs.
public struct PCRSelection: Hashable, Sendable, TPMWireCodable, CustomStringConvertible {
    public struct Bank: Hashable, Sendable {
        public var hash: TPMAlgorithm
        /// Selected PCR indices, ascending, without repeats.
        public var pcrs: [Int]
        /// Bytes in the selection bitmap (3 for the 24 PCRs of a PC Client TPM).
        public var sizeOfSelect: UInt8

        public init(hash: TPMAlgorithm, pcrs: [Int], sizeOfSelect: UInt8 = 3) {
            let sorted = Array(Set(pcrs)).sorted()
            self.hash = hash
            self.pcrs = sorted
            // wide enough for the highest PCR; an empty bank keeps its size, even 0, so that
            // a parsed selection serialises to the same bytes
            self.sizeOfSelect = sorted.last.map { max(sizeOfSelect, UInt8(clamping: $0 / 8 + 1)) } ?? sizeOfSelect
        }
    }

    /// TPM2_NUM_PCR_BANKS in tpm2-tss: the most banks a TPML_PCR_SELECTION can carry.
    public static let maxBanks = 16
    /// TPM2_PCR_SELECT_MAX in tpm2-tss: bitmap bytes for up to 32 PCRs (real TPMs use 3).
    /// tpm2-tss refuses larger selections, and tpm2-tools' PCR files have room for no more.
    public static let maxSizeOfSelect = 4
    /// The PC Client TPM has 24 PCRs; `all` in a PCR list means these.
    public static let pcClientPCRCount = 24

    public var banks: [Bank]

    public init(banks: [Bank]) {
        self.banks = banks
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let count = try reader.readUInt32("TPML_PCR_SELECTION.count")
        guard count <= UInt32(Self.maxBanks) else {
            throw WireError(.countTooLarge, "TPML_PCR_SELECTION.count: \(count) banks, at most \(Self.maxBanks) allowed")
        }
        var banks: [Bank] = []
        banks.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            let field = "TPML_PCR_SELECTION.pcrSelections[\(i)]"
            let hash = try TPMAlgorithm.readHash(&reader, "\(field).hash")
            let size = try reader.readUInt8("\(field).sizeofSelect")
            guard Int(size) <= Self.maxSizeOfSelect else {
                throw WireError(.sizeTooLarge, "\(field).sizeofSelect: \(size) exceeds \(Self.maxSizeOfSelect)")
            }
            let bitmap = try reader.readBytes(Int(size), "\(field).pcrSelect")
            var pcrs: [Int] = []
            for (byteIndex, byte) in bitmap.enumerated() where byte != 0 {
                for bit in 0..<8 where byte & (1 << bit) != 0 { pcrs.append(byteIndex * 8 + bit) }
            }
            banks.append(Bank(hash: hash, pcrs: pcrs, sizeOfSelect: size))
        }
        self.banks = banks
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(UInt32(banks.count))
        for bank in banks {
            writer.write(bank.hash.rawValue)
            writer.write(bank.sizeOfSelect)
            var bitmap = [UInt8](repeating: 0, count: Int(bank.sizeOfSelect))
            for pcr in bank.pcrs { bitmap[pcr / 8] |= 1 << UInt8(pcr % 8) }
            writer.write(bytes: bitmap)
        }
    }

    /// Every selected (bank, PCR) pair, in wire order: the order of a quote's PCR digest and
    /// of the values tpm2-tools writes.
    public var pairs: [(hash: TPMAlgorithm, pcr: Int)] {
        banks.flatMap { bank in bank.pcrs.map { (bank.hash, $0) } }
    }

    /// The number of PCR values the selection names.
    public var count: Int { banks.reduce(0) { $0 + $1.pcrs.count } }

    /// The selection as a set of PCRs per bank (banks named twice are merged).
    public var pcrsByBank: [TPMAlgorithm: Set<Int>] {
        var result: [TPMAlgorithm: Set<Int>] = [:]
        for bank in banks where !bank.pcrs.isEmpty { result[bank.hash, default: []].formUnion(bank.pcrs) }
        return result
    }

    /// True when both select exactly the same (bank, PCR) pairs, whatever the bank order,
    /// bitmap size, or empty banks.
    public func isSameSelection(as other: PCRSelection) -> Bool {
        // Bitmasks per bank (a quote check's hot path); sets only for PCRs beyond 63, which
        // no wire selection can hold.
        guard let mine = masksByBank, let theirs = other.masksByBank else { return pcrsByBank == other.pcrsByBank }
        return mine == theirs
    }

    /// (bank, bitmask of PCRs) for the non-empty banks, banks merged and sorted; nil if a PCR
    /// index does not fit in 64 bits.
    private var masksByBank: [UInt64]? {
        var masks: [(UInt16, UInt64)] = []
        masks.reserveCapacity(banks.count)
        for bank in banks {
            var mask: UInt64 = 0
            for pcr in bank.pcrs {
                guard (0..<64).contains(pcr) else { return nil }
                mask |= 1 << UInt64(pcr)
            }
            guard mask != 0 else { continue }
            if let i = masks.firstIndex(where: { $0.0 == bank.hash.rawValue }) { masks[i].1 |= mask } else { masks.append((bank.hash.rawValue, mask)) }
        }
        return masks.sorted { $0.0 < $1.0 }.flatMap { [UInt64($0.0), $0.1] }
    }

    /// Parses tpm2-tools PCR list syntax: `sha256:0,1,15`, `sha1:0+sha256:0,15`, `sha256:all`.
    public init(parsing spec: String) throws(WireError) {
        let trimmed = spec.trimmingCharacters(in: " \t\n")
        guard !trimmed.isEmpty else { throw WireError(.syntax, "PCR list is empty") }
        var banks: [Bank] = []
        for part in trimmed.split(separator: "+", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            guard pieces.count == 2 else {
                throw WireError(.syntax, "PCR list '\(spec)': '\(part)' is not of the form BANK:PCR[,PCR…]")
            }
            guard let hash = TPMAlgorithm(name: String(pieces[0])), hash.isHash else {
                throw WireError(.unknownAlgorithm, "PCR list '\(spec)': '\(pieces[0])' is not a hash algorithm")
            }
            guard !banks.contains(where: { $0.hash == hash }) else {
                throw WireError(.syntax, "PCR list '\(spec)': bank \(hash.name) is named twice")
            }
            var pcrs: [Int] = []
            if pieces[1] == "all" {
                pcrs = Array(0..<Self.pcClientPCRCount)
            } else {
                for item in pieces[1].split(separator: ",", omittingEmptySubsequences: false) {
                    guard let pcr = Self.parsePCRIndex(item) else {
                        throw WireError(.syntax, "PCR list '\(spec)': '\(item)' is not a PCR index (0–\(Self.maxSizeOfSelect * 8 - 1))")
                    }
                    pcrs.append(pcr)
                }
            }
            banks.append(Bank(hash: hash, pcrs: pcrs))
        }
        self.banks = banks
    }

    private static func parsePCRIndex(_ s: Substring) -> Int? {
        let text = s.trimmingCharacters(in: " ")
        let value: Int?
        if text.lowercased().hasPrefix("0x") { value = Int(text.dropFirst(2), radix: 16) } else { value = Int(text) }
        guard let v = value, v >= 0, v < maxSizeOfSelect * 8 else { return nil }
        return v
    }

    /// tpm2-tools syntax, for messages and round trips.
    public var description: String {
        banks.map { "\($0.hash.name):" + $0.pcrs.map(String.init).joined(separator: ",") }.joined(separator: "+")
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
