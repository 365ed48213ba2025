import TPMWire

/// Verifies the records that continue an epoch a verifier has already replayed up to `since`
/// (the whole-epoch case is `MeasurementLogVerifier`'s): each event passes the per-event check
/// (`VMVEventRecord(verifying:)`: digests in every bank = H(data), a VMV record, its PCR the
/// event's), is an EV_EVENT_TAG event of the log's PCR, and carries the next seq and the log's
/// epoch. Stops at the first failure: a record after a bad one has no place in the log.
public enum LogContinuationVerifier {
    public static func verify(_ events: [TCGEvent], epoch: UInt32, since: UInt64, pcr: Int) -> Result<[VMVEventRecord], MeasurementLogRejection> {
        var verified: [VMVEventRecord] = []
        var expectedSeq = since
        for (i, event) in events.enumerated() {
            func reject(_ code: MeasurementLogProblem.Code, _ reason: String) -> Result<[VMVEventRecord], MeasurementLogRejection> {
                .failure(MeasurementLogRejection(problems: [MeasurementLogProblem(code, event: i, "(seq \(expectedSeq) expected) " + reason)]))
            }
            let record: VMVEventRecord
            do { record = try VMVEventRecord(verifying: event) } catch {
                return reject(.digest, error.reason)
            }
            guard event.eventType == .eventTag else {
                return reject(.eventType, "event type \(event.eventType.name): a VMV log has only EV_EVENT_TAG events")
            }
            guard event.pcrIndex == pcr else {
                return reject(.pcr, "extends PCR \(event.pcrIndex), the log's PCR is \(pcr)")
            }
            guard record.seq == expectedSeq else {
                return reject(.seq, "seq \(record.seq): " + (record.seq < expectedSeq ? "a duplicated or reordered record" : "records dropped or reordered"))
            }
            guard record.epoch == epoch else {
                return reject(.epoch, "belongs to epoch \(record.epoch), the log is epoch \(epoch)")
            }
            guard record.kind != .epochStart else {
                return reject(.epochStart, "an epochStart record at seq \(record.seq), only the first record may be one")
            }
            verified.append(record)
            expectedSeq &+= 1
        }
        return .success(verified)
    }
}
