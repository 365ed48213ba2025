import Foundation
import TPMWire

#if canImport(Glibc)
import Glibc
#endif

/// How the store rotates and retains.
public struct LogStoreConfiguration: Sendable, Hashable {
    /// A new segment starts once the current one holds at least this many bytes.
    public var segmentSize: Int
    /// Ended epochs kept; older ones are deleted when a new epoch starts. The open epoch is
    /// always kept whole (its replay needs every segment).
    public var retainEpochs: Int
    /// Ended epochs older than this (seconds since they ended) are deleted too; nil keeps them.
    public var retainSeconds: UInt64?
    /// How many of the last records the store keeps with the PCR value before each, so that
    /// recovery can find the record the PCR stopped at (the largest group commit, plus one).
    public var tailCapacity: Int

    public init(segmentSize: Int = 4 << 20, retainEpochs: Int = 16, retainSeconds: UInt64? = nil, tailCapacity: Int = 257) {
        self.segmentSize = max(segmentSize, 1)
        self.retainEpochs = max(retainEpochs, 0)
        self.retainSeconds = retainSeconds
        self.tailCapacity = max(tailCapacity, 2)
    }
}

/// The writer's side of the measurement log on disk (layout: `LogLayout`).
///
/// - One writer per state directory: opening takes `<state>/lock`; a second writer gets
///   `.locked` with the holder's pid.
/// - `append` writes the records and fsyncs the segment **before** it returns, so that the
///   caller extends the PCR only with durable records. Several records in one call share one
///   write and one fsync (group commit).
/// - On open, a torn tail (a record cut short, or bytes that are not a good record, at the end
///   of the last segment) is cut off: it was never extended, since extends follow the fsync.
///   Bytes that hold more than a cut record are first saved beside the segment
///   (`NNNN.tcg.torn-<ms>`), so nothing that was written is lost.
/// - Not thread-safe: one owner uses it at a time (the engine, from its I/O queue).
public final class LogStore: @unchecked Sendable {
    /// The epoch being appended to, as far as its files go.
    public struct OpenEpoch: Sendable {
        public internal(set) var manifest: EpochManifest
        public let header: TCGSpecIDEvent
        /// Records in the log (all durable).
        public internal(set) var count: UInt64
        /// What the log replays to, from the epoch's start values.
        public internal(set) var chain: PCRChain
        /// The last records and the PCR value before each.
        public internal(set) var tail: [(record: LogRecord, before: PCRChain)]
        /// Set when a segment other than the last is damaged: the epoch cannot go on.
        public internal(set) var damage: String?
    }

    public let layout: LogLayout
    public let configuration: LogStoreConfiguration
    private let lock: StateLock
    /// What opening repaired, one line each (for the daemon's log and `vmv log verify`).
    public private(set) var repairs: [String] = []
    public private(set) var openEpoch: OpenEpoch?
    /// The newest ended epoch.
    public private(set) var lastEnded: EpochManifest?
    private var segment: (index: Int, path: String, fd: Int32, length: Int)?
    private var writer: TCGEventLogWriter?
    /// Set after a write or fsync failed and the file could not be put back as it was.
    private var poisoned: String?
    /// `log/head`, kept open for the rewrite after every commit.
    private var headFD: Int32?

    private init(layout: LogLayout, configuration: LogStoreConfiguration, lock: StateLock) {
        self.layout = layout
        self.configuration = configuration
        self.lock = lock
    }

    deinit {
        if let segment { Glibc.close(segment.fd) }
        if let headFD { Glibc.close(headFD) }
    }

    /// Takes the lock, removes what an interrupted epoch creation or deletion left, loads the
    /// open epoch (if any) and cuts its torn tail.
    public static func open(_ layout: LogLayout, configuration: LogStoreConfiguration = .init()) throws(MeasurementLogError) -> LogStore {
        try LogFiles.makeDirectory(layout.logDirectory)
        let store = LogStore(layout: layout, configuration: configuration, lock: try StateLock(layout.lockPath))
        for name in try LogFiles.list(layout.logDirectory) where name.hasPrefix("epoch-") && (name.hasSuffix(".tmp") || name.hasSuffix(".deleted")) {
            try LogFiles.removeTree(layout.logDirectory + "/" + name)
        }
        let manifests = try layout.epochNumbers().map { (n) throws(MeasurementLogError) in try EpochManifest.load(layout, n) }
        store.lastEnded = manifests.last { $0.state != .open }
        let open = manifests.filter { $0.state == .open }
        // Only the newest epoch can be open; an older open one means an interrupted transition.
        for stale in open.dropLast() {
            var m = stale
            m.state = .broken
            m.endReason = "left open when epoch \(open.last?.epoch ?? 0) started"
            m.ended = Self.now()
            try LogFiles.replace(layout.manifestPath(m.epoch), with: m.encoded())
            store.repairs.append("epoch \(m.epoch): closed as broken (\(m.endReason ?? ""))")
        }
        if let manifest = open.last {
            try store.load(manifest)
        }
        return store
    }

