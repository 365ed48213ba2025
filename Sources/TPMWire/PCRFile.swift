/// The PCR files of tpm2-tools: what `tpm2_quote -o FILE -F FORMAT` (and `tpm2_pcrread -o`)
/// writes and `tpm2_checkquote -f FILE` reads.
///
/// - `serialized` (the default): a dump of tpm2-tools' C structures, little-endian: a
///   TPML_PCR_SELECTION (132 bytes: count, then 16 slots of {hash, sizeofSelect, pcrSelect[4],
///   one pad byte}), a UINT32 count of digest lists, then that many TPML_DIGEST (532 bytes each:
///   count, then 8 slots of {size, buffer[64]}). Only the counted slots mean anything.
/// - `marshaled` (tpm2-tools 5.8 and later): the same content in TPM wire encoding
///   (big-endian, no padding): TPML_PCR_SELECTION, UINT32 count, that many TPML_DIGEST.
/// - `values`: the selected PCR values, concatenated in selection order, nothing else; the
///   selection comes from the command line (`-l`).
///
/// In all three the values follow the selection's order: banks as listed, PCRs ascending.
public enum PCRFileFormat: String, CaseIterable, Sendable {
    case serialized
    case marshaled
    case values
}

public struct PCRFile: Hashable, Sendable {
    /// The selection the file describes (for `values`, the one it was read with).
    public var selection: PCRSelection
    public var values: PCRValues

    /// Bytes of TPML_PCR_SELECTION in tpm2-tss' C layout.
    static let serializedSelectionSize = 4 + PCRSelection.maxBanks * 8
    /// Bytes of TPML_DIGEST in tpm2-tss' C layout.
    static let serializedDigestListSize = 4 + TPMLDigest.maxCount * (2 + TPMAlgorithm.maxDigestSize)
    /// tpm2-tools' `tpm2_pcrs` holds at most TPM2_MAX_PCRS digest lists.
    public static let maxDigestLists = 32

    public init(selection: PCRSelection, values: PCRValues) {
        self.selection = selection
        self.values = values
    }

    /// Parses a PCR file. `selection` is required for `values` (the file has none) and ignored
    /// otherwise: the file's own selection is what it describes.
    public init(bytes: [UInt8], format: PCRFileFormat, selection: PCRSelection? = nil) throws(WireError) {
        switch format {
        case .values:
            guard let selection else {
                throw WireError(.invalidValue, "PCR values file: a PCR selection is needed to read it")
            }
            try Self.checkBanks(selection, "PCR values file")
            var reader = ByteReader(bytes)
            var digests: [[UInt8]] = []
            for (hash, pcr) in selection.pairs {
                // checkBanks guarantees a digest size for every bank
                digests.append(try reader.readBytes(hash.digestSize ?? 0, "PCR values file: \(hash.name) PCR \(pcr)"))
            }
            try reader.expectEnd("PCR values file for \(selection)")
            self = try Self(selection: selection, digests: digests, "PCR values file")
        case .serialized:
            var reader = ByteReader(bytes)
            let selection = try Self.readSerializedSelection(&reader)
            let listCount = try reader.readUInt32LE("PCR file (serialized): digest list count")
            guard listCount <= UInt32(Self.maxDigestLists) else {
                throw WireError(.countTooLarge, "PCR file (serialized): \(listCount) digest lists, at most \(Self.maxDigestLists) allowed")
            }
            var digests: [[UInt8]] = []
            for l in 0..<Int(listCount) {
                // field names are built only when an error needs them: parsing is a hot path
                let field = { "PCR file (serialized): TPML_DIGEST[\(l)]" }
                var list = try reader.subReader(Self.serializedDigestListSize, field())
                let count = try list.readUInt32LE("\(field()).count")
                guard count <= UInt32(TPMLDigest.maxCount) else {
                    throw WireError(.countTooLarge, "\(field()).count: \(count) digests, at most \(TPMLDigest.maxCount) allowed")
                }
                for d in 0..<Int(count) {
                    let size = Int(try list.readUInt16LE("\(field()).digests[\(d)].size"))
                    guard size <= TPMAlgorithm.maxDigestSize else {
                        throw WireError(.sizeTooLarge, "\(field()).digests[\(d)].size: \(size) exceeds the limit of \(TPMAlgorithm.maxDigestSize)")
                    }
                    let buffer = try list.readBytes(TPMAlgorithm.maxDigestSize, "\(field()).digests[\(d)].buffer")
                    digests.append(Array(buffer.prefix(size)))
                }
            }
            try reader.expectEnd("PCR file (serialized)")
            self = try Self(selection: selection, digests: digests, "PCR file (serialized)")
        case .marshaled:
            var reader = ByteReader(bytes)
            let selection = try PCRSelection(from: &reader)
            let listCount = try reader.readUInt32("PCR file (marshaled): digest list count")
            guard listCount <= UInt32(Self.maxDigestLists) else {
                throw WireError(.countTooLarge, "PCR file (marshaled): \(listCount) digest lists, at most \(Self.maxDigestLists) allowed")
            }
            var digests: [[UInt8]] = []
            for _ in 0..<Int(listCount) {
                digests += try TPMLDigest(from: &reader).digests
            }
            try reader.expectEnd("PCR file (marshaled)")
            self = try Self(selection: selection, digests: digests, "PCR file (marshaled)")
        }
    }

