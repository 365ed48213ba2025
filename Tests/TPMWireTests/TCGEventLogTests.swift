import Testing
@testable import TPMWire

private let sha1 = EFIEventData.sha1
private let sha256 = EFIEventData.sha256
private let sha384 = EFIEventData.sha384

@Suite struct TCGEventLogTests {
    /// A log encoded by the independent hand builder: every field parses to what was written,
    /// serialising gives the same bytes, and the replay matches extends computed here.
    @Test func handBuiltLogParsesFieldByField() throws {
        var hand = HandBuiltLog(table: [sha1, sha256], vendorInfo: [7, 8, 9])
        hand.startupLocality(3)
        hand.event(pcr: 0, type: 0x8, data: Array("CRTM 1.0".utf8))                   // EV_S_CRTM_VERSION
        hand.event(pcr: 7, type: 0x8000_0001, data: EFIEventData.variable(name: "SecureBoot", value: [1]))
        hand.event(pcr: 4, type: 0x4, data: [0, 0, 0, 0])                             // EV_SEPARATOR
        hand.event(pcr: 23, type: 0xD, data: [])                                      // empty data
        hand.event(pcr: 17, type: 0xD, data: Array("dl".utf8))
        hand.event(pcr: 5, type: 0x3, data: Array("not extended".utf8),               // EV_NO_ACTION
                   digests: [(0x0004, [UInt8](repeating: 0, count: 20)), (0x000B, [UInt8](repeating: 0, count: 32))])

        let log = try TCGEventLog(bytes: hand.bytes)
        #expect(log.header.platformClass == 0)
        #expect(log.header.specVersionMajor == 2)
        #expect(log.header.uintnSize == 2)
        #expect(log.header.algorithms == [.init(.sha1, digestSize: 20), .init(.sha256, digestSize: 32)])
        #expect(log.header.vendorInfo == [7, 8, 9])
        #expect(log.events.map(\.pcrIndex) == [0, 0, 7, 4, 23, 17, 5])
        #expect(log.events.map(\.eventType) == [.noAction, .sCRTMVersion, .efiVariableDriverConfig, .separator, .ipl, .ipl, .noAction])
        #expect(log.events[3].data == [0, 0, 0, 0])
        #expect(log.events[4].data.isEmpty)
        #expect(log.events[1].digest(for: .sha256) == HandBuiltLog.hash(0x000B, Array("CRTM 1.0".utf8)))
        #expect(log.events[1].digests.map(\.algorithm) == [.sha1, .sha256])
        #expect(log.serialized() == hand.bytes)

        let replay = try log.replay()
        #expect(replay.startupLocality == 3)
        #expect(replay.eventCount == 7)
        #expect(replay.unreplayedBanks.isEmpty)
        #expect(replay.covered.pcrsByBank == [.sha1: [0, 4, 7, 17, 23], .sha256: [0, 4, 7, 17, 23]])
        let pcr0Start = [UInt8](repeating: 0, count: 31) + [3]
        #expect(replay.values[.sha256, 0] == HandBuiltLog.extend(0x000B, pcr0Start, HandBuiltLog.hash(0x000B, Array("CRTM 1.0".utf8))))
        #expect(replay.values[.sha256, 17] == HandBuiltLog.extend(0x000B, [UInt8](repeating: 0xff, count: 32), HandBuiltLog.hash(0x000B, Array("dl".utf8))))
        #expect(replay.values[.sha1, 23] == HandBuiltLog.extend(0x0004, [UInt8](repeating: 0, count: 20), HandBuiltLog.hash(0x0004, [])))
        #expect(replay.values[.sha256, 5] == nil)
        #expect(!replay.covers(pcr: 5, bank: .sha256))
        #expect(replay.expectedValue(pcr: 5, bank: .sha256) == [UInt8](repeating: 0, count: 32))
        #expect(replay.expectedValue(pcr: 20, bank: .sha1) == [UInt8](repeating: 0xff, count: 20))
        #expect(replay.expectedValue(pcr: 0, bank: .sha384) == nil)
        #expect(try TCGEventLog.replay(bytes: hand.bytes) == replay)
    }

