/// A VMV event record: the event data of every event in a VMV measurement log.
///
/// Binary, big-endian like TPM structures, and strict, so that one record has exactly one
/// encoding (parse then serialise gives back the same bytes):
///
///     magic "VMVE" | version u16 = 1 | fields…      field = tag u16 | length u32 | value
///
/// Tags strictly ascending, none repeated, none unknown (a new field means a new version),
/// every field the record's kind requires present and none it does not allow, every length
/// the field's own. The event's digest in every bank is the hash of these bytes, so the PCR
/// covers every field a verifier reads. Layout byte by byte: docs/measurement-log.md.
public struct VMVEventRecord: Hashable, Sendable, TPMWireCodable {
    public static let magic: [UInt8] = Array("VMVE".utf8)
    /// The version this code writes and the only one it reads.
    public static let version: UInt16 = 1
    /// The largest record: far above any real one, small enough that a hostile length
    /// cannot make a parser allocate much.
    public static let maxSize = 64 * 1024

    // MARK: Fields

    /// Position in the epoch's log: 0 for the epoch's first record, +1 for each next one.
    public var seq: UInt64
    /// The epoch (one log per epoch; a new one starts after a TPM reset or a broken log).
    public var epoch: UInt32
    /// The PCR this record is extended into: a record moved to another PCR says so.
    public var pcr: UInt32
    /// When it was logged, Unix time in milliseconds. Informational: nothing trusts a clock here.
    public var time: UInt64
    public var kind: Kind
    /// Which domain (absent for the platform's own records).
    public var domain: Domain?
    /// What exactly: "kernel.text", "/usr/sbin/vmv", "xen", …
    public var subject: String?
    /// The hash of the measured content.
    public var contentDigest: TCGDigest?
    /// For `memoryRegion`: where the region is and its Merkle root.
    public var region: MemoryRegion?
    /// Further facts as (key, value) pairs, keys unique and in ascending byte order.
    public var attributes: [Attribute]
    /// For `epochStart`: why the epoch starts and where from.
    public var epochStart: EpochStart?

    public init(
        seq: UInt64, epoch: UInt32, pcr: UInt32, time: UInt64, kind: Kind, domain: Domain? = nil,
        subject: String? = nil, contentDigest: TCGDigest? = nil, region: MemoryRegion? = nil,
        attributes: [Attribute] = [], epochStart: EpochStart? = nil
    ) {
        self.seq = seq
        self.epoch = epoch
        self.pcr = pcr
        self.time = time
        self.kind = kind
        self.domain = domain
        self.subject = subject
        self.contentDigest = contentDigest
        self.region = region
        self.attributes = attributes
        self.epochStart = epochStart
    }

    /// What a record measures. Any UInt16 is representable so that errors can name what they
    /// refuse; version 1 accepts only the kinds listed in `version1`.
    public struct Kind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        public init(_ rawValue: UInt16) { self.rawValue = rawValue }

        /// The first record of an epoch: reason, TPM counters, the previous epoch.
        public static let epochStart = Kind(1)
        /// The VMV's own executable.
        public static let vmvBinary = Kind(2)
        /// The VMV's configuration.
        public static let vmvConfig = Kind(3)
        /// A fact of the platform: hypervisor, dom0 kernel, XSM policy, the VMV domain's kernel.
        public static let platform = Kind(4)
        public static let domainStart = Kind(16)
        public static let domainStop = Kind(17)
        public static let kernelImage = Kind(18)
        public static let initrd = Kind(19)
        public static let commandLine = Kind(20)
        public static let domainConfig = Kind(21)
        /// A guest memory region measured page by page into a Merkle tree.
        public static let memoryRegion = Kind(22)

        static let names: [UInt16: String] = [
            1: "epochStart", 2: "vmvBinary", 3: "vmvConfig", 4: "platform", 16: "domainStart",
            17: "domainStop", 18: "kernelImage", 19: "initrd", 20: "commandLine", 21: "domainConfig",
            22: "memoryRegion",
        ]

        /// The kinds of version 1.
        public static let version1: [Kind] = names.keys.sorted().map { Kind($0) }

        public var isKnown: Bool { Self.names[rawValue] != nil }
        /// Kinds about one domain (16 and up): they must name it.
        public var isDomainKind: Bool { rawValue >= 16 }

