/// A TCG PC Client crypto-agile event log: a TCG_PCR_EVENT header (SHA-1 format, EV_NO_ACTION)
/// carrying the "Spec ID Event03" structure, then TCG_PCR_EVENT2 records. All little-endian.
/// The layout and the replay rules are described in docs/event-log.md.
///
/// `init(bytes:)` accepts exactly what `serialized()` writes back, byte for byte.
public struct TCGEventLog: Hashable, Sendable {
    public var header: TCGSpecIDEvent
    public var events: [TCGEvent]

    public init(header: TCGSpecIDEvent, events: [TCGEvent] = []) {
        self.header = header
        self.events = events
    }

    /// Parses a whole log. Errors name the event (its index in `events` and byte offset) and field.
    public init(bytes: [UInt8]) throws(WireError) {
        var scanner = try TCGEventScanner(bytes)
        var events: [TCGEvent] = []
        while try scanner.next() {
            events.append(scanner.currentEvent())
        }
        self.header = scanner.header
        self.events = events
    }

    /// The log's bytes: the header, then every event.
    public func serialized() -> [UInt8] {
        var w = ByteWriter(capacity: header.serializedSize + events.reduce(0) { $0 + $1.serializedSize })
        header.write(to: &w)
        for event in events { event.write(to: &w) }
        return w.bytes
    }
}

/// A record of the event log (the header or an event), written little-endian by `write(to:)`.
public protocol TCGLogRecord: Sendable {
    /// Bytes of the serialised record.
    var serializedSize: Int { get }
    func write(to writer: inout ByteWriter)
}

extension TCGLogRecord {
    /// The serialised record on its own: what a log store appends to its file.
    public func serialized() -> [UInt8] {
        var w = ByteWriter(capacity: serializedSize)
        write(to: &w)
        return w.bytes
    }
}

/// TCG_PCR_EVENT2 records read as far as they are well formed: how a log store reads its own
/// files, whose last record a crash may have cut short.
public struct TCGRecordPrefix: Sendable {
    public var events: [TCGEvent]
    /// The byte offset of each event in the bytes given.
    public var offsets: [Int]
    /// Bytes the events cover, from the start.
    public var parsedLength: Int
    /// Why the bytes after `parsedLength` are not a record; nil when every byte parsed.
    public var error: WireError?
}

extension TCGEventLog {
    /// Reads `bytes` that hold only TCG_PCR_EVENT2 records (the part of a log after its header,
    /// or a later segment of it) against `header`, as far as they parse; error messages count
    /// events from `firstIndex`. The rules are those of `init(bytes:)`.
    public static func parsePrefix(records bytes: [UInt8], header: TCGSpecIDEvent, firstIndex: Int = 0) -> TCGRecordPrefix {
        var scanner = TCGEventScanner(header: header, records: bytes, firstIndex: firstIndex)
        var prefix = TCGRecordPrefix(events: [], offsets: [], parsedLength: 0, error: nil)
        while true {
            let start = scanner.offset
            do {
                guard try scanner.next() else { break }
            } catch {
                prefix.error = error
                break
            }
            prefix.events.append(scanner.currentEvent())
            prefix.offsets.append(start)
            prefix.parsedLength = scanner.offset
        }
        return prefix
    }
}

/// One digest of an event: the bank it extends and the digest bytes.
public struct TCGDigest: Hashable, Sendable {
    public var algorithm: TPMAlgorithm
    public var bytes: [UInt8]

    public init(algorithm: TPMAlgorithm, bytes: [UInt8]) {
        self.algorithm = algorithm
        self.bytes = bytes
    }
}

/// A TCG_PCR_EVENT2 record.
public struct TCGEvent: Hashable, TCGLogRecord {
    /// The PCR this event extends (0–23).
    public var pcrIndex: Int
    /// Not covered by the digests: informative only, unless a rule that the PCR value then
    /// confirms depends on it (EV_NO_ACTION is not extended; see docs/event-log.md).
    public var eventType: TCGEventType
    /// TPML_DIGEST_VALUES, in wire order: one digest per algorithm of the Spec ID table.
    public var digests: [TCGDigest]
    /// The event data.
    public var data: [UInt8]