    /// The writer's output reads back to the same events and bytes, one record at a time.
    @Test func writerRoundTripsByteForByte() throws {
        var writer = try TCGEventLogWriter(banks: [.sha256, .sha384])
        let locality = writer.startupLocalityEvent(0)
        try writer.append(locality)
        var records: [[UInt8]] = []
        for i in 0..<300 {
            let event = try writer.measurement(pcr: i % 24, type: i % 5 == 0 ? .separator : .efiAction, data: Array("event \(i)".utf8))
            records.append(try writer.record(event))
            try writer.append(event)
        }
        #expect(writer.eventCount == 301)
        let log = try TCGEventLog(bytes: writer.bytes)
        #expect(log.header.banks == [.sha256, .sha384])
        #expect(log.events.count == 301)
        #expect(log.events[5].data == Array("event 4".utf8))
        #expect(log.events[5].digest(for: .sha384) == HandBuiltLog.hash(0x000C, Array("event 4".utf8)))
        #expect(log.serialized() == writer.bytes)
        #expect(log.header.serialized() + locality.serialized() + records.joined() == writer.bytes)
        #expect(try TCGEventLog.replay(bytes: writer.bytes) == (try log.replay()))
    }

    // MARK: replay rules

    @Test func emptyLogCoversNothing() throws {
        let hand = HandBuiltLog(table: [sha256])
        let replay = try TCGEventLog.replay(bytes: hand.bytes)
        #expect(replay.eventCount == 0)
        #expect(replay.values == PCRValues())
        #expect(replay.covered.pcrsByBank.isEmpty)
        #expect(replay.expectedValue(pcr: 0, bank: .sha256) == [UInt8](repeating: 0, count: 32))
        #expect(replay.expectedValue(pcr: 18, bank: .sha256) == [UInt8](repeating: 0xff, count: 32))
    }

    @Test func startupLocalityAloneCoversPCR0() throws {
        var hand = HandBuiltLog(table: [sha1, sha256])
        hand.startupLocality(3)
        let replay = try TCGEventLog.replay(bytes: hand.bytes)
        #expect(replay.values[.sha1, 0] == [UInt8](repeating: 0, count: 19) + [3])
        #expect(replay.covers(pcr: 0, bank: .sha256))
        #expect(replay.initialValue(pcr: 0, bank: .sha256) == [UInt8](repeating: 0, count: 31) + [3])
    }

    @Test func hcrtmEventStartsPCR0AtLocality4() throws {
        var hand = HandBuiltLog(table: [sha256])
        hand.event(pcr: 0, type: 0x8000_0010, data: Array("HCRTM".utf8))
        hand.event(pcr: 0, type: 0x8, data: [1])
        let replay = try TCGEventLog.replay(bytes: hand.bytes)
        #expect(replay.startupLocality == 4)
        let first = HandBuiltLog.extend(0x000B, [UInt8](repeating: 0, count: 31) + [4], HandBuiltLog.hash(0x000B, Array("HCRTM".utf8)))
        #expect(replay.values[.sha256, 0] == HandBuiltLog.extend(0x000B, first, HandBuiltLog.hash(0x000B, [1])))
    }