    private func load(_ manifest: EpochManifest) throws(MeasurementLogError) {
        let scan = try EpochScan.scan(layout, manifest, tailCapacity: configuration.tailCapacity)
        var epoch = OpenEpoch(manifest: manifest, header: scan.header, count: scan.count, chain: scan.chain,
                              tail: Array(scan.tail.suffix(configuration.tailCapacity)), damage: nil)
        // A crash between creating a segment and recording it leaves epoch.json behind the files.
        if scan.stop == nil || scan.stop?.isLastSegment == true, scan.segments != manifest.segments {
            epoch.manifest.segments = scan.segments
            try LogFiles.replace(layout.manifestPath(manifest.epoch), with: epoch.manifest.encoded())
            repairs.append("epoch \(manifest.epoch): epoch.json now lists segments \(scan.segments.map(\.file).joined(separator: ", "))")
        }
        var last = scan.lastSegment
        if let stop = scan.stop {
            if stop.isLastSegment {
                try cutTornTail(stop, epoch: manifest.epoch)
                last.goodLength = stop.offset
            } else {
                epoch.damage = "\(stop.path) at byte \(stop.offset): \(stop.reason)"
            }
        }
        openEpoch = epoch
        writer = try? TCGEventLogWriter(header: scan.header)
        if epoch.damage == nil {
            let fd = try LogFiles.open(last.path, O_WRONLY)
            let size = try LogFiles.size(fd, last.path)
            guard size == last.goodLength else {
                Glibc.close(fd)
                throw MeasurementLogError(.damaged, "\(last.path): \(size) bytes, \(last.goodLength) expected after repair")
            }
            segment = (last.index, last.path, fd, last.goodLength)
        }
    }

    private func cutTornTail(_ stop: EpochScan.Stop, epoch: UInt32) throws(MeasurementLogError) {
        let dropped = stop.fileLength - stop.offset
        guard dropped > 0 else { return }
        let fd = try LogFiles.open(stop.path, O_RDWR)
        defer { Glibc.close(fd) }
        var saved = ""
        if !stop.isTruncation {
            let bytes = try LogFiles.read(fd, stop.path, from: stop.offset)
            let aside = "\(stop.path).torn-\(Self.now())"
            let out = try LogFiles.open(aside, O_WRONLY | O_CREAT | O_EXCL)
            defer { Glibc.close(out) }
            try LogFiles.write(out, bytes, at: 0, aside)
            try LogFiles.sync(out, aside)
            try LogFiles.syncDirectory(LogFiles.directory(of: aside))
            saved = "; the bytes are kept in \(aside)"
        }
        try LogFiles.truncate(fd, to: stop.offset, stop.path)
        try LogFiles.sync(fd, stop.path)
        repairs.append("epoch \(epoch): cut a torn tail of \(dropped) bytes from \(stop.path) at byte \(stop.offset) (\(stop.reason))\(saved)")
    }

    // MARK: Appending