    public init(pcrIndex: Int, eventType: TCGEventType, digests: [TCGDigest], data: [UInt8]) {
        self.pcrIndex = pcrIndex
        self.eventType = eventType
        self.digests = digests
        self.data = data
    }

    /// The digest this event extends into the bank `algorithm`, if it has one.
    public func digest(for algorithm: TPMAlgorithm) -> [UInt8]? {
        digests.first { $0.algorithm == algorithm }?.bytes
    }

    public var serializedSize: Int {
        12 + digests.reduce(0) { $0 + 2 + $1.bytes.count } + 4 + data.count
    }

    /// Writes the TCG_PCR_EVENT2 record. Sizes are written as they are; `TCGEventLogWriter`
    /// checks an event against its header before it gets here.
    public func write(to w: inout ByteWriter) {
        w.writeLE(UInt32(truncatingIfNeeded: pcrIndex))
        w.writeLE(eventType.rawValue)
        w.writeLE(UInt32(truncatingIfNeeded: digests.count))
        for digest in digests {
            w.writeLE(digest.algorithm.rawValue)
            w.write(bytes: digest.bytes)
        }
        w.writeLE(UInt32(truncatingIfNeeded: data.count))
        w.write(bytes: data)
    }
}

/// TCG_EfiSpecIDEvent ("Spec ID Event03"): the log header's event data. It declares the
/// banks every later event carries a digest for, and each digest's size.
public struct TCGSpecIDEvent: Hashable, TCGLogRecord {
    public struct Algorithm: Hashable, Sendable {
        public var algorithm: TPMAlgorithm
        public var digestSize: Int

        public init(_ algorithm: TPMAlgorithm, digestSize: Int) {
            self.algorithm = algorithm
            self.digestSize = digestSize
        }

        /// A known hash algorithm with its own digest size.
        public init?(_ algorithm: TPMAlgorithm) {
            guard let size = algorithm.digestSize else { return nil }
            self.init(algorithm, digestSize: size)
        }
    }

    /// The signature every crypto-agile log starts with (16 bytes with its NUL).
    public static let signature: [UInt8] = Array("Spec ID Event03".utf8) + [0]
    /// TPM2_NUM_PCR_BANKS: the most banks a table may declare.
    public static let maxAlgorithms = 16
    /// The largest digest accepted for an algorithm this verifier does not know.
    public static let maxUnknownDigestSize = 512
    /// TCG_PCR_EVENT: pcrIndex, eventType, a 20-byte digest, eventDataSize.
    static let pcrEventHeaderSize = 32

    /// 0 = client, 1 = server (TCG_PCClientTPMPlatformClass).
    public var platformClass: UInt32
    public var specVersionMinor: UInt8
    public var specVersionMajor: UInt8
    public var specErrata: UInt8
    /// Size of UINTN in the firmware: 1 = 32-bit, 2 = 64-bit.
    public var uintnSize: UInt8
    /// The algorithm/digest-size table, in wire order.
    public var algorithms: [Algorithm]
    public var vendorInfo: [UInt8]

    public init(
        algorithms: [Algorithm], platformClass: UInt32 = 0, specVersionMinor: UInt8 = 0,
        specVersionMajor: UInt8 = 2, specErrata: UInt8 = 0, uintnSize: UInt8 = 2, vendorInfo: [UInt8] = []
    ) {
        self.algorithms = algorithms
        self.platformClass = platformClass
        self.specVersionMinor = specVersionMinor
        self.specVersionMajor = specVersionMajor
        self.specErrata = specErrata
        self.uintnSize = uintnSize
        self.vendorInfo = vendorInfo
    }

    /// A header for the given banks, with their standard digest sizes. Nil if one is not a known hash.
    public init?(banks: [TPMAlgorithm]) {
        var table: [Algorithm] = []
        for bank in banks {
            guard let entry = Algorithm(bank) else { return nil }
            table.append(entry)
        }
        self.init(algorithms: table)
    }

