/// The VMV's configuration file: `key = value` lines (a TOML subset: integers, `true`/`false`,
/// `#` comments). Unknown keys and bad values are errors that name the line, so a typo never
/// silently leaves a default in place.
///
///     pcr = 15                 # the VMV PCR; nothing else may extend it
///     segment_size = 4194304   # bytes per log segment before a new one starts
///     retain_epochs = 16       # ended epochs kept
///     retain_days = 0          # ended epochs older than this are deleted (0: no age limit)
///     max_batch = 256          # most measurements in one group commit
///     check_after_extend = true
///
/// The file's bytes (or, without a file, the effective defaults as written by `text`) are
/// what the VMV measures as its configuration.
public struct VMVConfiguration: Sendable, Hashable {
    public var pcr = 15
    public var segmentSize = 4 << 20
    public var retainEpochs = 16
    public var retainDays = 0
    public var maxBatch = 256
    public var checkAfterExtend = true

    public init() {}

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public init(parsing text: String, source: String = "configuration") throws(ParseError) {
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let trimmed = line.trimmingCharacters(in: " \t\r")
            guard !trimmed.isEmpty else { continue }
            let at = "\(source):\(number + 1)"
            let parts = trimmed.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw ParseError(description: "\(at): '\(trimmed)' is not `key = value`") }
            let key = parts[0].trimmingCharacters(in: " \t")
            let value = parts[1].trimmingCharacters(in: " \t")
            func integer(_ range: ClosedRange<Int>) throws(ParseError) -> Int {
                guard let v = Int(value.replacingUnderscores()), range.contains(v) else {
                    throw ParseError(description: "\(at): \(key) = \(value): expected an integer in \(range.lowerBound)…\(range.upperBound)")
                }
                return v
            }
            switch key {
            case "pcr": pcr = try integer(0...23)
            case "segment_size": segmentSize = try integer(4096...(1 << 30))
            case "retain_epochs": retainEpochs = try integer(0...1_000_000)
            case "retain_days": retainDays = try integer(0...36_500)
            case "max_batch": maxBatch = try integer(1...65_536)
            case "check_after_extend":
                guard value == "true" || value == "false" else {
                    throw ParseError(description: "\(at): check_after_extend = \(value): expected true or false")
                }
                checkAfterExtend = value == "true"
            default:
                throw ParseError(description: "\(at): unknown key '\(key)' (known: pcr, segment_size, retain_epochs, retain_days, max_batch, check_after_extend)")
            }
        }
    }

    /// The configuration as a file would say it, every key, in a fixed order.
    public var text: String {
        """
        pcr = \(pcr)
        segment_size = \(segmentSize)
        retain_epochs = \(retainEpochs)
        retain_days = \(retainDays)
        max_batch = \(maxBatch)
        check_after_extend = \(checkAfterExtend)

        """
    }

    /// The engine's configuration.
    public var engine: MeasurementEngine.Configuration {
        MeasurementEngine.Configuration(
            pcr: pcr,
            store: LogStoreConfiguration(segmentSize: segmentSize, retainEpochs: retainEpochs,
                                         retainSeconds: retainDays == 0 ? nil : UInt64(retainDays) * 86_400),
            maxBatch: maxBatch, checkAfterExtend: checkAfterExtend)
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }

    fileprivate func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