    @Test func startupLocalityRulesAreEnforced() throws {
        func replayError(_ build: (inout HandBuiltLog) -> Void) -> WireError? {
            var hand = HandBuiltLog(table: [sha256])
            build(&hand)
            let streamed = #expect(throws: WireError.self) { try TCGEventLog.replay(bytes: hand.bytes) }
            let parsed = #expect(throws: WireError.self) { try TCGEventLog(bytes: hand.bytes).replay() }
            #expect(streamed == parsed, "both replays apply the same rules")
            return streamed
        }
        let late = replayError { $0.event(pcr: 0, type: 8, data: [1]); $0.startupLocality(3) }
        #expect(late == WireError(.invalidValue, "event 1: StartupLocality event after PCR 0 was already extended"))
        let twice = replayError { $0.startupLocality(3); $0.startupLocality(0) }
        #expect(twice == WireError(.invalidValue, "event 1: StartupLocality event sets PCR 0 to start at locality 0, event 0 said 3"))
        let five = replayError { $0.startupLocality(5) }
        #expect(five == WireError(.invalidValue, "event 0: StartupLocality 5, localities are 0–4"))
        let long = replayError {
            $0.event(pcr: 0, type: 3, data: Array("StartupLocality".utf8) + [0, 3, 0], digests: [(0x000B, [UInt8](repeating: 0, count: 32))])
        }
        #expect(long == WireError(.invalidValue, "event 0: StartupLocality event data is 18 bytes, expected 17"))
        let conflict = replayError { $0.startupLocality(3); $0.event(pcr: 0, type: 0x8000_0010, data: [1]) }
        #expect(conflict?.reason.contains("EV_EFI_HCRTM_EVENT sets PCR 0 to start at locality 4, event 0 said 3") == true)
    }

    /// A StartupLocality event for another PCR, or EV_NO_ACTION of any other kind, changes nothing.
    @Test func noActionEventsAreNeverExtended() throws {
        var a = HandBuiltLog(table: [sha256])
        a.event(pcr: 9, type: 0xD, data: [9])
        var b = HandBuiltLog(table: [sha256])
        b.event(pcr: 9, type: 3, data: [1, 2, 3])
        b.event(pcr: 9, type: 0xD, data: [9])
        b.event(pcr: 1, type: 3, data: Array("StartupLocality".utf8) + [0, 3])
        let ra = try TCGEventLog.replay(bytes: a.bytes), rb = try TCGEventLog.replay(bytes: b.bytes)
        #expect(ra.values == rb.values)
        #expect(rb.startupLocality == nil)
        #expect(rb.covered.pcrsByBank == [.sha256: [9]])
    }

    /// Banks the verifier cannot hash are parsed (their digests skipped by the table's size) and
    /// reported, not replayed; the other banks still replay.
    @Test func unhashableBanksAreReportedNotReplayed() throws {
        var hand = HandBuiltLog(table: [(0x0012, 32), sha256, (0x7777, 40)])     // sm3_256, sha256, unknown
        hand.event(pcr: 2, type: 0xD, data: [1], digests: [(0x7777, [UInt8](repeating: 0x77, count: 40)),
                                                         (0x0012, [UInt8](repeating: 0x12, count: 32)),
                                                         (0x000B, HandBuiltLog.hash(0x000B, [1]))])
        let log = try TCGEventLog(bytes: hand.bytes)
        #expect(log.events[0].digests.map(\.algorithm) == [TPMAlgorithm(0x7777), .sm3_256, .sha256])
        #expect(log.events[0].digest(for: TPMAlgorithm(0x7777)) == [UInt8](repeating: 0x77, count: 40))
        #expect(log.serialized() == hand.bytes)
        let replay = try log.replay()
        #expect(replay.unreplayedBanks == [.sm3_256, TPMAlgorithm(0x7777)])
        #expect(replay.values[.sha256, 2] == HandBuiltLog.extend(0x000B, [UInt8](repeating: 0, count: 32), HandBuiltLog.hash(0x000B, [1])))
        #expect(replay.expectedValue(pcr: 2, bank: .sm3_256) == nil)
        #expect(try TCGEventLog.replay(bytes: hand.bytes) == replay)
    }

    // MARK: hostile input