    /// Writes `events` (the next records of the open epoch, in seq order) to the current
    /// segment and fsyncs it. When this returns they are durable; when it throws, none of
    /// them is in the log (the segment is cut back) and the store refuses further appends
    /// if it could not cut back.
    public func append(_ events: [TCGEvent], records: [VMVEventRecord]) throws(MeasurementLogError) {
        guard poisoned == nil else {
            throw MeasurementLogError(.closed, "the log store stopped after a failed write: \(poisoned ?? "")")
        }
        guard var epoch = openEpoch, epoch.damage == nil, let writer else {
            throw MeasurementLogError(.closed, "no open epoch to append to")
        }
        guard !events.isEmpty else { return }
        var bytes: [UInt8] = []
        guard events.count == records.count else {
            throw MeasurementLogError(.invalidMeasurement, "\(events.count) events for \(records.count) records")
        }
        for (i, (event, record)) in zip(events, records).enumerated() {
            guard record.seq == epoch.count + UInt64(i) else {
                throw MeasurementLogError(.invalidMeasurement, "record seq \(record.seq), where \(epoch.count + UInt64(i)) comes next")
            }
            do {
                bytes += try writer.record(event)
            } catch {
                throw MeasurementLogError(.invalidMeasurement, "record \(record.seq): \(error.reason)")
            }
        }
        if let current = segment, current.length >= configuration.segmentSize,
           epoch.manifest.segments.last.map({ $0.firstSeq < epoch.count }) ?? true {
            try rotate(&epoch)
        }
        guard let current = segment else { throw MeasurementLogError(.closed, "no open segment") }
        do {
            try LogFiles.write(current.fd, bytes, at: current.length, current.path)
            try LogFiles.sync(current.fd, current.path)
        } catch {
            // Nothing of this batch may stay: it was not acknowledged and will not be extended.
            do {
                try LogFiles.truncate(current.fd, to: current.length, current.path)
                try LogFiles.sync(current.fd, current.path)
            } catch let cut {
                poisoned = "\(error); cutting back also failed: \(cut)"
            }
            throw error
        }
        segment?.length += bytes.count
        for (event, record) in zip(events, records) {
            let before = epoch.chain
            try? epoch.chain.extend(with: event)
            if epoch.tail.count >= 2 * configuration.tailCapacity {
                epoch.tail.removeFirst(epoch.tail.count - configuration.tailCapacity)
            }
            epoch.tail.append((LogRecord(record: record, event: event), before))
            epoch.count += 1
        }
        openEpoch = epoch
    }

    /// Starts the next segment: created, synced, its name synced into the directory, then
    /// recorded in epoch.json. A crash in between leaves an empty segment that `open` adopts.
    private func rotate(_ epoch: inout OpenEpoch) throws(MeasurementLogError) {
        guard let current = segment else { return }
        let index = current.index + 1
        let name = LogLayout.segmentName(index)
        let path = layout.epochDirectory(epoch.manifest.epoch) + "/" + name
        let fd = try LogFiles.open(path, O_WRONLY | O_CREAT | O_TRUNC)
        do {
            try LogFiles.sync(fd, path)
            try LogFiles.syncDirectory(layout.epochDirectory(epoch.manifest.epoch))
            var manifest = epoch.manifest
            manifest.segments.append(.init(file: name, firstSeq: epoch.count))
            try LogFiles.replace(layout.manifestPath(manifest.epoch), with: manifest.encoded())
            epoch.manifest = manifest
        } catch {
            Glibc.close(fd)
            throw error
        }
        Glibc.close(current.fd)
        segment = (index, path, fd, 0)
    }

    /// Tells live readers that the first `records` records of the open epoch are committed
    /// (durable and extended).
    public func publish(committed records: UInt64) {
        guard let epoch = openEpoch else { return }
        let head = CommittedHead(epoch: epoch.manifest.epoch, records: records).bytes
        if headFD == nil { headFD = try? LogFiles.open(layout.headPath, O_WRONLY | O_CREAT) }
        guard let fd = headFD else { return }
        try? LogFiles.write(fd, head, at: 0, layout.headPath)
    }

    // MARK: Epochs

    /// Ends the open epoch: its manifest records the state, the reason, and the TPM's
    /// resetCount when it ended (nil when unknown).
    public func endEpoch(_ state: EpochManifest.State, reason: String, resetCount: UInt32? = nil) throws(MeasurementLogError) {
        guard var epoch = openEpoch else { return }
        precondition(state != .open, "endEpoch needs an end state")
        epoch.manifest.state = state
        epoch.manifest.endReason = reason
        epoch.manifest.ended = Self.now()
        epoch.manifest.endResetCount = resetCount
        try LogFiles.replace(layout.manifestPath(epoch.manifest.epoch), with: epoch.manifest.encoded())
        if let segment { Glibc.close(segment.fd) }
        segment = nil
        writer = nil
        openEpoch = nil
        lastEnded = epoch.manifest
    }

    /// What a new epoch starts from.
    public struct EpochPlan: Sendable {
        public var pcr: Int
        public var banks: [TPMAlgorithm]
        public var clock: TPMSClockInfo
        public var reason: String
        /// The PCR's values when the epoch starts from values its log cannot explain; nil
        /// when the PCR is at its reset value.
        public var startPCRs: [TPMAlgorithm: [UInt8]]?

