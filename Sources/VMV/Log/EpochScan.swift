import TPMWire

/// One pass over an epoch's segments that checks every record the way the verifier will
/// (digest = hash of the data in every bank, a well-formed VMV record for this PCR, seq
/// 0, 1, 2, …, this epoch, an epochStart first and only first) and replays them onto the
/// epoch's start values. The writer runs it on open to find a torn tail and the PCR value the
/// log predicts; readers run it to show and export what is there.
struct EpochScan {
    /// Where and why the records stop before the end of the files.
    struct Stop: Hashable {
        var segment: Int
        var path: String
        /// Byte offset in the segment file of the first byte that is not a good record.
        var offset: Int
        var fileLength: Int
        var reason: String
        /// The last segment: a torn tail the writer may cut, rather than damage in the middle.
        var isLastSegment: Bool
        /// Only the last record's bytes are missing (a crash during a write), nothing wrong
        /// with the bytes that are there.
        var isTruncation: Bool
    }

    let manifest: EpochManifest
    private(set) var header: TCGSpecIDEvent
    /// Good records, from seq 0.
    private(set) var count: UInt64 = 0
    /// The PCR value the good records replay to.
    private(set) var chain: PCRChain
    /// The records with seq ≥ `since`, when asked for.
    private(set) var records: [LogRecord] = []
    /// The last good records (at least `tailCapacity` of them when there are that many) and
    /// the chain before each: for recovery, which record the PCR stopped at.
    private(set) var tail: [(record: LogRecord, before: PCRChain)] = []
    /// The last segment read and the length of its good part.
    private(set) var lastSegment: (index: Int, path: String, goodLength: Int)
    /// Each segment file read, with the seq of its first record (as epoch.json lists them).
    private(set) var segments: [EpochManifest.Segment] = []
    private(set) var stop: Stop?
    /// The epoch's TCG log up to the last good record (header and records), when asked for.
    private(set) var tcgBytes: [UInt8] = []

    private init(manifest: EpochManifest, header: TCGSpecIDEvent, chain: PCRChain, firstSegment: String) {
        self.manifest = manifest
        self.header = header
        self.chain = chain
        lastSegment = (0, firstSegment, 0)
    }

