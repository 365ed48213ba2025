import Testing
import TestSupport
@testable import TPMWire

@Suite struct PCRFileTests {
    static let selection = try! PCRSelection(parsing: "sha1:0,15+sha256:0,1,2,3,4,5,6,7,8,9,15,23")

    static var file: PCRFile {
        var values = PCRValues()
        for (i, (hash, pcr)) in selection.pairs.enumerated() {
            values[hash, pcr] = [UInt8](repeating: UInt8(i), count: hash.digestSize ?? 0)
        }
        return PCRFile(selection: selection, values: values)
    }

    @Test(arguments: PCRFileFormat.allCases)
    func roundTripsAndRefusesEveryTruncation(_ format: PCRFileFormat) throws {
        let file = Self.file
        let bytes = try file.bytes(format: format)
        let parsed = try PCRFile(bytes: bytes, format: format, selection: Self.selection)
        #expect(parsed.values == file.values)
        #expect(parsed.selection.isSameSelection(as: Self.selection))
        #expect(try parsed.bytes(format: format) == bytes)
        switch format {
        case .serialized: #expect(bytes.count == 132 + 4 + 2 * 532)   // 14 values: two TPML_DIGEST
        case .marshaled: #expect(bytes.count == 16 + 4 + (4 + 2 * 22 + 6 * 34) + (4 + 6 * 34))
        case .values: #expect(bytes.count == 2 * 20 + 12 * 32)
        }
        Hostile.expectEveryTruncationRefused(bytes) { b throws(WireError) in
            _ = try PCRFile(bytes: b, format: format, selection: Self.selection)
        }
    }

    @Test func serializedLayoutIsTheCStructDump() throws {
        let one = PCRFile(selection: try PCRSelection(parsing: "sha256:1"),
                          values: PCRValues([.sha256: [1: [UInt8](repeating: 0xaa, count: 32)]]))
        let b = try one.bytes(format: .serialized)
        #expect(b.count == 668)
        #expect(Array(b[0..<12]) == [1, 0, 0, 0, 0x0b, 0, 3, 0x02, 0, 0, 0, 0])   // count, sha256 LE, size 3, bitmap, pad
        #expect(Array(b[132..<136]) == [1, 0, 0, 0])                             // one TPML_DIGEST
        #expect(Array(b[136..<142]) == [1, 0, 0, 0, 32, 0])                      // count 1, size 32 LE
        #expect(Array(b[142..<174]) == [UInt8](repeating: 0xaa, count: 32))
        #expect(b[174...].allSatisfy { $0 == 0 })
    }

