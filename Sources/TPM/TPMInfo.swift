import TPMWire

/// What a TPM says about itself (TPM2_GetCapability, fixed properties and PCR banks).
public struct TPMInfo: Sendable, Hashable {
    /// TPM_PT_MANUFACTURER as the TCG vendor ID registry spells it ("IBM", "IFX", "NTC", "STM").
    public var manufacturer: String
    /// TPM_PT_MANUFACTURER as a number (0x49424D00 for "IBM").
    public var manufacturerID: UInt32
    /// TPM_PT_VENDOR_STRING_1…4 ("SW   TPM" for swtpm).
    public var vendorString: String
    /// TPM_PT_FIRMWARE_VERSION_1 (high 32 bits) and _2 (low 32 bits).
    public var firmwareVersion: UInt64
    /// The specification: family ("2.0"), level, revision (1.59 as 159), year and day of year.
    public var specFamily: String
    public var specLevel: UInt32
    public var specRevision: UInt32
    public var specYear: UInt32
    public var specDayOfYear: UInt32
    /// TPM_PT_PCR_COUNT: PCRs per bank.
    public var pcrCount: Int
    /// The PCR banks the TPM implements, with the PCRs allocated in each; a bank with no
    /// PCRs is implemented but not allocated.
    public var pcrBanks: PCRSelection

    /// The allocated banks, in the TPM's order: the banks every extend must cover.
    public var allocatedBanks: [TPMAlgorithm] {
        pcrBanks.banks.filter { !$0.pcrs.isEmpty }.map(\.hash)
    }

    /// "major.minor" the way vendors quote it (the high and low halves of FIRMWARE_VERSION_1),
    /// then the raw value.
    public var firmwareVersionDescription: String {
        let high = UInt32(truncatingIfNeeded: firmwareVersion >> 32)
        let low = UInt32(truncatingIfNeeded: firmwareVersion)
        return "\(high >> 16).\(high & 0xFFFF) (0x\(hex32(high)):\(hex32(low)))"
    }

    /// The spec revision as printed on the specification's title page (1.59).
    public var specRevisionDescription: String {
        "\(specRevision / 100).\(String(specRevision % 100).leftPadded(2))"
    }

    /// Four ASCII characters packed big-endian in a property value, without trailing NULs and spaces.
    static func characters(_ value: UInt32) -> String {
        let bytes = [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> UInt32($0)) }
        return String(decoding: bytes.filter { $0 >= 0x20 && $0 < 0x7F }, as: UTF8.self)
    }

    private func hex32(_ v: UInt32) -> String { String(String(v, radix: 16)).leftPadded(8) }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