        public var name: String { Self.names[rawValue] ?? "kind \(rawValue)" }
        public var description: String { name }

        public init?(name: String) {
            guard let raw = Self.names.first(where: { $0.value == name })?.key else { return nil }
            self.init(raw)
        }
    }

    public struct Domain: Hashable, Sendable {
        /// The domain's UUID, 16 bytes; all zero for the platform / the VMV itself.
        public var uuid: [UInt8]
        /// The Xen domain id at the time (informational: ids are reused, UUIDs are not).
        public var id: UInt32?
        public var name: String?

        public init(uuid: [UInt8], id: UInt32? = nil, name: String? = nil) {
            self.uuid = uuid
            self.id = id
            self.name = name
        }

        /// The UUID in its canonical 8-4-4-4-12 lower-case form.
        public var uuidString: String { Self.format(uuid: uuid) }

        public static func format(uuid: [UInt8]) -> String {
            let hex = Hex.encode(uuid)
            guard hex.count == 32 else { return hex }
            let c = Array(hex)
            return String(c[0..<8]) + "-" + String(c[8..<12]) + "-" + String(c[12..<16]) + "-"
                + String(c[16..<20]) + "-" + String(c[20..<32])
        }

        /// Parses 8-4-4-4-12 (or 32 hex digits), any case.
        public static func parse(uuid text: String) throws(WireError) -> [UInt8] {
            let digits = text.filter { $0 != "-" }
            guard digits.count == 32 else {
                throw WireError(.syntax, "UUID '\(text)': expected 32 hex digits (8-4-4-4-12)")
            }
            return try Hex.decode(String(digits), field: "UUID '\(text)'")
        }
    }

    public struct MemoryRegion: Hashable, Sendable {
        public var virtualStart: UInt64
        /// Informational: guest-physical or machine frames move, the virtual layout does not.
        public var physicalStart: UInt64?
        /// A power of two, 512 bytes to 1 GiB.
        public var pageSize: UInt32
        /// At least 1.
        public var pageCount: UInt32
        /// The Merkle root over the region's pages; SHA-256.
        public var merkleRoot: TCGDigest

        public init(virtualStart: UInt64, physicalStart: UInt64? = nil, pageSize: UInt32, pageCount: UInt32, merkleRoot: TCGDigest) {
            self.virtualStart = virtualStart
            self.physicalStart = physicalStart
            self.pageSize = pageSize
            self.pageCount = pageCount
            self.merkleRoot = merkleRoot
        }
    }

    public struct Attribute: Hashable, Sendable {
        public var key: String
        public var value: String

        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    public struct EpochStart: Hashable, Sendable {
        /// How the previous epoch ended.
        public enum PreviousEnd: UInt16, Hashable, Sendable, CaseIterable, CustomStringConvertible {
            /// Closed while its log still replayed to the PCR.
            case closed = 1
            /// Ended by a TPM reset or restart: the PCR was cleared, nothing left to compare.
            case tpmReset = 2
            /// Its log no longer explained the PCR (see `reason`).
            case broken = 3

            public var description: String {
                switch self {
                case .closed: "closed"
                case .tpmReset: "closed by a TPM reset"
                case .broken: "broken"
                }
            }
        }

        /// TPMS_CLOCK_INFO.resetCount and restartCount when the epoch started.
        public var resetCount: UInt32
        public var restartCount: UInt32
        /// Why this epoch starts, in words.
        public var reason: String
        /// The epoch before this one on this state, and how it ended.
        public var previousEpoch: UInt32?
        public var previousEnd: PreviousEnd?
        /// The PCR's values, one per bank, when the epoch starts from values its log cannot
        /// explain (after a broken epoch); empty when the PCR starts at its reset value.
        public var startPCRs: [TCGDigest]

        public init(resetCount: UInt32, restartCount: UInt32, reason: String, previousEpoch: UInt32? = nil,
                    previousEnd: PreviousEnd? = nil, startPCRs: [TCGDigest] = []) {
            self.resetCount = resetCount
            self.restartCount = restartCount
            self.reason = reason
            self.previousEpoch = previousEpoch
            self.previousEnd = previousEnd
            self.startPCRs = startPCRs
        }
    }

    // MARK: Tags and limits

    /// Field tags, in the order they appear.
    public enum Tag: UInt16, CaseIterable, Sendable {
        case seq = 1, epoch, pcr, time, kind, domainUUID, domid, domainName, subject, contentDigest
        case virtualStart, physicalStart, pageSize, pageCount, merkleRoot, attributes
        case resetCount, restartCount, reason, previousEpoch, previousEnd, startPCRs

        var name: String { "\(self)" }
    }

    public static let maxDomainName = 256
    public static let maxSubject = 1024
    public static let maxReason = 1024
    public static let maxAttributes = 64
    public static let maxAttributeKey = 64
    public static let maxAttributeValue = 1024

    // MARK: Serialising

    public func write(to w: inout ByteWriter) {
        w.write(bytes: Self.magic)
        w.write(Self.version)
        func field(_ tag: Tag, _ body: (inout ByteWriter) -> Void) {
            var value = ByteWriter()
            body(&value)
            w.write(tag.rawValue)
            w.write(UInt32(truncatingIfNeeded: value.bytes.count))
            w.write(bytes: value.bytes)
        }
        field(.seq) { $0.write(seq) }
        field(.epoch) { $0.write(epoch) }
        field(.pcr) { $0.write(pcr) }
        field(.time) { $0.write(time) }
        field(.kind) { $0.write(kind.rawValue) }
        if let domain {
            field(.domainUUID) { $0.write(bytes: domain.uuid) }
            if let id = domain.id { field(.domid) { $0.write(id) } }
            if let name = domain.name { field(.domainName) { $0.write(bytes: Array(name.utf8)) } }
        }
        if let subject { field(.subject) { $0.write(bytes: Array(subject.utf8)) } }
        if let contentDigest { field(.contentDigest) { Self.writeHA(contentDigest, &$0) } }
        if let region {
            field(.virtualStart) { $0.write(region.virtualStart) }
            if let p = region.physicalStart { field(.physicalStart) { $0.write(p) } }
            field(.pageSize) { $0.write(region.pageSize) }
            field(.pageCount) { $0.write(region.pageCount) }
            field(.merkleRoot) { Self.writeHA(region.merkleRoot, &$0) }
        }
        if !attributes.isEmpty {
            field(.attributes) { w in
                w.write(UInt16(truncatingIfNeeded: attributes.count))
                for a in attributes {
                    let key = Array(a.key.utf8), value = Array(a.value.utf8)
                    w.write(UInt16(truncatingIfNeeded: key.count)); w.write(bytes: key)
                    w.write(UInt16(truncatingIfNeeded: value.count)); w.write(bytes: value)
                }
            }
        }
        if let e = epochStart {
            field(.resetCount) { $0.write(e.resetCount) }
            field(.restartCount) { $0.write(e.restartCount) }
            field(.reason) { $0.write(bytes: Array(e.reason.utf8)) }
            if let p = e.previousEpoch { field(.previousEpoch) { $0.write(p) } }
            if let end = e.previousEnd { field(.previousEnd) { $0.write(end.rawValue) } }
            if !e.startPCRs.isEmpty {
                field(.startPCRs) { w in
                    w.write(UInt32(truncatingIfNeeded: e.startPCRs.count))
                    for d in e.startPCRs { Self.writeHA(d, &w) }
                }
            }
        }
    }

    /// TPMT_HA: hashAlg u16, then the digest (its size given by the algorithm).
    static func writeHA(_ d: TCGDigest, _ w: inout ByteWriter) {
        w.write(d.algorithm.rawValue)
        w.write(bytes: d.bytes)
    }

    /// Checks that this record serialises to bytes `init(wireBytes:)` accepts: what the
    /// engine runs before logging, so a bad measurement fails with the field's name and
    /// nothing is written.
    public func validated() throws(WireError) -> [UInt8] {
        let bytes = wireBytes
        let parsed = try VMVEventRecord(wireBytes: bytes)
        guard parsed == self else {
            throw WireError(.invalidValue, "VMV event record: does not survive a round trip (a text field that is not in normal form?)")
        }
        return bytes
    }

    // MARK: Parsing

    public init(from r: inout ByteReader) throws(WireError) {
        let s = "VMV event record"
        guard r.remaining <= Self.maxSize else {
            throw WireError(.sizeTooLarge, "\(s): \(r.remaining) bytes, at most \(Self.maxSize)")
        }
        let start = r.offset
        let magic = try r.readBytes(4, "\(s).magic")
        guard magic == Self.magic else {
            throw WireError(.invalidValue, "\(s).magic: 0x\(Hex.encode(magic)), expected 'VMVE' (0x\(Hex.encode(Self.magic)))")
        }
        let version = try r.readUInt16("\(s).version")
        guard version == Self.version else {
            throw WireError(.invalidValue, "\(s).version: \(version), this reader knows version \(Self.version) only")
        }
        var fields: [Tag: ByteReader] = [:]
        var previous: Tag?
        while !r.isAtEnd {
            let at = r.offset - start
            let raw = try r.readUInt16("\(s).field at byte \(at).tag")
            guard let tag = Tag(rawValue: raw) else {
                throw WireError(.invalidValue, "\(s).field at byte \(at): unknown tag \(raw) (version 1 has tags 1–\(Tag.allCases.count))")
            }
            if let previous {
                guard tag != previous else {
                    throw WireError(.invalidValue, "\(s).\(tag.name) (tag \(raw)): appears twice")
                }
                guard tag.rawValue > previous.rawValue else {
                    throw WireError(.invalidValue, "\(s).\(tag.name) (tag \(raw)): after \(previous.name) (tag \(previous.rawValue)), tags must be ascending")
                }
            }
            previous = tag
            let length = try r.readUInt32("\(s).\(tag.name).length")
            guard length <= UInt32(r.remaining) else {
                throw WireError(.sizeTooLarge, "\(s).\(tag.name).length: \(length) exceeds the \(r.remaining) bytes left")
            }
            fields[tag] = try r.subReader(Int(length), "\(s).\(tag.name)")
        }

        var p = FieldParser(fields: fields, structure: s)
        seq = try p.required(.seq) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt64(f) }
        epoch = try p.required(.epoch) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt32(f) }
        pcr = try p.required(.pcr) { (v: inout ByteReader, f: String) throws(WireError) in
            let pcr = try v.readUInt32(f)
            guard pcr < UInt32(PCRSelection.pcClientPCRCount) else {
                throw WireError(.invalidValue, "\(f): \(pcr), a PC Client TPM has PCRs 0–\(PCRSelection.pcClientPCRCount - 1)")
            }
            return pcr
        }
        time = try p.required(.time) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt64(f) }
        let kind = try p.required(.kind) { (v: inout ByteReader, f: String) throws(WireError) in
            let kind = Kind(try v.readUInt16(f))
            guard kind.isKnown else {
                throw WireError(.invalidValue, "\(f): \(kind.rawValue) is not a kind of version 1 (\(Kind.version1.map { "\($0.rawValue) \($0.name)" }.joined(separator: ", ")))")
            }
            return kind
        }
        self.kind = kind
        p.kind = kind

        // Which fields each kind requires (R), allows (O), or refuses (absent).
        let rules = Self.rules(for: kind)
        for tag in Tag.allCases {
            switch rules[tag] {
            case .required?:
                guard fields[tag] != nil else {
                    throw WireError(.invalidValue, "\(s).\(tag.name) (tag \(tag.rawValue)): missing, a \(kind.name) record requires it")
                }
            case .optional?:
                break
            case nil:
                guard fields[tag] == nil else {
                    throw WireError(.invalidValue, "\(s).\(tag.name) (tag \(tag.rawValue)): not allowed in a \(kind.name) record")
                }
            }
        }

        if fields[.domainUUID] != nil {
            let uuid = try p.required(.domainUUID) { (v: inout ByteReader, f: String) throws(WireError) in try v.readBytes(16, f) }
            let id = try p.optional(.domid) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt32(f) }
            let name = try p.optional(.domainName) { (v: inout ByteReader, f: String) throws(WireError) in
                try Self.readText(&v, f, max: Self.maxDomainName)
            }
            domain = Domain(uuid: uuid, id: id, name: name)
        } else {
            for tag in [Tag.domid, .domainName] where fields[tag] != nil {
                throw WireError(.invalidValue, "\(s).\(tag.name) (tag \(tag.rawValue)): present without domainUUID (tag \(Tag.domainUUID.rawValue))")
            }
            domain = nil
        }
        subject = try p.optional(.subject) { (v: inout ByteReader, f: String) throws(WireError) in
            try Self.readText(&v, f, max: Self.maxSubject)
        }
        contentDigest = try p.optional(.contentDigest) { (v: inout ByteReader, f: String) throws(WireError) in
            try Self.readHA(&v, f)
        }
        if fields[.virtualStart] != nil {
            region = MemoryRegion(
                virtualStart: try p.required(.virtualStart) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt64(f) },
                physicalStart: try p.optional(.physicalStart) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt64(f) },
                pageSize: try p.required(.pageSize) { (v: inout ByteReader, f: String) throws(WireError) in
                    let size = try v.readUInt32(f)
                    guard size >= 512, size <= 1 << 30, size & (size - 1) == 0 else {
                        throw WireError(.invalidValue, "\(f): \(size), expected a power of two from 512 to 1 GiB")
                    }
                    return size
                },
                pageCount: try p.required(.pageCount) { (v: inout ByteReader, f: String) throws(WireError) in
                    let count = try v.readUInt32(f)
                    guard count >= 1 else { throw WireError(.invalidValue, "\(f): 0, a region has at least one page") }
                    return count
                },
                merkleRoot: try p.required(.merkleRoot) { (v: inout ByteReader, f: String) throws(WireError) in
                    let root = try Self.readHA(&v, f)
                    guard root.algorithm == .sha256 else {
                        throw WireError(.unknownAlgorithm, "\(f): \(root.algorithm.name), Merkle roots are sha256")
                    }
                    return root
                })
        } else {
            region = nil
        }
        attributes = try p.optional(.attributes) { (v: inout ByteReader, f: String) throws(WireError) in
            try Self.readAttributes(&v, f)
        } ?? []
        if fields[.resetCount] != nil {
            let resetCount = try p.required(.resetCount) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt32(f) }
            let restartCount = try p.required(.restartCount) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt32(f) }
            let reason = try p.required(.reason) { (v: inout ByteReader, f: String) throws(WireError) in
                try Self.readText(&v, f, max: Self.maxReason)
            }
            let previousEpoch = try p.optional(.previousEpoch) { (v: inout ByteReader, f: String) throws(WireError) in try v.readUInt32(f) }
            let previousEnd = try p.optional(.previousEnd) { (v: inout ByteReader, f: String) throws(WireError) in
                let raw = try v.readUInt16(f)
                guard let end = EpochStart.PreviousEnd(rawValue: raw) else {
                    throw WireError(.invalidValue, "\(f): \(raw), expected 1 (closed), 2 (TPM reset) or 3 (broken)")
                }
                return end
            }
            guard (previousEpoch == nil) == (previousEnd == nil) else {
                let missing = previousEpoch == nil ? Tag.previousEpoch : Tag.previousEnd
                throw WireError(.invalidValue, "\(s).\(missing.name) (tag \(missing.rawValue)): missing, previousEpoch and previousEnd come together")
            }
            let startPCRs = try p.optional(.startPCRs) { (v: inout ByteReader, f: String) throws(WireError) in
                try Self.readDigestValues(&v, f)
            } ?? []
            epochStart = EpochStart(resetCount: resetCount, restartCount: restartCount, reason: reason,
                                    previousEpoch: previousEpoch, previousEnd: previousEnd, startPCRs: startPCRs)
        } else {
            epochStart = nil
        }
    }

    enum Rule { case required, optional }

    /// The field rules of version 1 (docs/measurement-log.md, "Fields by kind").
    static func rules(for kind: Kind) -> [Tag: Rule] {
        var r: [Tag: Rule] = [.seq: .required, .epoch: .required, .pcr: .required, .time: .required,
                              .kind: .required, .attributes: .optional]
        switch kind {
        case .epochStart:
            r[.resetCount] = .required; r[.restartCount] = .required; r[.reason] = .required
            r[.previousEpoch] = .optional; r[.previousEnd] = .optional; r[.startPCRs] = .optional
            return r
        case .vmvBinary, .vmvConfig:
            r[.subject] = .required; r[.contentDigest] = .required
        case .platform:
            r[.subject] = .required; r[.contentDigest] = .optional
        case .domainStart, .domainStop:
            r[.subject] = .optional; r[.contentDigest] = .optional
        case .memoryRegion:
            r[.subject] = .required; r[.contentDigest] = .optional
            r[.virtualStart] = .required; r[.physicalStart] = .optional; r[.pageSize] = .required
            r[.pageCount] = .required; r[.merkleRoot] = .required
        default:   // kernelImage, initrd, commandLine, domainConfig
            r[.subject] = .required; r[.contentDigest] = .required
        }
        if kind.isDomainKind {
            r[.domainUUID] = .required
        } else {
            r[.domainUUID] = .optional
        }
        r[.domid] = .optional; r[.domainName] = .optional
        return r
    }

    /// Reads each field's value, which must fill its TLV length exactly.
    struct FieldParser {
        let fields: [Tag: ByteReader]
        let structure: String
        var kind: Kind?

        func required<T>(_ tag: Tag, _ read: (inout ByteReader, String) throws(WireError) -> T) throws(WireError) -> T {
            guard let value = try optional(tag, read) else {
                throw WireError(.invalidValue, "\(structure).\(tag.name) (tag \(tag.rawValue)): missing")
            }
            return value
        }

        func optional<T>(_ tag: Tag, _ read: (inout ByteReader, String) throws(WireError) -> T) throws(WireError) -> T? {
            guard var reader = fields[tag] else { return nil }
            let f = "\(structure).\(tag.name)"
            let length = reader.remaining
            let value = try read(&reader, f)
            guard reader.isAtEnd else {
                throw WireError(.invalidValue, "\(f) (tag \(tag.rawValue)): length \(length), the value is \(length - reader.remaining) bytes")
            }
            return value
        }
    }

    /// UTF-8 text, 1…max bytes, no control characters (records are printed to terminals).
    static func readText(_ r: inout ByteReader, _ f: String, max: Int) throws(WireError) -> String {
        let count = r.remaining
        guard count >= 1 else { throw WireError(.invalidValue, "\(f): empty (absent is written by leaving the field out)") }
        guard count <= max else { throw WireError(.sizeTooLarge, "\(f): \(count) bytes, at most \(max)") }
        return try text(try r.readBytes(count, f), f)
    }

    static func text(_ bytes: [UInt8], _ f: String) throws(WireError) -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw WireError(.invalidValue, "\(f): not valid UTF-8")
        }
        if let i = bytes.firstIndex(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw WireError(.invalidValue, "\(f): control character 0x\(Hex.encode([bytes[i]])) at byte \(i)")
        }
        if let i = s.unicodeScalars.firstIndex(where: { (0x80...0x9F).contains($0.value) }) {
            throw WireError(.invalidValue, "\(f): C1 control character U+00\(Hex.encode([UInt8(s.unicodeScalars[i].value)]).uppercased())")
        }
        return s
    }

    /// TPMT_HA with a known hash algorithm and exactly its digest size.
    static func readHA(_ r: inout ByteReader, _ f: String) throws(WireError) -> TCGDigest {
        let alg = try TPMAlgorithm.readHash(&r, "\(f).hashAlg")
        let size = alg.digestSize ?? 0
        return TCGDigest(algorithm: alg, bytes: try r.readBytes(size, "\(f).digest (\(alg.name))"))
    }

    /// TPML_DIGEST_VALUES: count 1…16, algorithms strictly ascending.
    static func readDigestValues(_ r: inout ByteReader, _ f: String) throws(WireError) -> [TCGDigest] {
        let count = try r.readUInt32("\(f).count")
        guard count >= 1 else { throw WireError(.invalidValue, "\(f).count: 0 (absent is written by leaving the field out)") }
        guard count <= UInt32(PCRSelection.maxBanks) else {
            throw WireError(.countTooLarge, "\(f).count: \(count), at most \(PCRSelection.maxBanks)")
        }
        var out: [TCGDigest] = []
        for i in 0..<Int(count) {
            let d = try readHA(&r, "\(f).digests[\(i)]")
            if let last = out.last, d.algorithm <= last.algorithm {
                throw WireError(.invalidValue, "\(f).digests[\(i)]: \(d.algorithm.name) after \(last.algorithm.name), banks must be ascending and unique")
            }
            out.append(d)
        }
        return out
    }

    static func readAttributes(_ r: inout ByteReader, _ f: String) throws(WireError) -> [Attribute] {
        let count = try r.readUInt16("\(f).count")
        guard count >= 1 else { throw WireError(.invalidValue, "\(f).count: 0 (absent is written by leaving the field out)") }
        guard count <= UInt16(maxAttributes) else {
            throw WireError(.countTooLarge, "\(f).count: \(count), at most \(maxAttributes)")
        }
        var out: [Attribute] = []
        var previousKey: [UInt8]?
        for i in 0..<Int(count) {
            let e = "\(f)[\(i)]"
            let keyLength = Int(try r.readUInt16("\(e).key.length"))
            guard keyLength >= 1, keyLength <= maxAttributeKey else {
                throw WireError(keyLength == 0 ? .invalidValue : .sizeTooLarge, "\(e).key.length: \(keyLength), expected 1–\(maxAttributeKey)")
            }
            let keyBytes = try r.readBytes(keyLength, "\(e).key")
            let key = try text(keyBytes, "\(e).key")
            if let previousKey {
                guard previousKey.lexicographicallyPrecedes(keyBytes) else {
                    throw WireError(.invalidValue, "\(e).key: '\(key)' \(previousKey == keyBytes ? "repeats the previous key" : "sorts before the previous key"), keys must be unique and ascending")
                }
            }
            previousKey = keyBytes
            let valueLength = Int(try r.readUInt16("\(e).value.length"))
            guard valueLength <= maxAttributeValue else {
                throw WireError(.sizeTooLarge, "\(e).value.length: \(valueLength), at most \(maxAttributeValue)")
            }
            let value = try text(try r.readBytes(valueLength, "\(e).value"), "\(e).value ('\(key)')")
            out.append(Attribute(key, value))
        }
        return out
    }

    /// The value of attribute `key`, if present.
    public func attribute(_ key: String) -> String? {
        attributes.first { $0.key == key }?.value
    }
}

