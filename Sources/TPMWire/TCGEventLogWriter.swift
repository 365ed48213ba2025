/// Writes a crypto-agile event log from scratch: the header for the banks the log's PCR is
/// extended in, then events one at a time. Every event is checked against the header before it
/// is written, so what this writes `TCGEventLog(bytes:)` reads back.
///
/// A log store that keeps its log in a file writes `header.serialized()` once and then
/// `record(_:)` per event; `append` keeps the whole log in `bytes` (tests, export).
public struct TCGEventLogWriter: Sendable {
    public let header: TCGSpecIDEvent
    private var writer: ByteWriter
    public private(set) var eventCount = 0

    /// The header followed by every appended record.
    public var bytes: [UInt8] { writer.bytes }

    /// Starts a log with `header`, which must be one `TCGEventLog(bytes:)` accepts.
    public init(header: TCGSpecIDEvent) throws(WireError) {
        var reader = ByteReader(header.serialized())
        self.header = try TCGSpecIDEvent(from: &reader)
        writer = ByteWriter(capacity: 4096)
        self.header.write(to: &writer)
    }

    /// Starts a log for these banks (sha1, sha256, sha384, sha512), in this order.
    public init(banks: [TPMAlgorithm]) throws(WireError) {
        guard let header = TCGSpecIDEvent(banks: banks) else {
            throw WireError(.unknownAlgorithm, "event log banks \(banks.map(\.name)): each must be a hash algorithm")
        }
        try self.init(header: header)
    }

    /// An event whose digest in every bank is the hash of its data: how the VMV logs each
    /// measurement, so the PCR covers every byte a verifier reads.
    public func measurement(pcr: Int, type: TCGEventType, data: [UInt8]) throws(WireError) -> TCGEvent {
        var digests: [TCGDigest] = []
        digests.reserveCapacity(header.algorithms.count)
        for entry in header.algorithms {
            guard let digest = entry.algorithm.hash(data) else {
                throw WireError(.unknownAlgorithm, "event log bank \(entry.algorithm.name): this verifier cannot compute its digests")
            }
            digests.append(TCGDigest(algorithm: entry.algorithm, bytes: digest))
        }
        return TCGEvent(pcrIndex: pcr, eventType: type, digests: digests, data: data)
    }

    /// The EV_NO_ACTION event saying that PCR 0 started at `locality` (TPM2_Startup at
    /// locality 3 leaves PCR 0 at 0…03). It must come before any event for PCR 0.
    public func startupLocalityEvent(_ locality: UInt8) -> TCGEvent {
        TCGEvent(
            pcrIndex: 0, eventType: .noAction,
            digests: header.algorithms.map { TCGDigest(algorithm: $0.algorithm, bytes: [UInt8](repeating: 0, count: $0.digestSize)) },
            data: PCRReplayer.startupLocalitySignature + [locality])
    }

    /// The serialised TCG_PCR_EVENT2 record of `event`, after checking it against the header.
    public func record(_ event: TCGEvent) throws(WireError) -> [UInt8] {
        try check(event)
        return event.serialized()
    }

    /// Appends `event` to `bytes`.
    public mutating func append(_ event: TCGEvent) throws(WireError) {
        try check(event)
        event.write(to: &writer)
        eventCount += 1
    }

    /// Appends a measurement (see `measurement(pcr:type:data:)`) and returns it.
    @discardableResult
    public mutating func append(pcr: Int, type: TCGEventType, data: [UInt8]) throws(WireError) -> TCGEvent {
        let event = try measurement(pcr: pcr, type: type, data: data)
        try append(event)
        return event
    }

    private func check(_ event: TCGEvent) throws(WireError) {
        let e = "event \(eventCount)"
        guard (0..<TCGEventScanner.pcrCount).contains(event.pcrIndex) else {
            throw WireError(.invalidValue, "\(e): pcrIndex \(event.pcrIndex), a PC Client TPM has PCRs 0–\(TCGEventScanner.pcrCount - 1)")
        }
        guard event.digests.count == header.algorithms.count else {
            throw WireError(.invalidValue, "\(e): \(event.digests.count) digest(s), the header declares \(header.algorithms.count) bank(s)")
        }
        for (i, digest) in event.digests.enumerated() {
            guard let entry = header.algorithms.first(where: { $0.algorithm == digest.algorithm }) else {
                throw WireError(.unknownAlgorithm, "\(e): digests[\(i)] is \(digest.algorithm.name), not a bank of the header")
            }
            guard digest.bytes.count == entry.digestSize else {
                throw WireError(.invalidValue, "\(e): digests[\(i)] (\(digest.algorithm.name)) is \(digest.bytes.count) bytes, expected \(entry.digestSize)")
            }
            guard !event.digests[..<i].contains(where: { $0.algorithm == digest.algorithm }) else {
                throw WireError(.invalidValue, "\(e): digests[\(i)] repeats \(digest.algorithm.name)")
            }
        }
        guard UInt64(event.data.count) <= UInt64(UInt32.max) else {
            throw WireError(.sizeTooLarge, "\(e): \(event.data.count) bytes of event data, at most \(UInt32.max)")
        }
    }
}
