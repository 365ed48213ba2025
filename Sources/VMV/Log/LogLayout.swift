import Crypto
import Foundation
import TPMWire

/// Where the measurement log lives in a state directory:
///
///     <state>/lock                 the writer's lock (F_OFD_SETLK), with its pid
///     <state>/log/head             the last committed record (epoch, count), for live readers
///     <state>/log/epoch-<N>/       one directory per epoch
///         epoch.json               the epoch's manifest (`EpochManifest`)
///         0000.tcg                 Spec ID header + the first records
///         0001.tcg …               later segments: TCG_PCR_EVENT2 records only
///
/// The epoch's TCG log is the concatenation of its segments in order.
public struct LogLayout: Sendable, Hashable {
    public let stateDirectory: String

    public init(stateDirectory: String) {
        self.stateDirectory = stateDirectory
    }

    public var logDirectory: String { stateDirectory + "/log" }
    var lockPath: String { stateDirectory + "/lock" }
    var headPath: String { logDirectory + "/head" }

    public func epochDirectory(_ epoch: UInt32) -> String { logDirectory + "/epoch-\(epoch)" }
    func manifestPath(_ epoch: UInt32) -> String { epochDirectory(epoch) + "/epoch.json" }

    static func segmentName(_ index: Int) -> String {
        let digits = String(index)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits + ".tcg"
    }

    /// The segment index of a file name `NNNN.tcg`, or nil for any other name.
    static func segmentIndex(_ name: String) -> Int? {
        guard name.hasSuffix(".tcg") else { return nil }
        let stem = name.dropLast(4)
        guard stem.count >= 4, stem.allSatisfy(\.isASCII), stem.allSatisfy(\.isNumber) else { return nil }
        return Int(stem)
    }

    /// The epochs present, ascending (names other than `epoch-<N>` are ignored).
    func epochNumbers() throws(MeasurementLogError) -> [UInt32] {
        try LogFiles.list(logDirectory).compactMap { name -> UInt32? in
            guard name.hasPrefix("epoch-") else { return nil }
            let digits = name.dropFirst(6)
            guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return UInt32(digits)
        }.sorted()
    }

    /// The segment files of an epoch, by index, ascending.
    func segments(_ epoch: UInt32) throws(MeasurementLogError) -> [(index: Int, path: String)] {
        let directory = epochDirectory(epoch)
        return try LogFiles.list(directory).compactMap { name in
            Self.segmentIndex(name).map { ($0, directory + "/" + name) }
        }.sorted { $0.index < $1.index }
    }
}

/// `epoch.json`: what an epoch is and how it ended. Written whole and atomically (a
/// temporary file, fsync, rename, fsync of the directory) on creation, on a new segment and
/// when the epoch ends.
public struct EpochManifest: Codable, Sendable, Hashable {
    public enum State: String, Codable, Sendable {
        /// Being appended to (or was, until a crash: recovery decides).
        case open
        /// Ended while its log still replayed to the PCR (the configured PCR changed).
        case closed
        /// Ended by a TPM reset or restart that cleared the PCR.
        case reset
        /// Ended because its log no longer explained the PCR; `endReason` says where.
        case broken
    }

    /// Why and from where the epoch starts: what its epochStart record states.
    public struct Start: Codable, Sendable, Hashable {
        public var reason: String
        public var previousEpoch: UInt32?
        public var previousEnd: State?
        /// Bank name → hex: the PCR value the epoch starts from when its log cannot explain
        /// it; nil when the PCR started at its reset value.
        public var pcrs: [String: String]?
    }

    public struct Segment: Codable, Sendable, Hashable {
        public var file: String
        /// The seq of the segment's first record.
        public var firstSeq: UInt64
    }

    public var epoch: UInt32
    public var pcr: Int
    /// Bank names, in the log header's order.
    public var banks: [String]
    public var resetCount: UInt32
    public var restartCount: UInt32
    /// Unix milliseconds.
    public var started: UInt64
    public var state: State
    public var endReason: String?
    public var ended: UInt64?
    /// The TPM's resetCount when the epoch ended (the boot it ended on).
    public var endResetCount: UInt32?
    public var start: Start
    public var segments: [Segment]