extension VMVEventRecord.Attribute {
    /// Attributes sorted the way records require (ascending UTF-8 bytes); the last value wins
    /// for a repeated key.
    public static func canonical(_ pairs: [(String, String)]) -> [VMVEventRecord.Attribute] {
        var byKey: [String: String] = [:]
        for (k, v) in pairs { byKey[k] = v }
        return byKey.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            .map { VMVEventRecord.Attribute($0, byKey[$0] ?? "") }
    }
}

extension VMVEventRecord {
    /// `text` made loggable: control characters (C0, DEL, C1) become U+FFFD and it is cut to
    /// at most `maxBytes` UTF-8 bytes on a character boundary. For text the VMV did not
    /// choose (a guest's kernel banner, a domain name), which must not fail a measurement.
    public static func sanitized(_ text: String, maxBytes: Int = maxAttributeValue) -> String {
        var out = String.UnicodeScalarView()
        var size = 0
        for scalar in text.unicodeScalars {
            let v = scalar.value
            let s: Unicode.Scalar = (v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v)) ? "\u{FFFD}" : scalar
            let n = String(s).utf8.count
            guard size + n <= maxBytes else { break }
            out.append(s)
            size += n
        }
        return String(out)
    }
}

extension VMVEventRecord {
    /// The record an event of a VMV log carries, accepted only after the event's digest in
    /// every bank is found to be the hash of its data (so the PCR covers every byte read
    /// here), and the record names the PCR the event extends. The per-event check shared by
    /// the log store's scan and the verifier's replay; the type is not looked at (it is not
    /// covered by any digest).
    public init(verifying event: TCGEvent) throws(WireError) {
        try Self.checkDigests(of: event)
        self = try VMVEventRecord(wireBytes: event.data)
        guard Int(pcr) == event.pcrIndex else {
            throw WireError(.invalidValue, "the record says PCR \(pcr) but the event extends PCR \(event.pcrIndex): moved to another PCR")
        }
    }

    /// Checks that the event's digest in every bank is the hash of its data.
    public static func checkDigests(of event: TCGEvent) throws(WireError) {
        guard !event.digests.isEmpty else {
            throw WireError(.invalidValue, "the event carries no digest")
        }
        for digest in event.digests {
            guard let expected = digest.algorithm.hash(event.data) else {
                throw WireError(.unknownAlgorithm, "\(digest.algorithm.name) digest: this verifier cannot compute \(digest.algorithm.name), so the event data cannot be checked against it")
            }
            guard expected == digest.bytes else {
                throw WireError(.invalidValue, "\(digest.algorithm.name) digest \(Hex.encode(digest.bytes)) is not the hash of the event data (\(Hex.encode(expected)))")
            }
        }
    }
}
