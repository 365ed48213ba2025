import Crypto

/// Builds event-log bytes field by field, following the TCG PC Client PFP layout directly and
/// sharing no code with TPMWire's writer, so tests check the parser against an independent
/// encoder rather than against itself.
struct HandBuiltLog {
    /// (TPM_ALG_ID, digest size) as written into the Spec ID table.
    let table: [(id: UInt16, size: Int)]
    private(set) var bytes: [UInt8] = []

    init(table: [(id: UInt16, size: Int)], vendorInfo: [UInt8] = [], uintnSize: UInt8 = 2, signature: String = "Spec ID Event03") {
        self.table = table
        var spec: [UInt8] = Array(signature.utf8) + [0]
        Self.le32(&spec, 0)                        // platformClass: client
        spec += [0, 2, 0, uintnSize]               // specVersionMinor, Major, errata, uintnSize
        Self.le32(&spec, UInt32(table.count))
        for (id, size) in table { Self.le16(&spec, id); Self.le16(&spec, UInt16(size)) }
        spec.append(UInt8(vendorInfo.count))
        spec += vendorInfo
        Self.le32(&bytes, 0)                       // pcrIndex
        Self.le32(&bytes, 3)                       // EV_NO_ACTION
        bytes += [UInt8](repeating: 0, count: 20)  // SHA-1 digest field
        Self.le32(&bytes, UInt32(spec.count))
        bytes += spec
    }

    /// Appends a TCG_PCR_EVENT2. Digests default to the hash of `data` in each table bank.
    mutating func event(pcr: UInt32, type: UInt32, data: [UInt8], digests: [(id: UInt16, bytes: [UInt8])]? = nil) {
        let list = digests ?? table.map { ($0.id, Self.hash($0.id, data)) }
        Self.le32(&bytes, pcr)
        Self.le32(&bytes, type)
        Self.le32(&bytes, UInt32(list.count))
        for (id, digest) in list { Self.le16(&bytes, id); bytes += digest }
        Self.le32(&bytes, UInt32(data.count))
        bytes += data
    }

    /// The EV_NO_ACTION StartupLocality event (PFP 10.4.5.3): zero digests, 17 bytes of data.
    mutating func startupLocality(_ locality: UInt8) {
        event(pcr: 0, type: 3, data: Array("StartupLocality".utf8) + [0, locality],
              digests: table.map { ($0.id, [UInt8](repeating: 0, count: $0.size)) })
    }

    mutating func raw(_ more: [UInt8]) { bytes += more }

    static func hash(_ id: UInt16, _ data: [UInt8]) -> [UInt8] {
        switch id {
        case 0x0004: Array(Insecure.SHA1.hash(data: data))
        case 0x000B: Array(SHA256.hash(data: data))
        case 0x000C: Array(SHA384.hash(data: data))
        case 0x000D: Array(SHA512.hash(data: data))
        default: [UInt8](repeating: 0xA5, count: 32)
        }
    }

    /// H(pcr ‖ digest), computed here rather than through TPMWire.
    static func extend(_ id: UInt16, _ pcr: [UInt8], _ digest: [UInt8]) -> [UInt8] {
        hash(id, pcr + digest)
    }

    static func le16(_ b: inout [UInt8], _ v: UInt16) { b += [UInt8(v & 0xff), UInt8(v >> 8)] }
    static func le32(_ b: inout [UInt8], _ v: UInt32) { for s in stride(from: 0, to: 32, by: 8) { b.append(UInt8((v >> UInt32(s)) & 0xff)) } }
    static func le64(_ b: inout [UInt8], _ v: UInt64) { for s in stride(from: 0, to: 64, by: 8) { b.append(UInt8((v >> UInt64(s)) & 0xff)) } }
}

/// Well-formed event data for the UEFI event types tpm2_eventlog decodes (it rejects data too
/// short for the structure its type names).
enum EFIEventData {
    static let sha1 = (id: UInt16(0x0004), size: 20)
    static let sha256 = (id: UInt16(0x000B), size: 32)
    static let sha384 = (id: UInt16(0x000C), size: 48)

    /// UEFI_VARIABLE_DATA: GUID, name length, data length, UTF-16 name, data.
    static func variable(name: String, value: [UInt8]) -> [UInt8] {
        var b: [UInt8] = [0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c]
        let utf16 = Array(name.utf16)
        HandBuiltLog.le64(&b, UInt64(utf16.count))
        HandBuiltLog.le64(&b, UInt64(value.count))
        for unit in utf16 { HandBuiltLog.le16(&b, unit) }
        return b + value
    }

    /// UEFI_PLATFORM_FIRMWARE_BLOB: base and length.
    static func firmwareBlob(base: UInt64, length: UInt64) -> [UInt8] {
        var b: [UInt8] = []
        HandBuiltLog.le64(&b, base)
        HandBuiltLog.le64(&b, length)
        return b
    }

    /// UEFI_IMAGE_LOAD_EVENT with an end-of-device-path node only.
    static func imageLoad(base: UInt64, length: UInt64) -> [UInt8] {
        var b: [UInt8] = []
        HandBuiltLog.le64(&b, base)
        HandBuiltLog.le64(&b, length)
        HandBuiltLog.le64(&b, 0)                   // ImageLinkTimeAddress
        HandBuiltLog.le64(&b, 4)                   // LengthOfDevicePath
        return b + [0x7f, 0xff, 0x04, 0x00]        // End of Hardware Device Path
    }
}