    /// Every prefix of a log either ends on a record boundary (a shorter, valid log) or fails
    /// with a truncation error, the same from both parsers.
    @Test func everyTruncationIsCaught() throws {
        var hand = HandBuiltLog(table: [sha1, sha256], vendorInfo: [1, 2])
        var boundaries = [hand.bytes.count]
        hand.startupLocality(3)
        boundaries.append(hand.bytes.count)
        for (i, data) in [[UInt8](), [4, 4, 4, 4], Array("grub".utf8)].enumerated() {
            hand.event(pcr: UInt32(i * 7), type: 0xD, data: data)
            boundaries.append(hand.bytes.count)
        }
        for length in 0..<hand.bytes.count {
            let prefix = Array(hand.bytes[..<length])
            if let events = boundaries.firstIndex(of: length) {
                #expect(try TCGEventLog(bytes: prefix).events.count == events)
                continue
            }
            let parsed = #expect(throws: WireError.self, "prefix of \(length) bytes") { try TCGEventLog(bytes: prefix) }
            let streamed = #expect(throws: WireError.self) { try TCGEventLog.replay(bytes: prefix) }
            #expect(parsed == streamed)
            #expect(parsed?.code == .truncated || parsed?.code == .sizeTooLarge, "\(parsed?.reason ?? "")")
            if length > boundaries[0] {
                #expect(parsed?.reason.hasPrefix("event ") == true, "names the event: \(parsed?.reason ?? "")")
            }
        }
    }