    /// Pairs the digests, in order, with the selection's PCRs: the count and each size must fit.
    private init(selection: PCRSelection, digests: [[UInt8]], _ what: String) throws(WireError) {
        try Self.checkBanks(selection, what)
        let pairs = selection.pairs
        guard digests.count == pairs.count else {
            throw WireError(.invalidValue, "\(what): \(digests.count) PCR values for the \(pairs.count) PCRs of \(selection)")
        }
        var values = PCRValues()
        for ((hash, pcr), digest) in zip(pairs, digests) {
            guard digest.count == hash.digestSize else {
                throw WireError(.invalidValue, "\(what): \(hash.name) PCR \(pcr) has \(digest.count) bytes, a \(hash.name) digest has \(hash.digestSize ?? 0)")
            }
            values[hash, pcr] = digest
        }
        self.init(selection: selection, values: values)
    }

    /// Every bank must be a known hash and appear once: a PCR value belongs to one (bank, PCR).
    private static func checkBanks(_ selection: PCRSelection, _ what: String) throws(WireError) {
        var seen: Set<TPMAlgorithm> = []
        for bank in selection.banks {
            guard bank.hash.digestSize != nil else {
                throw WireError(.unknownAlgorithm, "\(what): \(bank.hash.name) is not a hash algorithm this verifier knows")
            }
            guard seen.insert(bank.hash).inserted else {
                throw WireError(.invalidValue, "\(what): bank \(bank.hash.name) is selected twice")
            }
        }
    }

    private static func readSerializedSelection(_ reader: inout ByteReader) throws(WireError) -> PCRSelection {
        var sel = try reader.subReader(serializedSelectionSize, "PCR file (serialized): TPML_PCR_SELECTION")
        let count = try sel.readUInt32LE("PCR file (serialized): TPML_PCR_SELECTION.count")
        guard count <= UInt32(PCRSelection.maxBanks) else {
            throw WireError(.countTooLarge, "PCR file (serialized): TPML_PCR_SELECTION.count: \(count) banks, at most \(PCRSelection.maxBanks) allowed")
        }
        var banks: [PCRSelection.Bank] = []
        for i in 0..<Int(count) {
            let field = { "PCR file (serialized): TPML_PCR_SELECTION.pcrSelections[\(i)]" }
            let hash = TPMAlgorithm(try sel.readUInt16LE("\(field()).hash"))
            guard hash.isHash else {
                throw WireError(.unknownAlgorithm, "\(field()).hash: \(hash.name) is not a hash algorithm this verifier knows")
            }
            let size = try sel.readUInt8("\(field()).sizeofSelect")
            guard Int(size) <= PCRSelection.maxSizeOfSelect else {
                throw WireError(.sizeTooLarge, "\(field()).sizeofSelect: \(size) exceeds \(PCRSelection.maxSizeOfSelect)")
            }
            let bitmap = try sel.readBytes(PCRSelection.maxSizeOfSelect, "\(field()).pcrSelect")
            try sel.skip(1, "\(field()) padding")
            var pcrs: [Int] = []
            for (byteIndex, byte) in bitmap.prefix(Int(size)).enumerated() where byte != 0 {
                for bit in 0..<8 where byte & (1 << bit) != 0 { pcrs.append(byteIndex * 8 + bit) }
            }
            banks.append(PCRSelection.Bank(hash: hash, pcrs: pcrs, sizeOfSelect: size))
        }
        return PCRSelection(banks: banks)
    }

