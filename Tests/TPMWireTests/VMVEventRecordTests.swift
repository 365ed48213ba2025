import Crypto
import Testing
@testable import TPMWire

/// Builds record bytes field by field, independently of `VMVEventRecord.write`: the layout of
/// docs/measurement-log.md written out by hand.
struct HandBuiltRecord {
    var bytes: [UInt8] = Array("VMVE".utf8) + [0, 1]

    static func be(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> UInt64(8 * (n - 1 - $0))) } }

    mutating func field(_ tag: UInt16, _ value: [UInt8]) {
        bytes += Self.be(UInt64(tag), 2) + Self.be(UInt64(value.count), 4) + value
    }

    mutating func u64(_ tag: UInt16, _ v: UInt64) { field(tag, Self.be(v, 8)) }
    mutating func u32(_ tag: UInt16, _ v: UInt32) { field(tag, Self.be(UInt64(v), 4)) }
    mutating func u16(_ tag: UInt16, _ v: UInt16) { field(tag, Self.be(UInt64(v), 2)) }
    mutating func text(_ tag: UInt16, _ s: String) { field(tag, Array(s.utf8)) }
    static func ha(_ alg: UInt16, _ digest: [UInt8]) -> [UInt8] { be(UInt64(alg), 2) + digest }

    /// seq, epoch, pcr, time, kind: the fields every record starts with.
    static func common(seq: UInt64 = 7, epoch: UInt32 = 2, pcr: UInt32 = 15, time: UInt64 = 1_700_000_000_000, kind: UInt16) -> HandBuiltRecord {
        var r = HandBuiltRecord()
        r.u64(1, seq); r.u32(2, epoch); r.u32(3, pcr); r.u64(4, time); r.u16(5, kind)
        return r
    }
}

@Suite struct VMVEventRecordTests {
    static func sha256Of(_ s: String) -> [UInt8] { Array(SHA256.hash(data: Array(s.utf8))) }
    static let uuid: [UInt8] = [0x5e, 0x3b, 0x9c, 0x41, 0x0d, 0x2a, 0x4c, 0x8e, 0x9f, 0x10, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]

    /// One record of every kind, with every optional field the kind allows somewhere.
    static let samples: [VMVEventRecord] = [
        VMVEventRecord(seq: 0, epoch: 3, pcr: 15, time: 1_764_280_000_000, kind: .epochStart,
                       attributes: [.init("vmv.version", "0.1")],
                       epochStart: .init(resetCount: 5, restartCount: 0, reason: "epoch 2 was broken: sha256 differs",
                                         previousEpoch: 2, previousEnd: .broken,
                                         startPCRs: [TCGDigest(algorithm: .sha1, bytes: [UInt8](repeating: 1, count: 20)),
                                                     TCGDigest(algorithm: .sha256, bytes: [UInt8](repeating: 2, count: 32))])),
        VMVEventRecord(seq: 0, epoch: 0, pcr: 15, time: 1, kind: .epochStart,
                       epochStart: .init(resetCount: 0, restartCount: 0, reason: "first start")),
        VMVEventRecord(seq: 1, epoch: 3, pcr: 15, time: 2, kind: .vmvBinary, subject: "/usr/sbin/vmv",
                       contentDigest: TCGDigest(algorithm: .sha256, bytes: sha256Of("binary"))),
        VMVEventRecord(seq: 2, epoch: 3, pcr: 15, time: 3, kind: .vmvConfig, subject: "/etc/vmv/vmv.conf",
                       contentDigest: TCGDigest(algorithm: .sha384, bytes: [UInt8](repeating: 9, count: 48))),
        VMVEventRecord(seq: 3, epoch: 3, pcr: 15, time: 4, kind: .platform,
                       domain: .init(uuid: [UInt8](repeating: 0, count: 16), id: 0, name: "Domain-0"), subject: "kernel.release",
                       attributes: VMVEventRecord.Attribute.canonical([("release", "6.1.0-27-amd64"), ("machine", "x86_64")])),
        VMVEventRecord(seq: 4, epoch: 3, pcr: 15, time: 5, kind: .domainStart, domain: .init(uuid: uuid, id: 7, name: "guest-pv")),
        VMVEventRecord(seq: 5, epoch: 3, pcr: 15, time: 6, kind: .domainStop, domain: .init(uuid: uuid)),
        VMVEventRecord(seq: 6, epoch: 3, pcr: 15, time: 7, kind: .kernelImage, domain: .init(uuid: uuid, id: 7),
                       subject: "vmlinuz-6.1.0", contentDigest: TCGDigest(algorithm: .sha256, bytes: sha256Of("kernel")),
                       attributes: [.init("build-id", "ab12"), .init("kernel.release", "6.1.0")]),
        VMVEventRecord(seq: 7, epoch: 3, pcr: 15, time: 8, kind: .initrd, domain: .init(uuid: uuid, name: "guest-pv"),
                       subject: "initrd.img", contentDigest: TCGDigest(algorithm: .sha1, bytes: [UInt8](repeating: 3, count: 20))),
        VMVEventRecord(seq: 8, epoch: 3, pcr: 15, time: 9, kind: .commandLine, domain: .init(uuid: uuid),
                       subject: "cmdline", contentDigest: TCGDigest(algorithm: .sha256, bytes: sha256Of("root=/dev/xvda1 ro"))),
        VMVEventRecord(seq: 9, epoch: 3, pcr: 15, time: 10, kind: .domainConfig, domain: .init(uuid: uuid),
                       subject: "/etc/xen/guest-pv.cfg", contentDigest: TCGDigest(algorithm: .sha512, bytes: [UInt8](repeating: 4, count: 64))),
        VMVEventRecord(seq: 10, epoch: 3, pcr: 15, time: 11, kind: .memoryRegion, domain: .init(uuid: uuid, id: 7, name: "guest-pv"),
                       subject: "kernel.text",
                       region: .init(virtualStart: 0xffff_ffff_8100_0000, physicalStart: 0x100_0000, pageSize: 4096, pageCount: 3072,
                                     merkleRoot: TCGDigest(algorithm: .sha256, bytes: sha256Of("root"))),
                       attributes: [.init("kaslr.slide", "0x0")]),
        VMVEventRecord(seq: 11, epoch: 3, pcr: 16, time: 12, kind: .memoryRegion, domain: .init(uuid: uuid), subject: "kernel.rodata",
                       contentDigest: TCGDigest(algorithm: .sha256, bytes: sha256Of("x")),
                       region: .init(virtualStart: 0, pageSize: 1 << 21, pageCount: 1,
                                     merkleRoot: TCGDigest(algorithm: .sha256, bytes: sha256Of("r")))),
    ]

