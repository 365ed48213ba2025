import Testing
@testable import TPMWire

@Suite struct PCRSelectionTests {
    @Test func parsesToolsSyntaxAndRoundTrips() throws {
        let sel = try PCRSelection(parsing: "sha1:0+sha256:0,15,1")
        #expect(sel.banks.map(\.hash) == [.sha1, .sha256])
        #expect(sel.banks[1].pcrs == [0, 1, 15])
        #expect(sel.description == "sha1:0+sha256:0,1,15")
        // count, then per bank: hash, sizeofSelect=3, bitmap (LSB of byte 0 is PCR 0)
        #expect(sel.wireBytes == [0, 0, 0, 2, 0x00, 0x04, 3, 0x01, 0, 0, 0x00, 0x0b, 3, 0x03, 0x80, 0])
        #expect(try PCRSelection(wireBytes: sel.wireBytes) == sel)
    }

    @Test func sameSelectionIgnoresOrderAndEmptyBanks() throws {
        let a = try PCRSelection(parsing: "sha256:0,15+sha1:0")
        var b = try PCRSelection(parsing: "sha1:0+sha256:15,0")
        #expect(a.isSameSelection(as: b))
        b.banks.append(.init(hash: .sha384, pcrs: []))
        #expect(a.isSameSelection(as: b))
        b.banks[1].pcrs.append(16)
        #expect(!a.isSameSelection(as: b))
    }

    @Test(arguments: ["", "sha256", "sha256:", "md5:0", "sha256:0,x", "sha256:256", "sha256:0+sha256:1", "sha256:-1"])
    func rejectsBadSyntax(_ spec: String) {
        #expect(throws: WireError.self) { try PCRSelection(parsing: spec) }
    }

    @Test func rejectsHostileWire() {
        // absurd bank count
        #expect(throws: WireError(.countTooLarge, "TPML_PCR_SELECTION.count: 4294967295 banks, at most 16 allowed")) {
            try PCRSelection(wireBytes: [0xff, 0xff, 0xff, 0xff])
        }
        // unknown hash algorithm
        let unknown = #expect(throws: WireError.self) { try PCRSelection(wireBytes: [0, 0, 0, 1, 0x12, 0x34, 3, 0, 0, 0]) }
        #expect(unknown?.code == .unknownAlgorithm)
        // truncated bitmap
        let short = #expect(throws: WireError.self) { try PCRSelection(wireBytes: [0, 0, 0, 1, 0, 0x0b, 3, 0]) }
        #expect(short?.code == .truncated)
        // inflated sizeofSelect
        let big = #expect(throws: WireError.self) { try PCRSelection(wireBytes: [0, 0, 0, 1, 0, 0x0b, 200]) }
        #expect(big?.code == .sizeTooLarge)
    }
}