    /// The banks of the table, in wire order.
    public var banks: [TPMAlgorithm] { algorithms.map(\.algorithm) }

    var eventDataSize: Int { 16 + 4 + 4 + 4 + 4 * algorithms.count + 1 + vendorInfo.count }

    /// Bytes of the whole TCG_PCR_EVENT header record carrying this structure.
    public var serializedSize: Int { Self.pcrEventHeaderSize + eventDataSize }

    /// Writes the TCG_PCR_EVENT header record carrying this structure.
    public func write(to w: inout ByteWriter) {
        w.writeLE(UInt32(0))                                   // pcrIndex
        w.writeLE(TCGEventType.noAction.rawValue)              // eventType
        w.write(bytes: [UInt8](repeating: 0, count: 20))       // digest
        w.writeLE(UInt32(eventDataSize))
        w.write(bytes: Self.signature)
        w.writeLE(platformClass)
        w.write(specVersionMinor)
        w.write(specVersionMajor)
        w.write(specErrata)
        w.write(uintnSize)
        w.writeLE(UInt32(truncatingIfNeeded: algorithms.count))
        for entry in algorithms {
            w.writeLE(entry.algorithm.rawValue)
            w.writeLE(UInt16(truncatingIfNeeded: entry.digestSize))
        }
        w.write(UInt8(truncatingIfNeeded: vendorInfo.count))
        w.write(bytes: vendorInfo)
    }

    /// Parses the TCG_PCR_EVENT header record and its Spec ID Event03 data.
    public init(from r: inout ByteReader) throws(WireError) {
        let s = "TCG_PCR_EVENT (log header)"
        let pcrIndex = try r.readUInt32LE("\(s).pcrIndex")
        let eventType = TCGEventType(try r.readUInt32LE("\(s).eventType"))
        guard eventType == .noAction else {
            throw WireError(.invalidValue, "\(s).eventType: \(eventType.name), a crypto-agile log starts with EV_NO_ACTION")
        }
        guard pcrIndex == 0 else {
            throw WireError(.invalidValue, "\(s).pcrIndex: \(pcrIndex), the Spec ID event is logged for PCR 0")
        }
        let digest = try r.readBytes(20, "\(s).digest")
        guard digest.allSatisfy({ $0 == 0 }) else {
            throw WireError(.invalidValue, "\(s).digest: the Spec ID event's digest must be 20 zero bytes")
        }
        let eventDataSize = Int(try r.readUInt32LE("\(s).eventDataSize"))
        guard eventDataSize <= r.remaining else {
            throw WireError(.sizeTooLarge, "\(s).eventDataSize: size \(eventDataSize) exceeds the \(r.remaining) bytes left")
        }
        var d = try r.subReader(eventDataSize, "\(s).event")

        let e = "TCG_EfiSpecIDEvent"
        let signature = try d.readBytes(16, "\(e).signature")
        guard signature == Self.signature else {
            let shown = String(decoding: signature.prefix { $0 != 0 }, as: UTF8.self)
            let hint = shown == "Spec ID Event00" ? " (a SHA-1-only log, not crypto-agile)" : ""
            throw WireError(.invalidValue, "\(e).signature: '\(shown)'\(hint), expected 'Spec ID Event03'")
        }
        platformClass = try d.readUInt32LE("\(e).platformClass")
        specVersionMinor = try d.readUInt8("\(e).specVersionMinor")
        specVersionMajor = try d.readUInt8("\(e).specVersionMajor")
        specErrata = try d.readUInt8("\(e).specErrata")
        uintnSize = try d.readUInt8("\(e).uintnSize")
        guard uintnSize == 1 || uintnSize == 2 else {
            throw WireError(.invalidValue, "\(e).uintnSize: \(uintnSize), expected 1 (32-bit) or 2 (64-bit)")
        }
        let count = try d.readUInt32LE("\(e).numberOfAlgorithms")
        guard count >= 1 else {
            throw WireError(.invalidValue, "\(e).numberOfAlgorithms: 0, a log must declare at least one bank")
        }
        guard count <= UInt32(Self.maxAlgorithms) else {
            throw WireError(.countTooLarge, "\(e).numberOfAlgorithms: \(count), at most \(Self.maxAlgorithms) allowed")
        }
        var table: [Algorithm] = []
        table.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            let f = "\(e).digestSizes[\(i)]"
            let alg = TPMAlgorithm(try d.readUInt16LE("\(f).algorithmId"))
            let size = Int(try d.readUInt16LE("\(f).digestSize"))
            if let known = alg.digestSize {
                guard size == known else {
                    throw WireError(.invalidValue, "\(f).digestSize: \(size) for \(alg.name), whose digests are \(known) bytes")
                }
            } else if alg.rawValue == 0 || TPMAlgorithm.names[alg.rawValue] != nil {
                throw WireError(.unknownAlgorithm, "\(f).algorithmId: \(alg.name) is not a hash algorithm")
            } else {
                // An algorithm we do not know: kept, and its digests skipped by this size.
                guard (1...Self.maxUnknownDigestSize).contains(size) else {
                    throw WireError(.sizeTooLarge, "\(f).digestSize: \(size) for unknown algorithm \(alg.name), expected 1–\(Self.maxUnknownDigestSize)")
                }
            }
            guard !table.contains(where: { $0.algorithm == alg }) else {
                throw WireError(.invalidValue, "\(f).algorithmId: \(alg.name) is listed twice")
            }
            table.append(Algorithm(alg, digestSize: size))
        }
        algorithms = table
        let vendorSize = Int(try d.readUInt8("\(e).vendorInfoSize"))
        vendorInfo = try d.readBytes(vendorSize, "\(e).vendorInfo")
        try d.expectEnd("\(s).event (eventDataSize \(eventDataSize))")
    }
}