    @Test func everyKindRoundTripsByteForByte() throws {
        #expect(Set(Self.samples.map(\.kind)) == Set(VMVEventRecord.Kind.version1))
        for record in Self.samples {
            let bytes = try record.validated()
            let parsed = try VMVEventRecord(wireBytes: bytes)
            #expect(parsed == record)
            #expect(parsed.wireBytes == bytes)
        }
    }

    /// The serialiser writes exactly the layout of the docs, as built here by hand.
    @Test func serialiserMatchesTheHandBuiltLayout() throws {
        var hand = HandBuiltRecord.common(seq: 10, epoch: 3, pcr: 15, time: 11, kind: 22)
        hand.field(6, Self.uuid)
        hand.u32(7, 7)
        hand.text(8, "guest-pv")
        hand.text(9, "kernel.text")
        hand.u64(11, 0xffff_ffff_8100_0000)
        hand.u64(12, 0x100_0000)
        hand.u32(13, 4096)
        hand.u32(14, 3072)
        hand.field(15, HandBuiltRecord.ha(0x000B, Self.sha256Of("root")))
        hand.field(16, [0, 1, 0, 11] + Array("kaslr.slide".utf8) + [0, 3] + Array("0x0".utf8))
        #expect(Self.samples[11].wireBytes == hand.bytes)
        #expect(try VMVEventRecord(wireBytes: hand.bytes) == Self.samples[11])

        var start = HandBuiltRecord.common(seq: 0, epoch: 0, pcr: 15, time: 1, kind: 1)
        start.u32(17, 0); start.u32(18, 0); start.text(19, "first start")
        #expect(Self.samples[1].wireBytes == start.bytes)
    }

    /// The worked example of docs/measurement-log.md, byte for byte.
    @Test func documentedExampleIsWhatTheSerialiserWrites() throws {
        let record = VMVEventRecord(
            seq: 1, epoch: 0, pcr: 15, time: 1_764_280_000_000, kind: .vmvBinary, subject: "/usr/sbin/vmv",
            contentDigest: TCGDigest(algorithm: .sha256, bytes: Self.sha256Of("abc")))
        let documented = """
            564d5645 0001
            0001 00000008 0000000000000001
            0002 00000004 00000000
            0003 00000004 0000000f
            0004 00000008 0000019ac7485e00
            0005 00000002 0002
            0009 0000000d 2f7573722f7362696e2f766d76
            000a 00000022 000b ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
            """
        #expect(Hex.encode(record.wireBytes) == documented.filter { $0.isHexDigit })
        #expect(record.wireBytes.count == 121)
    }