    /// The file's bytes in `format`. Fails when the selection cannot be written (more banks or
    /// a wider bitmap than tpm2-tools' structures hold, a bank named twice) or a value is missing.
    public func bytes(format: PCRFileFormat) throws(WireError) -> [UInt8] {
        try Self.checkBanks(selection, "PCR file")
        guard selection.banks.count <= PCRSelection.maxBanks,
              selection.banks.allSatisfy({ bank in
                  Int(bank.sizeOfSelect) <= PCRSelection.maxSizeOfSelect
                      && bank.pcrs.allSatisfy { (0..<Int(bank.sizeOfSelect) * 8).contains($0) }
              }) else {
            throw WireError(.countTooLarge, "PCR file: selection \(selection) exceeds \(PCRSelection.maxBanks) banks of \(PCRSelection.maxSizeOfSelect * 8) PCRs")
        }
        var digests: [[UInt8]] = []
        for (hash, pcr) in selection.pairs {
            guard let v = values[hash, pcr], v.count == hash.digestSize else {
                throw WireError(.invalidValue, "PCR file: no \(hash.name) value of the right size for PCR \(pcr)")
            }
            digests.append(v)
        }
        let lists = stride(from: 0, to: digests.count, by: TPMLDigest.maxCount).map {
            Array(digests[$0..<min($0 + TPMLDigest.maxCount, digests.count)])
        }
        guard lists.count <= Self.maxDigestLists else {
            throw WireError(.countTooLarge, "PCR file: \(digests.count) values need more than \(Self.maxDigestLists) digest lists")
        }
        var w = ByteWriter(capacity: 136 + lists.count * Self.serializedDigestListSize)
        switch format {
        case .values:
            for d in digests { w.write(bytes: d) }
        case .marshaled:
            selection.write(to: &w)
            w.write(UInt32(lists.count))
            for list in lists { TPMLDigest(list).write(to: &w) }
        case .serialized:
            w.writeLE(UInt32(selection.banks.count))
            for slot in 0..<PCRSelection.maxBanks {
                guard slot < selection.banks.count else {
                    w.write(bytes: [UInt8](repeating: 0, count: 8))
                    continue
                }
                let bank = selection.banks[slot]
                w.writeLE(bank.hash.rawValue)
                w.write(bank.sizeOfSelect)
                var bitmap = [UInt8](repeating: 0, count: PCRSelection.maxSizeOfSelect + 1)  // + pad byte
                for pcr in bank.pcrs { bitmap[pcr / 8] |= 1 << UInt8(pcr % 8) }
                w.write(bytes: bitmap)
            }
            w.writeLE(UInt32(lists.count))
            for list in lists {
                w.writeLE(UInt32(list.count))
                for slot in 0..<TPMLDigest.maxCount {
                    let d = slot < list.count ? list[slot] : []
                    w.writeLE(UInt16(d.count))
                    w.write(bytes: d)
                    w.write(bytes: [UInt8](repeating: 0, count: TPMAlgorithm.maxDigestSize - d.count))
                }
            }
        }
        return w.bytes
    }
}