/// Walks the TCG_PCR_EVENT2 records of a log without copying them: the one parser behind both
/// `TCGEventLog(bytes:)` and the streaming replay. After `next()` returns true, the current
/// record's fields are set and its digests and data are ranges of `bytes`.
struct TCGEventScanner {
    let bytes: [UInt8]
    let header: TCGSpecIDEvent
    /// Algorithm identifiers and digest sizes by table position.
    private let ids: [UInt16]
    private let sizes: [Int]
    private var reader: ByteReader

    /// Index in `events` of the current record, and its byte offset.
    private(set) var index = -1
    private(set) var recordOffset = 0
    private(set) var pcrIndex = 0
    private(set) var eventType = TCGEventType.noAction
    /// Byte offset of each digest, by table position (every table algorithm appears once).
    private(set) var digestOffsets: [Int]
    /// Table positions in wire order (the count always equals the table's).
    private(set) var digestOrder: [Int]
    private(set) var dataOffset = 0
    private(set) var dataCount = 0

    /// PC Client TPMs have 24 PCRs; an event for any other index cannot be quoted.
    static let pcrCount = PCRSelection.pcClientPCRCount

    init(_ bytes: [UInt8]) throws(WireError) {
        self.bytes = bytes
        reader = ByteReader(bytes)
        header = try TCGSpecIDEvent(from: &reader)
        ids = header.algorithms.map(\.algorithm.rawValue)
        sizes = header.algorithms.map(\.digestSize)
        digestOffsets = [Int](repeating: 0, count: sizes.count)
        digestOrder = [Int](repeating: 0, count: sizes.count)
    }

    /// Records only, without a header (a later segment of a log whose header is `header`);
    /// event indices count from `firstIndex`.
    init(header: TCGSpecIDEvent, records bytes: [UInt8], firstIndex: Int) {
        self.bytes = bytes
        reader = ByteReader(bytes)
        self.header = header
        ids = header.algorithms.map(\.algorithm.rawValue)
        sizes = header.algorithms.map(\.digestSize)
        digestOffsets = [Int](repeating: 0, count: sizes.count)
        digestOrder = [Int](repeating: 0, count: sizes.count)
        index = firstIndex - 1
    }