    @Test func inflatedSizesAndCountsAreRejected() throws {
        var hand = HandBuiltLog(table: [sha256])
        hand.event(pcr: 1, type: 0xD, data: [1])
        let start = hand.bytes.count                               // record 1 starts here
        hand.event(pcr: 2, type: 0xD, data: [2, 2])
        let bytes = hand.bytes

        // eventSize 0xFFFFFFFF (at record + 12 + 2 + 32)
        var big = bytes
        big.replaceSubrange((start + 46)..<(start + 50), with: [0xff, 0xff, 0xff, 0xff])
        #expect(throws: WireError(.sizeTooLarge, "event 1 (TCG_PCR_EVENT2 at byte \(start)): eventSize: size 4294967295 exceeds the 2 bytes left")) {
            try TCGEventLog(bytes: big)
        }
        // digest count 0xFFFFFFFF, and 0
        var count = bytes
        count.replaceSubrange((start + 8)..<(start + 12), with: [0xff, 0xff, 0xff, 0xff])
        #expect(throws: WireError(.countTooLarge, "event 1 (TCG_PCR_EVENT2 at byte \(start)): digests.count: 4294967295, the Spec ID table declares 1 algorithm(s)")) {
            try TCGEventLog.replay(bytes: count)
        }
        count.replaceSubrange((start + 8)..<(start + 12), with: [0, 0, 0, 0])
        let none = #expect(throws: WireError.self) { try TCGEventLog(bytes: count) }
        #expect(none?.code == .invalidValue)
        #expect(none?.reason.contains("every event must carry a digest for each of the 1 banks of the Spec ID table (sha256)") == true)
        // PCR index beyond the PC Client's 24
        var pcr = bytes
        pcr[start] = 24
        #expect(throws: WireError(.invalidValue, "event 1 (TCG_PCR_EVENT2 at byte \(start)): pcrIndex: 24, a PC Client TPM has PCRs 0–23")) {
            try TCGEventLog(bytes: pcr)
        }
    }

    @Test func digestsMustFollowTheTable() throws {
        var unknown = HandBuiltLog(table: [sha1, sha256])
        unknown.event(pcr: 0, type: 0xD, data: [], digests: [(0x0004, [UInt8](repeating: 1, count: 20)), (0x000C, [UInt8](repeating: 2, count: 48))])
        #expect(throws: WireError(.unknownAlgorithm, "event 0 (TCG_PCR_EVENT2 at byte 69): digests[1].algorithmId: sha384 is not in the Spec ID table (sha1, sha256)")) {
            try TCGEventLog(bytes: unknown.bytes)
        }
        var twice = HandBuiltLog(table: [sha1, sha256])
        twice.event(pcr: 0, type: 0xD, data: [], digests: [(0x0004, [UInt8](repeating: 1, count: 20)), (0x0004, [UInt8](repeating: 2, count: 20))])
        #expect(throws: WireError(.invalidValue, "event 0 (TCG_PCR_EVENT2 at byte 69): digests[1].algorithmId: sha1 appears twice")) {
            try TCGEventLog.replay(bytes: twice.bytes)
        }
        // Digests in another order than the table are fine, and kept in their order.
        var swapped = HandBuiltLog(table: [sha1, sha256])
        swapped.event(pcr: 3, type: 0xD, data: [3], digests: [(0x000B, HandBuiltLog.hash(0x000B, [3])), (0x0004, HandBuiltLog.hash(0x0004, [3]))])
        let log = try TCGEventLog(bytes: swapped.bytes)
        #expect(log.events[0].digests.map(\.algorithm) == [.sha256, .sha1])
        #expect(log.serialized() == swapped.bytes)
        #expect(try log.replay().values[.sha1, 3] == HandBuiltLog.extend(0x0004, [UInt8](repeating: 0, count: 20), HandBuiltLog.hash(0x0004, [3])))
    }

    @Test(arguments: [
        // (table, expected code, expected reason suffix)
        ([(UInt16(0x000B), 20)], WireError.Code.invalidValue, "TCG_EfiSpecIDEvent.digestSizes[0].digestSize: 20 for sha256, whose digests are 32 bytes"),
        ([(0x0004, 20), (0x0001, 32)], .unknownAlgorithm, "TCG_EfiSpecIDEvent.digestSizes[1].algorithmId: rsa is not a hash algorithm"),
        ([(0x0000, 32)], .unknownAlgorithm, "TCG_EfiSpecIDEvent.digestSizes[0].algorithmId: 0x0000 is not a hash algorithm"),
        ([(0x4242, 0)], .sizeTooLarge, "TCG_EfiSpecIDEvent.digestSizes[0].digestSize: 0 for unknown algorithm 0x4242, expected 1–512"),
        ([(0x4242, 60000)], .sizeTooLarge, "TCG_EfiSpecIDEvent.digestSizes[0].digestSize: 60000 for unknown algorithm 0x4242, expected 1–512"),
        ([(0x000B, 32), (0x000B, 32)], .invalidValue, "TCG_EfiSpecIDEvent.digestSizes[1].algorithmId: sha256 is listed twice"),
        ([], .invalidValue, "TCG_EfiSpecIDEvent.numberOfAlgorithms: 0, a log must declare at least one bank"),
        (Array(repeating: (UInt16(0x4000), 8), count: 17), .countTooLarge, "TCG_EfiSpecIDEvent.numberOfAlgorithms: 17, at most 16 allowed"),
    ] as [([(UInt16, Int)], WireError.Code, String)])
    func badSpecIDTablesAreRejected(table: [(UInt16, Int)], code: WireError.Code, reason: String) {
        let hand = HandBuiltLog(table: table.map { (id: $0.0, size: $0.1) })
        #expect(throws: WireError(code, reason)) { try TCGEventLog(bytes: hand.bytes) }
    }

    @Test func inflatedAlgorithmCountIsRejectedBeforeReading() {
        var bytes = HandBuiltLog(table: [sha256]).bytes
        bytes.replaceSubrange(56..<60, with: [0xff, 0xff, 0xff, 0xff])         // numberOfAlgorithms
        #expect(throws: WireError(.countTooLarge, "TCG_EfiSpecIDEvent.numberOfAlgorithms: 4294967295, at most 16 allowed")) {
            try TCGEventLog(bytes: bytes)
        }
    }

    @Test func headersThatAreNotSpecIDEvent03AreRejected() {
        let old = HandBuiltLog(table: [sha1], signature: "Spec ID Event00")
        #expect(throws: WireError(.invalidValue, "TCG_EfiSpecIDEvent.signature: 'Spec ID Event00' (a SHA-1-only log, not crypto-agile), expected 'Spec ID Event03'")) {
            try TCGEventLog(bytes: old.bytes)
        }
        var type = HandBuiltLog(table: [sha256]).bytes
        type[4] = 1
        #expect(throws: WireError(.invalidValue, "TCG_PCR_EVENT (log header).eventType: EV_POST_CODE, a crypto-agile log starts with EV_NO_ACTION")) {
            try TCGEventLog(bytes: type)
        }
        var pcr = HandBuiltLog(table: [sha256]).bytes
        pcr[0] = 1
        #expect(throws: WireError(.invalidValue, "TCG_PCR_EVENT (log header).pcrIndex: 1, the Spec ID event is logged for PCR 0")) {
            try TCGEventLog(bytes: pcr)
        }
        var digest = HandBuiltLog(table: [sha256]).bytes
        digest[10] = 1
        #expect(throws: WireError(.invalidValue, "TCG_PCR_EVENT (log header).digest: the Spec ID event's digest must be 20 zero bytes")) {
            try TCGEventLog(bytes: digest)
        }
        let uintn = HandBuiltLog(table: [sha256], uintnSize: 3)
        #expect(throws: WireError(.invalidValue, "TCG_EfiSpecIDEvent.uintnSize: 3, expected 1 (32-bit) or 2 (64-bit)")) {
            try TCGEventLog(bytes: uintn.bytes)
        }
        // eventDataSize one byte longer than the structure it holds (the next byte is the first event's)
        var hand = HandBuiltLog(table: [sha256])
        hand.event(pcr: 1, type: 0xD, data: [])
        var long = hand.bytes
        long[28] += 1
        #expect(throws: WireError(.trailingBytes, "TCG_PCR_EVENT (log header).event (eventDataSize 34): 1 unexpected bytes after the structure")) {
            try TCGEventLog(bytes: long)
        }
        var huge = hand.bytes
        huge.replaceSubrange(28..<32, with: [0xff, 0xff, 0xff, 0x7f])
        let e = #expect(throws: WireError.self) { try TCGEventLog(bytes: huge) }
        #expect(e?.code == .sizeTooLarge)
        #expect(throws: WireError.self) { try TCGEventLog(bytes: []) }
    }

    // MARK: writer checks

    @Test func writerRefusesEventsThatBreakTheHeader() throws {
        #expect(throws: WireError.self) { try TCGEventLogWriter(banks: [.rsa]) }
        #expect(throws: WireError.self) { try TCGEventLogWriter(header: TCGSpecIDEvent(algorithms: [])) }
        var writer = try TCGEventLogWriter(banks: [.sha1, .sha256])
        var event = try writer.measurement(pcr: 24, type: .ipl, data: [])
        #expect(throws: WireError(.invalidValue, "event 0: pcrIndex 24, a PC Client TPM has PCRs 0–23")) { try writer.append(event) }
        event.pcrIndex = 8
        event.digests.removeLast()
        #expect(throws: WireError(.invalidValue, "event 0: 1 digest(s), the header declares 2 bank(s)")) { try writer.record(event) }
        event.digests.append(TCGDigest(algorithm: .sha256, bytes: [1]))
        #expect(throws: WireError(.invalidValue, "event 0: digests[1] (sha256) is 1 bytes, expected 32")) { try writer.append(event) }
        event.digests[1] = TCGDigest(algorithm: .sha1, bytes: [UInt8](repeating: 0, count: 20))
        #expect(throws: WireError(.invalidValue, "event 0: digests[1] repeats sha1")) { try writer.append(event) }
        #expect(writer.eventCount == 0)
        #expect(writer.bytes == writer.header.serialized())
        // An in-memory event with a wrong digest size fails the replay instead of trapping.
        let log = TCGEventLog(header: writer.header, events: [event])
        #expect(throws: WireError.self) { try log.replay() }
    }
}