    @Test func refusesHostileFiles() throws {
        let serialized = try Self.file.bytes(format: .serialized)
        func serr(_ offset: Int, _ patch: [UInt8]) -> WireError? {
            #expect(throws: WireError.self) { try PCRFile(bytes: Hostile.patched(serialized, at: offset, with: patch), format: .serialized) }
        }
        #expect(serr(0, [17, 0, 0, 0]) == WireError(.countTooLarge, "PCR file (serialized): TPML_PCR_SELECTION.count: 17 banks, at most 16 allowed"))
        #expect(serr(4, [0x34, 0x12]) == WireError(.unknownAlgorithm, "PCR file (serialized): TPML_PCR_SELECTION.pcrSelections[0].hash: 0x1234 is not a hash algorithm this verifier knows"))
        #expect(serr(6, [5]) == WireError(.sizeTooLarge, "PCR file (serialized): TPML_PCR_SELECTION.pcrSelections[0].sizeofSelect: 5 exceeds 4"))
        #expect(serr(132, [0xff, 0xff, 0xff, 0xff]) == WireError(.countTooLarge, "PCR file (serialized): 4294967295 digest lists, at most 32 allowed"))
        #expect(serr(136, [9, 0, 0, 0]) == WireError(.countTooLarge, "PCR file (serialized): TPML_DIGEST[0].count: 9 digests, at most 8 allowed"))
        #expect(serr(140, [65, 0]) == WireError(.sizeTooLarge, "PCR file (serialized): TPML_DIGEST[0].digests[0].size: 65 exceeds the limit of 64"))
        #expect(serr(140, [32, 0]) == WireError(.invalidValue, "PCR file (serialized): sha1 PCR 0 has 32 bytes, a sha1 digest has 20"))
        #expect(serr(136, [7, 0, 0, 0]) == WireError(.invalidValue, "PCR file (serialized): 13 PCR values for the 14 PCRs of sha1:0,15+sha256:0,1,2,3,4,5,6,7,8,9,15,23"))
        // the same bank twice: sha1 in slot 1 too
        #expect(serr(12, [0x04, 0x00]) == WireError(.invalidValue, "PCR file (serialized): bank sha1 is selected twice"))

        let marshaled = try Self.file.bytes(format: .marshaled)
        func merr(_ offset: Int, _ patch: [UInt8]) -> WireError? {
            #expect(throws: WireError.self) { try PCRFile(bytes: Hostile.patched(marshaled, at: offset, with: patch), format: .marshaled) }
        }
        #expect(merr(0, [0, 0, 1, 0])?.code == .countTooLarge)
        #expect(merr(16, [0, 0, 0, 33]) == WireError(.countTooLarge, "PCR file (marshaled): 33 digest lists, at most 32 allowed"))
        #expect(merr(20, [0, 0, 0, 9]) == WireError(.countTooLarge, "TPML_DIGEST.count: 9 digests, at most 8 allowed"))
        #expect(merr(24, [0, 0x41]) == WireError(.sizeTooLarge, "TPML_DIGEST.digests[0]: size 65 exceeds the limit of 64"))

        let values = try Self.file.bytes(format: .values)
        let noSelection = #expect(throws: WireError.self) { try PCRFile(bytes: values, format: .values) }
        #expect(noSelection?.code == .invalidValue)
    }

    /// PCR files written by tpm2_quote: ours parse them, and write the same bytes back.
    @Test(arguments: AKKind.allCases)
    func realFilesParseAndSerialiseByteForByte(_ kind: AKKind) throws {
        let evidence = try QuoteEvidenceFixture.evidence(kind)
        let required = try PCRSelection(parsing: evidence.pcrList)
        let serializedBytes = try evidence.read("quote.pcrs")
        let serialized = try PCRFile(bytes: serializedBytes, format: .serialized)
        #expect(serialized.selection.isSameSelection(as: required))
        #expect(try serialized.bytes(format: .serialized) == serializedBytes)
        let valuesBytes = try evidence.read("quote-values.pcrs")
        let values = try PCRFile(bytes: valuesBytes, format: .values, selection: required)
        #expect(values.values == serialized.values)
        #expect(try values.bytes(format: .values) == valuesBytes)
        // PCR 15 was extended, PCR 0 of sha256 was not (no firmware on swtpm)
        #expect(values.values[.sha256, 15] != PCRValues.initialValue(pcr: 15, hash: .sha256))
        #expect(values.values[.sha256, 0] == PCRValues.initialValue(pcr: 0, hash: .sha256))

        // marshaled, as tpm2-tss marshals tpm2_quote's structures: same values, same bytes from
        // our writer, and tpm2-tss reads our bytes back into the very structures tpm2_quote dumped
        let marshaledBytes = try evidence.read("quote-marshaled.pcrs")
        let marshaled = try PCRFile(bytes: marshaledBytes, format: .marshaled)
        #expect(marshaled.values == serialized.values)
        #expect(try serialized.bytes(format: .marshaled) == marshaledBytes)
        #expect(try TSSMarshal.serializedPCRFile(fromMarshaled: try serialized.bytes(format: .marshaled)) == serializedBytes)
    }

    /// A file from scratch (not parsed from tpm2-tools output) survives tpm2-tss' unmarshaller
    /// and dumps as our serialized writer writes it.
    @Test func ourMarshaledFileIsWhatTPM2TSSReads() throws {
        let file = Self.file
        let dumped = try TSSMarshal.serializedPCRFile(fromMarshaled: try file.bytes(format: .marshaled))
        #expect(dumped == (try file.bytes(format: .serialized)))
    }
}