    /// Byte offset of the next record.
    var offset: Int { reader.offset }

    /// Reads the next record; false at the end of the log.
    mutating func next() throws(WireError) -> Bool {
        guard !reader.isAtEnd else { return false }
        index += 1
        recordOffset = reader.offset
        do {
            try readRecord()
        } catch {
            throw WireError(error.code, "event \(index) (TCG_PCR_EVENT2 at byte \(recordOffset)): \(error.reason)")
        }
        return true
    }

    // Field names are string literals here: no string is built on the hot path, only in errors.
    private mutating func readRecord() throws(WireError) {
        let pcr = try reader.readUInt32LE("pcrIndex")
        guard pcr < UInt32(Self.pcrCount) else {
            throw WireError(.invalidValue, "pcrIndex: \(pcr), a PC Client TPM has PCRs 0–\(Self.pcrCount - 1)")
        }
        pcrIndex = Int(pcr)
        eventType = TCGEventType(try reader.readUInt32LE("eventType"))
        let count = try reader.readUInt32LE("digests.count")
        guard count <= UInt32(sizes.count) else {
            throw WireError(.countTooLarge, "digests.count: \(count), the Spec ID table declares \(sizes.count) algorithm(s)")
        }
        guard count == UInt32(sizes.count) else {
            throw WireError(.invalidValue, "digests.count: \(count), every event must carry a digest for each of the \(sizes.count) banks of the Spec ID table (\(Self.names(header.banks)))")
        }
        var seen: UInt32 = 0
        for i in 0..<Int(count) {
            let id = try readDigestAlgorithm(i)
            guard let position = ids.firstIndex(of: id) else {
                throw WireError(.unknownAlgorithm, "digests[\(i)].algorithmId: \(TPMAlgorithm(id).name) is not in the Spec ID table (\(Self.names(header.banks)))")
            }
            guard seen & (1 << position) == 0 else {
                throw WireError(.invalidValue, "digests[\(i)].algorithmId: \(TPMAlgorithm(id).name) appears twice")
            }
            seen |= 1 << position
            let size = sizes[position]
            guard size <= reader.remaining else {
                throw WireError.truncated("digests[\(i)].digest (\(TPMAlgorithm(id).name))", needed: size, available: reader.remaining)
            }
            digestOffsets[position] = reader.offset
            digestOrder[i] = position
            try reader.skip(size, "digest")
        }
        let size = try reader.readUInt32LE("eventSize")
        guard UInt64(size) <= UInt64(reader.remaining) else {
            throw WireError(.sizeTooLarge, "eventSize: size \(size) exceeds the \(reader.remaining) bytes left")
        }
        dataOffset = reader.offset
        dataCount = Int(size)
        try reader.skip(dataCount, "event")
    }

    private mutating func readDigestAlgorithm(_ i: Int) throws(WireError) -> UInt16 {
        guard reader.remaining >= 2 else {
            throw WireError.truncated("digests[\(i)].algorithmId", needed: 2, available: reader.remaining)
        }
        return try reader.readUInt16LE("algorithmId")
    }

    private static func names(_ banks: [TPMAlgorithm]) -> String {
        banks.map(\.name).joined(separator: ", ")
    }

    /// The current record as a value.
    func currentEvent() -> TCGEvent {
        var digests: [TCGDigest] = []
        digests.reserveCapacity(digestOrder.count)
        for position in digestOrder {
            let start = digestOffsets[position]
            digests.append(TCGDigest(algorithm: header.algorithms[position].algorithm,
                                     bytes: Array(bytes[start..<(start + sizes[position])])))
        }
        return TCGEvent(pcrIndex: pcrIndex, eventType: eventType, digests: digests,
                        data: Array(bytes[dataOffset..<(dataOffset + dataCount)]))
    }
}