    /// Each malformed record is refused with an error that names the field.
    @Test(arguments: HostileRecord.all)
    func hostileRecordIsRefusedNamingTheField(_ hostile: HostileRecord) {
        #expect(throws: WireError.self) { try VMVEventRecord(wireBytes: hostile.bytes) }
        do {
            _ = try VMVEventRecord(wireBytes: hostile.bytes)
        } catch {
            #expect(error.reason.contains(hostile.expected), "\(hostile.name): \(error.reason)")
        }
    }

    /// Every proper prefix of every sample is an error, except a cut between fields that
    /// leaves only optional fields out: that is another valid record (the TCG event's size
    /// frames a record, and its digest covers it). Never a trap.
    @Test func everyTruncationIsAnErrorOrAShorterRecord() {
        var errors = 0
        for record in Self.samples {
            let bytes = record.wireBytes
            for n in 0..<bytes.count {
                if let shorter = try? VMVEventRecord(wireBytes: Array(bytes[0..<n])) {
                    #expect(shorter != record)
                    #expect(shorter.wireBytes == Array(bytes[0..<n]))
                } else {
                    errors += 1
                }
            }
        }
        #expect(errors > Self.samples.reduce(0) { $0 + $1.wireBytes.count } * 9 / 10)
    }

    /// Random byte changes: never a trap, and whatever still parses is canonical (serialises
    /// back to the same bytes), so one record has one encoding.
    @Test func mutatedRecordsNeverTrapAndStayCanonical() {
        var rng = SystemRandomNumberGenerator()
        var accepted = 0
        for i in 0..<20_000 {
            var bytes = Self.samples[i % Self.samples.count].wireBytes
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.remove(at: at)
                default: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                }
            }
            if let parsed = try? VMVEventRecord(wireBytes: bytes) {
                accepted += 1
                #expect(parsed.wireBytes == bytes)
            }
        }
        // Changing a digest or text byte keeps a record valid: some must have parsed.
        #expect(accepted > 0)
    }

    @Test func sanitisedTextIsAlwaysLoggable() throws {
        let banner = "Linux version 6.1.0 (gcc)\n\u{1b}[31m#1 SMP\u{85}\u{7f}"
        let clean = VMVEventRecord.sanitized(banner)
        #expect(!clean.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value) })
        #expect(clean.hasPrefix("Linux version 6.1.0 (gcc)\u{FFFD}\u{FFFD}[31m#1 SMP"))
        let long = VMVEventRecord.sanitized(String(repeating: "é", count: 600), maxBytes: 1024)
        #expect(long.utf8.count == 1024)
        let record = VMVEventRecord(seq: 1, epoch: 0, pcr: 15, time: 0, kind: .platform, subject: "banner",
                                    attributes: [.init("banner", clean)])
        #expect(try VMVEventRecord(wireBytes: try record.validated()) == record)
    }

    @Test func uuidFormatsAndParses() throws {
        let text = VMVEventRecord.Domain.format(uuid: Self.uuid)
        #expect(text == "5e3b9c41-0d2a-4c8e-9f10-223344556677")
        #expect(try VMVEventRecord.Domain.parse(uuid: text.uppercased()) == Self.uuid)
        #expect(throws: WireError.self) { try VMVEventRecord.Domain.parse(uuid: "5e3b9c41") }
    }
}

/// A malformed record and a fragment of the error it must produce.
struct HostileRecord: Sendable, CustomTestStringConvertible {
    let name: String
    let bytes: [UInt8]
    let expected: String
    var testDescription: String { name }

    static func binary(_ edit: (inout HandBuiltRecord) -> Void) -> [UInt8] {
        var r = HandBuiltRecord.common(kind: 2)
        r.text(9, "/usr/sbin/vmv")
        edit(&r)
        return r.bytes
    }

    static let digest = HandBuiltRecord.ha(0x000B, [UInt8](repeating: 0xAA, count: 32))
    static let uuid = [UInt8](repeating: 0x11, count: 16)

