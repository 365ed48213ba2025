import Dispatch
import FoundationEssentials
import Synchronization
import TPMWire
import Verifier
import VMV

/// The measurement log as the API serves it, paired with quotes: every answer carries exactly
/// the records its quoted PCR values account for.
///
/// The log is read from the state directory with `LogReader` (capped at what the engine has
/// extended), never through the engine's actor, so serving never waits for a measurement. The
/// engine may extend the PCR between a quote and the read that follows it; the records are a
/// hash chain, so the position a quote covers is the one prefix of the log whose replay equals
/// the quoted values, found after the quote among the last records read.
final class ServedLog: Sendable {
    let reader: LogReader
    let engine: MeasurementEngine
    let pcr: Int
    /// The newest whole read of an epoch. Records are append-only, so a read of N records
    /// serves every request up to N; with no new measurement no quote reads a file.
    private let cache = Mutex<LogReader.EpochLog?>(nil)
    private let io = DispatchQueue(label: "vmv.api.log", attributes: .concurrent)

    /// Records kept with their PCR values before them, for finding a quote's position: more
    /// than the engine can extend between a quote and the read after it.
    static let tailRecords = 4096
    /// How long a quote waits for the engine to publish records it has already extended.
    static let publishWait = Duration.seconds(2)

    init(stateDirectory: String, engine: MeasurementEngine, pcr: Int) {
        reader = LogReader(stateDirectory: stateDirectory)
        self.engine = engine
        self.pcr = pcr
    }

