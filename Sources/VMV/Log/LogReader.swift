import TPMWire

#if canImport(Glibc)
import Glibc
#endif

/// Read-only access to a state directory's measurement log, safe while a VMV appends to it:
/// no lock is taken, only complete records are read, and while a writer holds the lock the
/// records are capped at its committed count (`<state>/log/head`), so a reader never shows a
/// record whose PCR extend has not happened yet.
public struct LogReader: Sendable {
    public let layout: LogLayout

    public init(stateDirectory: String) {
        layout = LogLayout(stateDirectory: stateDirectory)
    }

    /// One epoch's log as read.
    public struct EpochLog: Sendable {
        public var manifest: EpochManifest
        public var header: TCGSpecIDEvent
        /// Records with seq ≥ the `since` asked for.
        public var records: [LogRecord]
        /// Good records in the epoch (from seq 0), as far as read.
        public var count: UInt64
        /// What those records replay to, from the epoch's start values.
        public var replayed: [TPMAlgorithm: [UInt8]]
        /// The last records and the PCR value before each (for "where do they diverge").
        public var tail: [(record: LogRecord, before: [TPMAlgorithm: [UInt8]])]
        /// Header and records, byte for byte as stored: the epoch's TCG log (when asked for).
        public var tcgBytes: [UInt8]
        /// Bytes after the last good record that are not a good record: a torn tail that the
        /// writer will cut on its next start, or damage.
        public var trailing: String?
        /// The pid of a VMV appending to this state directory, if one is.
        public var writer: Int32?
    }

    /// Every epoch's manifest, oldest first.
    public func epochs() throws(MeasurementLogError) -> [EpochManifest] {
        var out: [EpochManifest] = []
        for n in try layout.epochNumbers() {
            do {
                out.append(try EpochManifest.load(layout, n))
            } catch {
                // Deleted by retention between the listing and the read.
                if LogFiles.exists(layout.epochDirectory(n)) { throw error }
            }
        }
        return out
    }

    /// The newest epoch (the open one while a VMV runs), or nil when there is no log.
    public func latestEpoch() throws(MeasurementLogError) -> EpochManifest? {
        try epochs().last
    }

    /// Reads and checks one epoch. `since` selects the records returned in `records`;
    /// `tail` keeps that many of the last records; `tcg` also returns the TCG bytes.
    public func read(epoch: UInt32, since: UInt64 = 0, tail: Int = 0, tcg: Bool = false) throws(MeasurementLogError) -> EpochLog {
        guard LogFiles.exists(layout.manifestPath(epoch)) else {
            let known = (try? layout.epochNumbers().map(String.init).joined(separator: ", ")) ?? ""
            throw MeasurementLogError(.notFound, "\(layout.logDirectory): no epoch \(epoch)\(known.isEmpty ? " (no log yet)" : " (epochs: \(known))")")
        }
        let manifest = try EpochManifest.load(layout, epoch)
        let writer = StateLock.holder(layout.lockPath)
        let limit = writer != nil ? committedCount(epoch: epoch) : nil
        let scan = try EpochScan.scan(layout, manifest, limit: limit, since: since, tailCapacity: tail, wantBytes: tcg)
        var trailing: String?
        if let stop = scan.stop {
            trailing = "\(stop.path) at byte \(stop.offset): \(stop.reason)"
                + (stop.isLastSegment ? (stop.isTruncation ? " (a torn tail: a record cut short)" : " (at the end of the log)") : " (damage in the middle of the log)")
        }
        return EpochLog(manifest: manifest, header: scan.header, records: scan.records, count: scan.count,
                        replayed: scan.chain.values, tail: scan.tail.suffix(tail).map { ($0.record, $0.before.values) },
                        tcgBytes: scan.tcgBytes, trailing: trailing, writer: writer)
    }

    /// The committed record count a live writer published for `epoch`; nil when the head is
    /// for another epoch or cannot be read intact.
    func committedCount(epoch: UInt32) -> UInt64? {
        for _ in 0..<20 {
            guard let bytes = try? LogFiles.read(layout.headPath) else { return nil }
            if let head = CommittedHead(bytes) { return head.epoch == epoch ? head.records : nil }
            usleep(1000)   // caught in the middle of a rewrite
        }
        return nil
    }
}