    static var all: [HostileRecord] {
        var out: [HostileRecord] = []
        func add(_ name: String, _ bytes: [UInt8], _ expected: String) { out.append(HostileRecord(name: name, bytes: bytes, expected: expected)) }
        let good = binary { $0.field(10, digest) }

        add("empty", [], "magic: needs 4 bytes")
        add("wrong magic", Array("VMVX".utf8) + good.dropFirst(4), "magic: 0x564d5658, expected 'VMVE'")
        add("version 2", Array(good[0..<4]) + [0, 2] + good.dropFirst(6), "version: 2, this reader knows version 1 only")
        add("no fields", Array(good[0..<6]), "seq (tag 1): missing")
        add("unknown tag", good + [0, 23, 0, 0, 0, 1, 0], "unknown tag 23")
        add("tag 0", good + [0, 0, 0, 0, 0, 0], "unknown tag 0")
        do {
            var r = HandBuiltRecord.common(kind: 2)
            r.field(10, digest); r.text(9, "x")
            add("tags descending", r.bytes, "subject (tag 9): after contentDigest (tag 10), tags must be ascending")
        }
        do {
            var r = HandBuiltRecord.common(kind: 2)
            r.text(9, "x"); r.text(9, "y"); r.field(10, digest)
            add("duplicate tag", r.bytes, "subject (tag 9): appears twice")
        }
        add("missing content digest", binary { _ in }, "contentDigest (tag 10): missing, a vmvBinary record requires it")
        add("region in vmvBinary", binary { $0.field(10, digest); $0.u64(11, 0) }, "virtualStart (tag 11): not allowed in a vmvBinary record")
        add("epoch field in vmvBinary", binary { $0.field(10, digest); $0.u32(17, 1) }, "resetCount (tag 17): not allowed in a vmvBinary record")
        do {
            var r = HandBuiltRecord()
            r.field(1, [0, 0, 0, 1]); r.u32(2, 0)
            add("u64 with length 4", r.bytes, "seq: needs 8 bytes, only 4 left")
        }
        do {
            var r = HandBuiltRecord()
            r.field(1, [UInt8](repeating: 0, count: 9))
            add("u64 with length 9", r.bytes, "seq (tag 1): length 9, the value is 8 bytes")
        }
        add("length beyond the record", Array(good[0..<6]) + [0, 1, 0, 0, 0x10, 0] + [UInt8](repeating: 0, count: 8),
            "seq.length: 4096 exceeds the 8 bytes left")
        add("length 4 GiB", Array(good[0..<6]) + [0, 1, 0xFF, 0xFF, 0xFF, 0xFF], "seq.length: 4294967295 exceeds the 0 bytes left")
        add("oversized record", good + [UInt8](repeating: 0, count: VMVEventRecord.maxSize), "at most 65536")
        add("pcr 24", {
            var r = HandBuiltRecord(); r.u64(1, 0); r.u32(2, 0); r.u32(3, 24); r.u64(4, 0); r.u16(5, 2)
            r.text(9, "x"); r.field(10, digest); return r.bytes }(), "pcr: 24, a PC Client TPM has PCRs 0–23")
        add("unknown kind 5", { var r = HandBuiltRecord.common(kind: 5); r.text(9, "x"); return r.bytes }(),
            "kind: 5 is not a kind of version 1")
        add("domain kind without domain", { var r = HandBuiltRecord.common(kind: 18); r.text(9, "x"); r.field(10, digest); return r.bytes }(),
            "domainUUID (tag 6): missing, a kernelImage record requires it")
        add("short UUID", { var r = HandBuiltRecord.common(kind: 16); r.field(6, [1, 2, 3]); return r.bytes }(),
            "domainUUID: needs 16 bytes, only 3 left")
        add("domid without UUID", binary { $0.field(10, digest) }.prefix(0) + {
            var r = HandBuiltRecord.common(kind: 2); r.u32(7, 3); r.text(9, "x"); r.field(10, digest); return r.bytes }(),
            "domid (tag 7): present without domainUUID")
        add("domain name 257 bytes", {
            var r = HandBuiltRecord.common(kind: 16); r.field(6, uuid); r.text(8, String(repeating: "n", count: 257)); return r.bytes }(),
            "domainName: 257 bytes, at most 256")
        add("empty subject", { var r = HandBuiltRecord.common(kind: 2); r.field(9, []); r.field(10, digest); return r.bytes }(),
            "subject: empty")
        add("invalid UTF-8", { var r = HandBuiltRecord.common(kind: 2); r.field(9, [0x2F, 0xC3, 0x28]); r.field(10, digest); return r.bytes }(),
            "subject: not valid UTF-8")
        add("escape sequence", { var r = HandBuiltRecord.common(kind: 2); r.field(9, [0x1B, 0x5B, 0x32, 0x4A]); r.field(10, digest); return r.bytes }(),
            "subject: control character 0x1b at byte 0")
        add("C1 control", { var r = HandBuiltRecord.common(kind: 2); r.field(9, [0x61, 0xC2, 0x9B]); r.field(10, digest); return r.bytes }(),
            "subject: C1 control character U+009B")
        add("digest of rsa", binary { $0.field(10, HandBuiltRecord.ha(0x0001, [])) }, "contentDigest.hashAlg: rsa is not a hash algorithm")
        add("short digest", binary { $0.field(10, HandBuiltRecord.ha(0x000B, [1, 2])) }, "contentDigest.digest (sha256): needs 32 bytes, only 2 left")
        add("long digest", binary { $0.field(10, digest + [0]) }, "contentDigest (tag 10): length 35, the value is 34 bytes")
        func region(_ edit: (inout HandBuiltRecord) -> Void) -> [UInt8] {
            var r = HandBuiltRecord.common(kind: 22)
            r.field(6, uuid); r.text(9, "kernel.text")
            edit(&r)
            return r.bytes
        }
        add("region without root", region { $0.u64(11, 0); $0.u32(13, 4096); $0.u32(14, 1) }, "merkleRoot (tag 15): missing")
        add("page size 3000", region { $0.u64(11, 0); $0.u32(13, 3000); $0.u32(14, 1); $0.field(15, digest) },
            "pageSize: 3000, expected a power of two")
        add("page count 0", region { $0.u64(11, 0); $0.u32(13, 4096); $0.u32(14, 0); $0.field(15, digest) }, "pageCount: 0")
        add("sha1 Merkle root", region { $0.u64(11, 0); $0.u32(13, 4096); $0.u32(14, 1); $0.field(15, HandBuiltRecord.ha(4, [UInt8](repeating: 0, count: 20))) },
            "merkleRoot: sha1, Merkle roots are sha256")
        func attrs(_ pairs: [(String, String)], count: UInt16? = nil) -> [UInt8] {
            var v = HandBuiltRecord.be(UInt64(count ?? UInt16(pairs.count)), 2)
            for (k, val) in pairs { v += HandBuiltRecord.be(UInt64(k.utf8.count), 2) + Array(k.utf8) + HandBuiltRecord.be(UInt64(val.utf8.count), 2) + Array(val.utf8) }
            return binary { $0.field(10, digest); $0.field(16, v) }
        }
        add("attributes unsorted", attrs([("b", "1"), ("a", "2")]), "attributes[1].key: 'a' sorts before the previous key")
        add("attribute repeated", attrs([("a", "1"), ("a", "2")]), "attributes[1].key: 'a' repeats the previous key")
        add("attributes count 0", attrs([]), "attributes.count: 0")
        add("attributes count 65", attrs([], count: 65), "attributes.count: 65, at most 64")
        add("attributes count beyond data", attrs([("a", "1")], count: 2), "attributes[1].key.length: needs 2 bytes")
        add("empty key", attrs([("", "1")]), "attributes[0].key.length: 0")
        add("value too long", attrs([("a", String(repeating: "v", count: 1025))]), "attributes[0].value.length: 1025, at most 1024")
        func start(_ edit: (inout HandBuiltRecord) -> Void) -> [UInt8] {
            var r = HandBuiltRecord.common(seq: 0, kind: 1)
            r.u32(17, 1); r.u32(18, 0); r.text(19, "reason")
            edit(&r)
            return r.bytes
        }
        add("epochStart without reason", { var r = HandBuiltRecord.common(seq: 0, kind: 1); r.u32(17, 1); r.u32(18, 0); return r.bytes }(),
            "reason (tag 19): missing, a epochStart record requires it")
        add("previousEpoch alone", start { $0.u32(20, 1) }, "previousEnd (tag 21): missing, previousEpoch and previousEnd come together")
        add("previousEnd 4", start { $0.u32(20, 1); $0.u16(21, 4) }, "previousEnd: 4, expected 1 (closed), 2 (TPM reset) or 3 (broken)")
        add("startPCRs descending", start {
            $0.field(22, HandBuiltRecord.be(2, 4) + HandBuiltRecord.ha(0x000B, [UInt8](repeating: 0, count: 32)) + HandBuiltRecord.ha(0x0004, [UInt8](repeating: 0, count: 20)))
        }, "startPCRs.digests[1]: sha1 after sha256, banks must be ascending and unique")
        add("startPCRs count 17", start { $0.field(22, HandBuiltRecord.be(17, 4)) }, "startPCRs.count: 17, at most 16")
        add("subject in epochStart", start { _ in }.prefix(0) + {
            var r = HandBuiltRecord.common(seq: 0, kind: 1); r.text(9, "x"); r.u32(17, 1); r.u32(18, 0); r.text(19, "r"); return r.bytes }(),
            "subject (tag 9): not allowed in a epochStart record")
        return out
    }
}
