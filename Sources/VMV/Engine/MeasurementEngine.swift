import Dispatch
import Logging
import TPM
import TPMWire

/// The measurement engine: every measurement becomes one record of the log, durable before
/// the VMV PCR is extended with it in every allocated bank.
///
/// `measure` may be called from many tasks at once. Calls that arrive while a commit is in
/// progress wait together and become the next commit: one write and one fsync for all of them
/// (group commit), then their extends in log order. The file work runs on a queue of its own
/// and the TPM on its actor's thread, so neither blocks the cooperative pool.
///
/// On `open`, recovery reconciles the log with the PCR (docs/measurement-log.md, "Recovery"):
/// equal → go on; a few extends behind → finish them, once; anything else → the epoch is
/// closed as broken and a new one states the PCR value it starts from.
public actor MeasurementEngine {
    public struct Configuration: Sendable, Hashable {
        /// The VMV PCR (static-OS range by default; nothing else may extend it).
        public var pcr: Int
        public var store: LogStoreConfiguration
        /// The most measurements one group commit takes.
        public var maxBatch: Int
        /// Read the PCR after every commit and compare it with the log's replay, so that an
        /// extend by anything else is caught at the next commit (and closes the epoch).
        public var checkAfterExtend: Bool

        public init(pcr: Int = 15, store: LogStoreConfiguration = .init(), maxBatch: Int = 256, checkAfterExtend: Bool = true) {
            self.pcr = pcr
            self.maxBatch = max(1, maxBatch)
            var store = store
            store.tailCapacity = max(store.tailCapacity, self.maxBatch + 1)
            self.store = store
            self.checkAfterExtend = checkAfterExtend
        }
    }

    /// Where the engine stands.
    public struct Status: Sendable, Hashable {
        public var epoch: UInt32
        public var pcr: Int
        public var banks: [TPMAlgorithm]
        /// Records in the log, and how many of them are extended into the PCR.
        public var records: UInt64
        public var extended: UInt64
        /// Group commits (write + fsync) since open: fewer than measurements under load.
        public var commits: UInt64
    }

    public nonisolated let configuration: Configuration
    public nonisolated let layout: LogLayout
    private let tpm: TPM
    private let store: LogStore
    private let io = DispatchQueue(label: "vmv.log.io")
    private let logger: Logger

    /// What recovery did when the engine opened.
    public private(set) var recovery: RecoveryReport?
    /// Epoch changes after open (a foreign extend caught at run time), newest last.
    public private(set) var epochChanges: [RecoveryReport.Ended] = []

    private var pending: [(Measurement, CheckedContinuation<LogRecord, any Error>)] = []
    private var committing = false
    private var closed = false
    /// Set when appending can no longer be trusted to be durable: every call fails with it.
    private var failure: MeasurementLogError?

    // The open epoch, as the engine extends it.
    private var eventWriter: TCGEventLogWriter?
    private var epochNumber: UInt32 = 0
    private var epochResetCount: UInt32 = 0
    private var banks: [TPMAlgorithm] = []
    /// Records in the open epoch's log (the store's count, kept here so that the actor never
    /// reads the store while the I/O queue writes it).
    private var logCount: UInt64 = 0
    private var commits: UInt64 = 0
    /// Records of the open epoch that are extended, and the PCR value after them.
    private var extended: UInt64 = 0
    private var expected = PCRChain(start: [:])
    /// Durable records whose extend failed: finished (or found done) before the next commit.
    private var unextended: [TCGEvent] = []

    private init(tpm: TPM, store: LogStore, configuration: Configuration, logger: Logger) {
        self.tpm = tpm
        self.store = store
        self.configuration = configuration
        self.layout = store.layout
        self.logger = logger
    }

    /// Opens the log in `stateDirectory` (taking its lock), recovers it against the TPM and
    /// returns an engine ready to measure. Fails with `.foreignPCR` when the PCR holds a value
    /// a fresh epoch cannot explain, `.locked` when another VMV appends to this directory.
    public static func open(
        stateDirectory: String, tpm: TPM, configuration: Configuration = .init(),
        logger: Logger = Logger(label: "vmv.log")
    ) async throws -> MeasurementEngine {
        guard (0..<PCRSelection.pcClientPCRCount).contains(configuration.pcr) else {
            throw MeasurementLogError(.configuration, "pcr = \(configuration.pcr): a PC Client TPM has PCRs 0–23")
        }
        let layout = LogLayout(stateDirectory: stateDirectory)
        let io = DispatchQueue(label: "vmv.log.open")
        let store = try await run(on: io) { () throws(MeasurementLogError) in try LogStore.open(layout, configuration: configuration.store) }
        let engine = MeasurementEngine(tpm: tpm, store: store, configuration: configuration, logger: logger)
        do {
            try await engine.recover()
        } catch {
            await engine.closeStore()
            throw error
        }
        return engine
    }

    public func status() -> Status {
        Status(epoch: epochNumber, pcr: configuration.pcr, banks: banks, records: logCount, extended: extended, commits: commits)
    }

    // MARK: Measuring

    /// Logs `measurement` durably, extends the PCR with it in every allocated bank, and returns
    /// the record (seq, epoch, digests). Throws before anything is written for a measurement
    /// the format refuses; throws `.tpm` when the record is durable but its extend failed (it
    /// is extended before the next commit, or by recovery after a restart).
    public func measure(_ measurement: Measurement) async throws -> LogRecord {
        try measurement.validate()
        if let failure { throw failure }
        guard !closed else { throw MeasurementLogError(.closed, "the measurement engine is closed") }
        return try await withCheckedThrowingContinuation { continuation in
            pending.append((measurement, continuation))
            if !committing {
                committing = true
                Task { await self.drain() }
            }
        }
    }

    /// Commits what is pending, batch after batch, until nothing is.
    private func drain() async {
        while !pending.isEmpty {
            let batch = Array(pending.prefix(configuration.maxBatch))
            pending.removeFirst(batch.count)
            let results = await commit(batch.map(\.0))
            for ((_, continuation), result) in zip(batch, results) {
                continuation.resume(with: result.mapError { $0 as any Error })
            }
        }
        committing = false
    }

    /// One group commit: records built, written and fsynced together, then extended in order.
    private func commit(_ measurements: [Measurement]) async -> [Result<LogRecord, MeasurementLogError>] {
        do throws(MeasurementLogError) {
            if let failure { throw failure }
            try await finishUnextended()
            guard let eventWriter else { throw MeasurementLogError(.closed, "no open epoch") }
            let time = LogStore.now()
            var records: [VMVEventRecord] = []
            var events: [TCGEvent] = []
            for (i, m) in measurements.enumerated() {
                let record = m.record(seq: logCount + UInt64(i), epoch: epochNumber, pcr: configuration.pcr, time: time)
                records.append(record)
                events.append(try Self.event(record, eventWriter))
            }
            return try await appendAndExtend(records: records, events: events)
        } catch {
            return measurements.map { _ in .failure(error) }
        }
    }

    private static func event(_ record: VMVEventRecord, _ writer: TCGEventLogWriter) throws(MeasurementLogError) -> TCGEvent {
        do {
            return try writer.measurement(pcr: Int(record.pcr), type: .eventTag, data: record.wireBytes)
        } catch {
            throw MeasurementLogError(.invalidMeasurement, "record \(record.seq): \(error.reason)")
        }
    }

    /// Durable first, then the extends in log order, then (optionally) a check of the PCR.
    /// A failed extend fails that record and the ones after it; those are already durable,
    /// so they are kept for `finishUnextended`.
    private func appendAndExtend(records: [VMVEventRecord], events: [TCGEvent]) async throws(MeasurementLogError)
        -> [Result<LogRecord, MeasurementLogError>]
    {
        let store = self.store
        do throws(MeasurementLogError) {
            try await Self.run(on: io) { () throws(MeasurementLogError) in try store.append(events, records: records) }
        } catch {
            if error.code == .closed { failure = error }
            throw error
        }
        logCount += UInt64(events.count)
        commits += 1
        var results: [Result<LogRecord, MeasurementLogError>] = []
        for (i, event) in events.enumerated() {
            do {
                try await extend(event)
                results.append(.success(LogRecord(record: records[i], event: event)))
            } catch {
                unextended = Array(events[i...])
                let failed = MeasurementLogError(.tpm, "record \(records[i].seq) of epoch \(epochNumber) is in the log but its PCR extend failed (\(error)); it will be extended before the next measurement, or by recovery on restart")
                results += Array(repeating: .failure(failed), count: events.count - i)
                logger.error("PCR extend failed", metadata: ["seq": "\(records[i].seq)", "error": "\(error)"])
                return results
            }
        }
        if configuration.checkAfterExtend { try await checkPCR() }
        publish()
        return results
    }

    private func extend(_ event: TCGEvent) async throws(MeasurementLogError) {
        do {
            try await tpm.extend(pcr: event.pcrIndex, digests: Dictionary(uniqueKeysWithValues: event.digests.map { ($0.algorithm, $0.bytes) }))
        } catch {
            throw MeasurementLogError(.tpm, "\(error)")
        }
        try? expected.extend(with: event)
        extended += 1
    }

    /// Before a commit after a failed extend: the TPM may or may not have done the extends
    /// whose answers were lost; the PCR says which. Done ones are counted, the rest extended.
    private func finishUnextended() async throws(MeasurementLogError) {
        guard !unextended.isEmpty else { return }
        let values = try await readPCR()
        var chain = expected
        var done = 0
        while chain.values != values, done < unextended.count {
            try? chain.extend(with: unextended[done])
            done += 1
        }
        guard chain.values == values else {
            try await breakEpoch(Recovery.divergence(pcr: configuration.pcr, log: chain.values, tpm: values,
                                                     records: logCount, epoch: epochNumber), values: values)
            return
        }
        expected = chain
        extended += UInt64(done)
        let rest = Array(unextended[done...])
        unextended = []
        for (i, event) in rest.enumerated() {
            do {
                try await extend(event)
            } catch {
                unextended = Array(rest[i...])
                throw error
            }
        }
        publish()
    }

    /// The PCR must equal the log's replay after every commit; if it moved without us,
    /// something else extends it: the epoch is closed as broken.
    private func checkPCR() async throws(MeasurementLogError) {
        let values = try await readPCR()
        guard values != expected.values else { return }
        let why = "PCR \(configuration.pcr) moved without a VMV extend after seq \(extended == 0 ? 0 : extended - 1): "
            + Recovery.divergence(pcr: configuration.pcr, log: expected.values, tpm: values,
                                  records: logCount, epoch: epochNumber)
        try await breakEpoch(why, values: values)
    }

    /// Ends the open epoch and starts the next one. A TPM reset under the running VMV that
    /// left the PCR at its reset value ends the epoch as `reset` and the next one starts clean;
    /// anything else (records extended onto a cleared PCR included) ends it as broken, and the
    /// next one starts from `values`, which its log cannot explain.
    private func breakEpoch(_ why: String, values: [TPMAlgorithm: [UInt8]]) async throws(MeasurementLogError) {
        let clock = try await readClock()
        let pcr = configuration.pcr
        let atInitial = values == Dictionary(uniqueKeysWithValues: banks.map { ($0, PCRValues.initialValue(pcr: pcr, hash: $0)) })
        let reset = clock.resetCount != epochResetCount
        let state: EpochManifest.State = reset && atInitial ? .reset : .broken
        let reason = reset
            ? "TPM reset while the VMV ran (resetCount \(epochResetCount) → \(clock.resetCount))" + (atInitial ? "" : "; \(why)")
            : why
        logger.error("the measurement log no longer explains the PCR: epoch ended", metadata: ["state": "\(state.rawValue)", "reason": "\(reason)"])
        let ended = RecoveryReport.Ended(epoch: epochNumber, state: state, reason: reason)
        let store = self.store
        try await Self.run(on: io) { () throws(MeasurementLogError) in try store.endEpoch(state, reason: reason, resetCount: clock.resetCount) }
        unextended = []
        let next = state == .reset
            ? Recovery.NewEpoch(reason: "\(reason), after epoch \(ended.epoch)", startPCRs: nil)
            : Recovery.NewEpoch(reason: Recovery.brokenStart(ended.epoch, reason), startPCRs: atInitial ? nil : values)
        try await startEpoch(next, clock: clock)
        epochChanges.append(ended)
    }

    private func publish() {
        let store = self.store
        let committed = extended
        io.async { store.publish(committed: committed) }
    }

    // MARK: Recovery

    private func recover() async throws {
        let store = self.store
        let clock = try await readClock()
        let allocated: [TPMAlgorithm]
        do {
            allocated = try await tpm.allocatedBanks()
        } catch {
            throw MeasurementLogError(.tpm, "\(error)")
        }
        guard !allocated.isEmpty, allocated.allSatisfy(\.isComputableHash) else {
            throw MeasurementLogError(.configuration, "the TPM's allocated banks \(allocated.map(\.name)) must all be sha1, sha256, sha384 or sha512 for the VMV to log them")
        }
        banks = allocated
        let values = try await readPCR(configuration.pcr)
        var openValues: [TPMAlgorithm: [UInt8]]?
        if let open = store.openEpoch, open.manifest.pcr != configuration.pcr {
            openValues = try? await readPCR(open.manifest.pcr)
        }
        let decision = Recovery.decide(open: store.openEpoch, lastEnded: store.lastEnded, pcr: configuration.pcr,
                                       tpm: .init(clock: clock, banks: allocated, values: values, openEpochPCRValues: openValues))
        var report = RecoveryReport(outcome: .continued, epoch: 0, records: 0, ended: nil, repairs: store.repairs)
        if let end = decision.end, let open = store.openEpoch {
            try await Self.run(on: io) { () throws(MeasurementLogError) in
                try store.endEpoch(end.state, reason: end.reason, resetCount: clock.resetCount)
            }
            report.ended = .init(epoch: open.manifest.epoch, state: end.state, reason: end.reason)
        }
        switch decision.next {
        case .refuse(let message):
            throw MeasurementLogError(.foreignPCR, message)
        case .start(let plan):
            try await startEpoch(plan, clock: clock)
            report.outcome = .newEpoch
        case .proceed, .finish:
            guard let open = store.openEpoch else { throw MeasurementLogError(.closed, "no open epoch") }
            adopt(open)
            if case .finish(let index) = decision.next {
                let missing = open.tail[index...]
                expected = open.tail[index].before
                extended = open.count - UInt64(missing.count)
                for item in missing { try await extend(item.record.event) }
                report.outcome = .finishedExtends(first: missing.first?.record.seq ?? 0, count: missing.count)
            }
            if open.count == 0 {
                // A new epoch whose epochStart record was not written before a crash.
                try await appendEpochStart(clock: clock)
            }
            publish()
        }
        report.epoch = epochNumber
        report.records = store.openEpoch?.count ?? 0
        recovery = report
        logger.info("measurement log recovered", metadata: ["result": "\(report)"])
    }

    /// Takes over the store's open epoch as fully extended.
    private func adopt(_ open: LogStore.OpenEpoch) {
        epochNumber = open.manifest.epoch
        epochResetCount = open.manifest.resetCount
        banks = open.manifest.bankAlgorithms
        eventWriter = try? TCGEventLogWriter(header: open.header)
        expected = open.chain
        extended = open.count
        logCount = open.count
    }

    private func startEpoch(_ plan: Recovery.NewEpoch, clock: TPMSClockInfo) async throws(MeasurementLogError) {
        let store = self.store
        let storePlan = LogStore.EpochPlan(pcr: configuration.pcr, banks: banks, clock: clock, reason: plan.reason, startPCRs: plan.startPCRs)
        try await Self.run(on: io) { () throws(MeasurementLogError) in try store.startEpoch(storePlan) }
        guard let open = store.openEpoch else { throw MeasurementLogError(.closed, "no open epoch") }
        adopt(open)
        try await appendEpochStart(clock: clock)
    }

    /// The epoch's first record: why it starts, the TPM's counters, the epoch before it, and
    /// the PCR values it starts from when they are not the reset values.
    private func appendEpochStart(clock: TPMSClockInfo) async throws(MeasurementLogError) {
        guard let open = store.openEpoch, let eventWriter else { throw MeasurementLogError(.closed, "no open epoch") }
        let m = open.manifest
        let start = try m.startValues()
        let stated = m.start.pcrs == nil ? [] : m.bankAlgorithms.sorted().map { TCGDigest(algorithm: $0, bytes: start[$0] ?? []) }
        let record = VMVEventRecord(
            seq: 0, epoch: m.epoch, pcr: UInt32(m.pcr), time: LogStore.now(), kind: .epochStart,
            epochStart: .init(resetCount: m.resetCount, restartCount: m.restartCount,
                              reason: VMVEventRecord.sanitized(m.start.reason, maxBytes: VMVEventRecord.maxReason),
                              previousEpoch: m.start.previousEnd == nil ? nil : m.start.previousEpoch,
                              previousEnd: EpochManifest.previousEnd(m.start.previousEnd), startPCRs: stated))
        let results = try await appendAndExtend(records: [record], events: [try Self.event(record, eventWriter)])
        if case .failure(let error)? = results.first { throw error }
        _ = clock
    }

    // MARK: TPM and I/O helpers

    private func readClock() async throws(MeasurementLogError) -> TPMSClockInfo {
        do {
            return try await tpm.readClock()
        } catch {
            throw MeasurementLogError(.tpm, "\(error)")
        }
    }

    private func readPCR(_ pcr: Int? = nil) async throws(MeasurementLogError) -> [TPMAlgorithm: [UInt8]] {
        let index = pcr ?? configuration.pcr
        let selection = PCRSelection(banks: banks.map { PCRSelection.Bank(hash: $0, pcrs: [index]) })
        do {
            let values = try await tpm.readPCRs(selection)
            return Dictionary(uniqueKeysWithValues: banks.compactMap { bank in values[bank, index].map { (bank, $0) } })
        } catch {
            throw MeasurementLogError(.tpm, "\(error)")
        }
    }

    /// Runs blocking file work on `queue`.
    static func run<T: Sendable>(on queue: DispatchQueue, _ body: @escaping @Sendable () throws(MeasurementLogError) -> T)
        async throws(MeasurementLogError) -> T
    {
        let result: Result<T, MeasurementLogError> = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: Result { () throws(MeasurementLogError) in try body() }) }
        }
        return try result.get()
    }

    // MARK: Closing

    /// Waits for the commits in progress, then releases the state directory's lock.
    public func close() async {
        closed = true
        while committing || !pending.isEmpty {
            try? await Task.sleep(for: .milliseconds(1))
        }
        await closeStore()
    }

    private func closeStore() async {
        let store = self.store
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            io.async {
                store.close()
                c.resume()
            }
        }
    }
}