    /// The log position `values` (PCR values of a quote of `selection`) account for; nil when
    /// the selection does not include the VMV PCR (such a quote says nothing about the log).
    func position(quoted values: PCRValues, selection: PCRSelection) async throws -> LogPosition? {
        let banks = selection.banks.filter { $0.pcrs.contains(pcr) }.map(\.hash)
        guard !banks.isEmpty else { return nil }
        if let cached = cache.withLock({ $0 }), let n = Self.prefix(of: cached, replayingTo: values, banks: banks, pcr: pcr) {
            return LogPosition(epoch: cached.manifest.epoch, nextSeq: n)
        }
        let deadline = ContinuousClock.now + Self.publishWait
        while true {
            let epoch = await engine.status().epoch
            let log = try await read(epoch: epoch)
            if let n = Self.prefix(of: log, replayingTo: values, banks: banks, pcr: pcr) {
                return LogPosition(epoch: epoch, nextSeq: n)
            }
            // The engine extends first and publishes its committed count after: wait for it.
            guard ContinuousClock.now < deadline else {
                throw APIError(503, "unavailable", "the quoted PCR \(pcr) values are not the replay of any prefix of epoch \(epoch)'s log "
                               + "(\(log.count) records): the epoch changed during the quote, or something else extends PCR \(pcr); ask again",
                               retryAfter: 1)
            }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// The number of records of `log` whose replay equals `values` in every bank of `banks`.
    static func prefix(of log: LogReader.EpochLog, replayingTo values: PCRValues, banks: [TPMAlgorithm], pcr: Int) -> UInt64? {
        guard log.manifest.pcr == pcr else { return nil }
        func equal(_ state: [TPMAlgorithm: [UInt8]]) -> Bool {
            banks.allSatisfy { bank in values[bank, pcr].map { $0 == state[bank] } ?? false }
        }
        if equal(log.replayed) { return log.count }
        return log.tail.reversed().first { equal($0.before) }?.record.seq
    }

    /// Refuses a verifier's cursor that no answer can serve, before the TPM is asked: an epoch
    /// this host no longer has (410), one it never had or a seq beyond the epoch's end (400).
    func check(_ cursor: ServiceAPI.LogCursor) async throws {
        let current = await engine.status()
        guard cursor.epoch <= current.epoch else {
            throw APIError.badRequest("log.epoch \(cursor.epoch): this host's current epoch is \(current.epoch)", code: "bad_log_cursor")
        }
        guard cursor.epoch == current.epoch else {
            // An older epoch: the answer will carry the whole current one, if the old one was this host's.
            guard FileManager.default.fileExists(atPath: reader.layout.epochDirectory(cursor.epoch) + "/epoch.json") else { throw Self.gone(cursor.epoch) }
            return
        }
        if let cached = cache.withLock({ $0 }), cached.manifest.epoch == cursor.epoch, cursor.since <= cached.count { return }
        let log = try await read(epoch: cursor.epoch)
        guard cursor.since <= log.count else {
            throw APIError.badRequest("log.since \(cursor.since) is beyond epoch \(cursor.epoch)'s end (nextSeq \(log.count))", code: "bad_log_cursor")
        }
    }

    /// The `log` part of an answer: records of `epoch` (nil: the current one) with
    /// `since <= seq < upTo.nextSeq` (nil: as far as extended now).
    func log(epoch: UInt32?, since: UInt64, upTo: LogPosition?) async throws -> ServiceAPI.Log {
        let number: UInt32
        if let epoch { number = epoch } else { number = await engine.status().epoch }
        var log: LogReader.EpochLog
        if let upTo, upTo.epoch == number, let cached = cache.withLock({ $0 }), cached.manifest.epoch == number, cached.count >= upTo.nextSeq {
            log = cached
        } else {
            log = try await read(epoch: number)
        }
        let end = upTo.map { min($0.nextSeq, log.count) } ?? log.count
        if let upTo, upTo.epoch == number, log.count < upTo.nextSeq {
            throw APIError(500, "internal", "epoch \(number) has \(log.count) records, fewer than the \(upTo.nextSeq) the quote covers")
        }
        guard since <= end else {
            throw APIError.badRequest("since \(since) is beyond epoch \(number)'s end (nextSeq \(end))", code: "bad_log_cursor")
        }
        log.records = log.records.filter { $0.seq >= since && $0.seq < end }
        return Self.wire(log, since: since, nextSeq: end)
    }

    /// The last measured seq of each subject, per domain UUID, in the current epoch.
    func lastMeasurements() async -> [String: [String: UInt64]] {
        let epoch = await engine.status().epoch
        guard let log = try? await read(epoch: epoch) else { return [:] }
        var out: [String: [String: UInt64]] = [:]
        for record in log.records {
            guard let domain = record.record.domain else { continue }
            let subject = record.record.subject ?? record.record.kind.name
            out[domain.uuidString, default: [:]][subject] = record.seq
        }
        return out
    }

    // MARK: Reading

    /// One whole read of `epoch` (every record, the replay, the last records' PCR values),
    /// off the cooperative pool; the newest read of the newest epoch is cached.
    func read(epoch: UInt32) async throws -> LogReader.EpochLog {
        let reader = self.reader
        let result: Result<LogReader.EpochLog, MeasurementLogError> = await withCheckedContinuation { continuation in
            io.async {
                continuation.resume(returning: Result { () throws(MeasurementLogError) in
                    try reader.read(epoch: epoch, since: 0, tail: Self.tailRecords)
                })
            }
        }
        let log: LogReader.EpochLog
        switch result {
        case .success(let read): log = read
        case .failure(let error) where error.code == .notFound: throw Self.gone(epoch)
        case .failure(let error): throw APIError(503, "no_log", "the measurement log cannot be read: \(error)")
        }
        cache.withLock { cached in
            if let c = cached, c.manifest.epoch > epoch || (c.manifest.epoch == epoch && c.count > log.count) { return }
            cached = log
        }
        return log
    }

    static func gone(_ epoch: UInt32) -> APIError {
        APIError(410, "log_gone", "epoch \(epoch) is no longer kept on this host; ask without a log cursor for the whole current epoch")
    }

    static func wire(_ log: LogReader.EpochLog, since: UInt64, nextSeq: UInt64) -> ServiceAPI.Log {
        let m = log.manifest
        let reason = m.state == .open ? m.start.reason : (m.endReason ?? m.start.reason)
        return ServiceAPI.Log(
            epoch: m.epoch, since: since, nextSeq: nextSeq, header: Base64.encode(log.header.serialized()),
            records: Base64.encode(log.records.flatMap { $0.event.serialized() }),
            epochInfo: ServiceAPI.EpochInfo(state: m.state.rawValue, reason: reason, startedFrom: m.start.pcrs,
                                            resetCount: m.resetCount, restartCount: m.restartCount))
    }
}