        public init(pcr: Int, banks: [TPMAlgorithm], clock: TPMSClockInfo, reason: String, startPCRs: [TPMAlgorithm: [UInt8]]? = nil) {
            self.pcr = pcr
            self.banks = banks
            self.clock = clock
            self.reason = reason
            self.startPCRs = startPCRs
        }
    }

    /// Creates the next epoch (empty: the engine appends its epochStart record) and applies
    /// retention. The directory is built as `epoch-N.tmp` and renamed into place, so an
    /// epoch directory always has its manifest and header.
    public func startEpoch(_ plan: EpochPlan) throws(MeasurementLogError) {
        precondition(openEpoch == nil, "end the open epoch first")
        guard let header = TCGSpecIDEvent(banks: plan.banks), let writer = try? TCGEventLogWriter(header: header) else {
            throw MeasurementLogError(.configuration, "banks \(plan.banks.map(\.name)): each must be sha1, sha256, sha384 or sha512")
        }
        let number = (try layout.epochNumbers().last).map { $0 + 1 } ?? 0
        let previous = lastEnded
        let manifest = EpochManifest(
            epoch: number, pcr: plan.pcr, banks: plan.banks.map(\.name),
            resetCount: plan.clock.resetCount, restartCount: plan.clock.restartCount, started: Self.now(),
            state: .open, endReason: nil, ended: nil, endResetCount: nil,
            start: .init(reason: plan.reason, previousEpoch: previous?.epoch, previousEnd: previous?.state,
                         pcrs: plan.startPCRs.map { values in
                             Dictionary(uniqueKeysWithValues: values.map { ($0.key.name, Hex.encode($0.value)) })
                         }),
            segments: [.init(file: LogLayout.segmentName(0), firstSeq: 0)])
        let directory = layout.epochDirectory(number)
        let temporary = directory + ".tmp"
        if LogFiles.exists(temporary) { try LogFiles.removeTree(temporary) }
        try LogFiles.makeDirectory(temporary)
        for (name, bytes) in [("epoch.json", manifest.encoded()), (LogLayout.segmentName(0), header.serialized())] {
            let path = temporary + "/" + name
            let fd = try LogFiles.open(path, O_WRONLY | O_CREAT | O_EXCL)
            defer { Glibc.close(fd) }
            try LogFiles.write(fd, bytes, at: 0, path)
            try LogFiles.sync(fd, path)
        }
        try LogFiles.syncDirectory(temporary)
        try LogFiles.rename(temporary, directory)
        try LogFiles.syncDirectory(layout.logDirectory)

        let path = directory + "/" + LogLayout.segmentName(0)
        let fd = try LogFiles.open(path, O_WRONLY)
        segment = (0, path, fd, header.serializedSize)
        self.writer = writer
        openEpoch = OpenEpoch(manifest: manifest, header: header, count: 0,
                              chain: PCRChain(start: try manifest.startValues()), tail: [], damage: nil)
        publish(committed: 0)
        try applyRetention()
    }

    /// Deletes ended epochs beyond the count and age limits (renamed to `.deleted` first, so
    /// that a reader never sees half an epoch under its name).
    func applyRetention() throws(MeasurementLogError) {
        let numbers = try layout.epochNumbers()
        var ended: [EpochManifest] = []
        for n in numbers where n != openEpoch?.manifest.epoch {
            if let m = try? EpochManifest.load(layout, n), m.state != .open { ended.append(m) }
        }
        let now = Self.now()
        var doomed = Set(ended.dropLast(configuration.retainEpochs).map(\.epoch))
        if let limit = configuration.retainSeconds {
            for m in ended where now > (m.ended ?? m.started) + limit * 1000 { doomed.insert(m.epoch) }
        }
        for n in doomed.sorted() {
            let directory = layout.epochDirectory(n)
            try LogFiles.rename(directory, directory + ".deleted")
            try LogFiles.removeTree(directory + ".deleted")
        }
        if !doomed.isEmpty { try LogFiles.syncDirectory(layout.logDirectory) }
    }

    /// Releases the lock; the store cannot be used afterwards.
    public func close() {
        if let segment { Glibc.close(segment.fd) }
        if let headFD { Glibc.close(headFD) }
        headFD = nil
        segment = nil
        writer = nil
        lock.release()
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