    /// - Parameters:
    ///   - limit: stop after this many records (a live writer's committed count).
    ///   - since: collect the records from this seq on into `records`; nil collects none.
    ///   - tailCapacity: how many of the last records to keep in `tail`.
    ///   - wantBytes: build `tcgBytes`.
    static func scan(
        _ layout: LogLayout, _ manifest: EpochManifest, limit: UInt64? = nil, since: UInt64? = nil,
        tailCapacity: Int = 0, wantBytes: Bool = false
    ) throws(MeasurementLogError) -> EpochScan {
        let epoch = manifest.epoch
        let segments = try layout.segments(epoch)
        guard let first = segments.first, first.index == 0 else {
            throw MeasurementLogError(.damaged, "epoch \(epoch): \(layout.epochDirectory(epoch)) has no segment 0000.tcg")
        }
        guard let bytes0 = try LogFiles.read(first.path) else {
            throw MeasurementLogError(.damaged, "\(first.path): disappeared while reading (removed by retention?)")
        }
        var reader = ByteReader(bytes0)
        let header: TCGSpecIDEvent
        do {
            header = try TCGSpecIDEvent(from: &reader)
        } catch {
            throw MeasurementLogError(.damaged, "\(first.path): the log header does not parse: \(error.reason)")
        }
        guard header.banks == manifest.bankAlgorithms else {
            throw MeasurementLogError(.damaged, "\(first.path): header banks \(header.banks.map(\.name)) differ from epoch.json's \(manifest.banks)")
        }
        var scan = EpochScan(manifest: manifest, header: header, chain: PCRChain(start: try manifest.startValues()),
                             firstSegment: first.path)
        if wantBytes { scan.tcgBytes = Array(bytes0[0..<reader.offset]) }

        var expectedIndex = 0
        for (position, segment) in segments.enumerated() {
            let isLast = position == segments.count - 1
            guard segment.index == expectedIndex else {
                scan.stop = Stop(segment: expectedIndex, path: layout.epochDirectory(epoch) + "/" + LogLayout.segmentName(expectedIndex),
                                 offset: 0, fileLength: 0, reason: "segment \(LogLayout.segmentName(expectedIndex)) is missing",
                                 isLastSegment: false, isTruncation: false)
                return scan
            }
            expectedIndex += 1
            let bytes: [UInt8]
            let start: Int
            if position == 0 {
                bytes = bytes0
                start = reader.offset
            } else {
                guard let read = try LogFiles.read(segment.path) else {
                    throw MeasurementLogError(.damaged, "\(segment.path): disappeared while reading (removed by retention?)")
                }
                bytes = read
                start = 0
            }
            scan.lastSegment = (segment.index, segment.path, start)
            scan.segments.append(.init(file: LogLayout.segmentName(segment.index), firstSeq: scan.count))
            let prefix = TCGEventLog.parsePrefix(records: Array(bytes[start...]), header: header, firstIndex: Int(scan.count))
            for (i, event) in prefix.events.enumerated() {
                if let limit, scan.count >= limit { return scan }
                do {
                    try scan.accept(event, since: since, tailCapacity: tailCapacity)
                } catch {
                    scan.stop = Stop(segment: segment.index, path: segment.path, offset: start + prefix.offsets[i],
                                     fileLength: bytes.count, reason: "record \(scan.count): \(error)",
                                     isLastSegment: isLast, isTruncation: false)
                    return scan
                }
                let end = start + (i + 1 < prefix.offsets.count ? prefix.offsets[i + 1] : prefix.parsedLength)
                if wantBytes { scan.tcgBytes += bytes[(start + prefix.offsets[i])..<end] }
                scan.lastSegment.goodLength = end
            }
            if let error = prefix.error {
                if let limit, scan.count >= limit { return scan }
                scan.stop = Stop(segment: segment.index, path: segment.path, offset: start + prefix.parsedLength,
                                 fileLength: bytes.count, reason: error.reason, isLastSegment: isLast,
                                 isTruncation: error.code == .truncated || error.code == .sizeTooLarge)
                return scan
            }
        }
        return scan
    }

    private mutating func accept(_ event: TCGEvent, since: UInt64?, tailCapacity: Int) throws(MeasurementLogError) {
        func bad(_ reason: String) -> MeasurementLogError { MeasurementLogError(.damaged, reason) }
        guard event.pcrIndex == manifest.pcr else {
            throw bad("an event for PCR \(event.pcrIndex) in the log of PCR \(manifest.pcr)")
        }
        guard event.eventType == .eventTag else {
            throw bad("event type \(event.eventType.name), the VMV logs EV_EVENT_TAG")
        }
        let record: VMVEventRecord
        do {
            record = try VMVEventRecord(verifying: event)
        } catch {
            throw bad(error.reason)
        }
        guard record.seq == count else { throw bad("seq \(record.seq) where \(count) comes next") }
        guard record.epoch == manifest.epoch else { throw bad("epoch \(record.epoch) in the log of epoch \(manifest.epoch)") }
        guard (record.seq == 0) == (record.kind == .epochStart) else {
            throw bad(record.seq == 0 ? "the first record is a \(record.kind.name), not an epochStart" : "an epochStart record after the first")
        }
        let before = chain
        do {
            try chain.extend(with: event)
        } catch {
            throw bad(error.reason)
        }
        let logged = LogRecord(record: record, event: event)
        if let since, record.seq >= since { records.append(logged) }
        if tailCapacity > 0 {
            // Trimmed in halves, so that keeping the tail costs O(1) a record.
            if tail.count >= 2 * tailCapacity { tail.removeFirst(tail.count - tailCapacity) }
            tail.append((logged, before))
        }
        count += 1
    }
}
