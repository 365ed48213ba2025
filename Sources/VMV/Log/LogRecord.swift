import Foundation
import TPMWire

/// One measurement as logged: the VMV event record and the TCG event that carries it (PCR,
/// EV_EVENT_TAG, one digest per bank = the hash of the record's bytes).
public struct LogRecord: Sendable, Hashable {
    public let record: VMVEventRecord
    public let event: TCGEvent

    public init(record: VMVEventRecord, event: TCGEvent) {
        self.record = record
        self.event = event
    }

    public var seq: UInt64 { record.seq }
    public var epoch: UInt32 { record.epoch }
    public var pcr: Int { event.pcrIndex }

    /// Digests by bank.
    public var digests: [TPMAlgorithm: [UInt8]] {
        Dictionary(event.digests.map { ($0.algorithm, $0.bytes) }, uniquingKeysWith: { a, _ in a })
    }
}

/// The JSON of `vmv log show --json` and `vmv log export --format json`: the record's own
/// fields (see `VMVEventRecord: Encodable`), then `timeUTC`, `eventType` and `digests`
/// (bank → hex: what the PCR was extended with).
extension LogRecord: Encodable {
    private enum Key: String, CodingKey { case timeUTC, eventType, digests }

    public func encode(to encoder: any Encoder) throws {
        try record.encode(to: encoder)
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(Self.utc(record.time), forKey: .timeUTC)
        try c.encode(event.eventType.name, forKey: .eventType)
        try c.encode(Dictionary(event.digests.map { ($0.algorithm.name, Hex.encode($0.bytes)) }, uniquingKeysWith: { a, _ in a }),
                     forKey: .digests)
    }

    /// Unix milliseconds as ISO 8601 UTC with milliseconds: 2026-11-27T22:07:42.123Z.
    public static func utc(_ milliseconds: UInt64) -> String {
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(milliseconds % 1000))
    }
}