    public var bankAlgorithms: [TPMAlgorithm] { banks.compactMap { TPMAlgorithm(name: $0) } }

    /// The values the epoch's log replays from: the stated ones, or the PCR's reset value.
    public func startValues() throws(MeasurementLogError) -> [TPMAlgorithm: [UInt8]] {
        var values: [TPMAlgorithm: [UInt8]] = [:]
        for bank in bankAlgorithms {
            if let hex = start.pcrs?[bank.name] {
                do {
                    values[bank] = try Hex.decode(hex, field: "epoch \(epoch) start.pcrs.\(bank.name)")
                } catch {
                    throw MeasurementLogError(.damaged, "epoch \(epoch): epoch.json: \(error.reason)")
                }
            } else {
                values[bank] = PCRValues.initialValue(pcr: pcr, hash: bank)
            }
        }
        return values
    }

    /// The epochStart record's `previousEnd` for a manifest state.
    static func previousEnd(_ state: State?) -> VMVEventRecord.EpochStart.PreviousEnd? {
        switch state {
        case .closed?: .closed
        case .reset?: .tpmReset
        case .broken?: .broken
        case .open?, nil: nil
        }
    }

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data()) + [0x0A]
    }

    static func load(_ layout: LogLayout, _ epoch: UInt32) throws(MeasurementLogError) -> EpochManifest {
        let path = layout.manifestPath(epoch)
        guard let bytes = try LogFiles.read(path) else {
            throw MeasurementLogError(.damaged, "\(path): missing, the epoch directory has no manifest")
        }
        let manifest: EpochManifest
        do {
            manifest = try JSONDecoder().decode(EpochManifest.self, from: Data(bytes))
        } catch {
            throw MeasurementLogError(.damaged, "\(path): not an epoch manifest: \(error)")
        }
        guard manifest.epoch == epoch else {
            throw MeasurementLogError(.damaged, "\(path): says epoch \(manifest.epoch), its directory is epoch-\(epoch)")
        }
        guard (0..<PCRSelection.pcClientPCRCount).contains(manifest.pcr), !manifest.banks.isEmpty,
              manifest.bankAlgorithms.count == manifest.banks.count else {
            throw MeasurementLogError(.damaged, "\(path): PCR \(manifest.pcr) or banks \(manifest.banks) out of range")
        }
        return manifest
    }
}

/// `<state>/log/head`: how many records of which epoch are committed (written, synced and
/// extended). The writer rewrites it in place after every group commit, without fsync (it
/// is for live readers; recovery never trusts it). Readers cap what they show at it while
/// a writer holds the lock, so they never show a record whose extend has not happened.
///
///     "VMVH" | epoch u32 | records u64 | SHA-256 of the preceding 16 bytes, first 8 bytes
struct CommittedHead: Hashable {
    var epoch: UInt32
    var records: UInt64

    static let size = 24

    var bytes: [UInt8] {
        var w = ByteWriter(capacity: Self.size)
        w.write(bytes: Array("VMVH".utf8))
        w.write(epoch)
        w.write(records)
        let body = w.bytes
        w.write(bytes: Array(SHA256.hash(data: body)).prefix(8))
        return w.bytes
    }

    init(epoch: UInt32, records: UInt64) {
        self.epoch = epoch
        self.records = records
    }

    /// Nil unless `bytes` is a whole, intact head (a torn in-place rewrite fails the checksum).
    init?(_ bytes: [UInt8]) {
        guard bytes.count == Self.size, bytes.starts(with: Array("VMVH".utf8)),
              Array(Array(SHA256.hash(data: bytes[0..<16])).prefix(8)) == Array(bytes[16..<24]) else { return nil }
        var r = ByteReader(Array(bytes[4..<16]))
        guard let epoch = try? r.readUInt32("epoch"), let records = try? r.readUInt64("records") else { return nil }
        self.init(epoch: epoch, records: records)
    }
}
