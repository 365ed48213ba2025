/// The eventType of a TCG event-log record (TCG PC Client Platform Firmware Profile, section 10.4.1).
///
/// Any UInt32 is representable: a log may carry types this verifier has no name for, and the
/// type is not covered by the event's digest, so nothing may trust it alone (see docs/event-log.md).
public struct TCGEventType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// EV_PREBOOT_CERT
    public static let prebootCert = TCGEventType(0x0000_0000)
    /// EV_POST_CODE
    public static let postCode = TCGEventType(0x0000_0001)
    /// EV_UNUSED
    public static let unused = TCGEventType(0x0000_0002)
    /// EV_NO_ACTION: informational, never extended (Spec ID header, StartupLocality, …).
    public static let noAction = TCGEventType(0x0000_0003)
    /// EV_SEPARATOR
    public static let separator = TCGEventType(0x0000_0004)
    /// EV_ACTION
    public static let action = TCGEventType(0x0000_0005)
    /// EV_EVENT_TAG
    public static let eventTag = TCGEventType(0x0000_0006)
    /// EV_S_CRTM_CONTENTS
    public static let sCRTMContents = TCGEventType(0x0000_0007)
    /// EV_S_CRTM_VERSION
    public static let sCRTMVersion = TCGEventType(0x0000_0008)
    /// EV_CPU_MICROCODE
    public static let cpuMicrocode = TCGEventType(0x0000_0009)
    /// EV_PLATFORM_CONFIG_FLAGS
    public static let platformConfigFlags = TCGEventType(0x0000_000A)
    /// EV_TABLE_OF_DEVICES
    public static let tableOfDevices = TCGEventType(0x0000_000B)
    /// EV_COMPACT_HASH
    public static let compactHash = TCGEventType(0x0000_000C)
    /// EV_IPL
    public static let ipl = TCGEventType(0x0000_000D)
    /// EV_IPL_PARTITION_DATA
    public static let iplPartitionData = TCGEventType(0x0000_000E)
    /// EV_NONHOST_CODE
    public static let nonhostCode = TCGEventType(0x0000_000F)
    /// EV_NONHOST_CONFIG
    public static let nonhostConfig = TCGEventType(0x0000_0010)
    /// EV_NONHOST_INFO
    public static let nonhostInfo = TCGEventType(0x0000_0011)
    /// EV_OMIT_BOOT_DEVICE_EVENTS
    public static let omitBootDeviceEvents = TCGEventType(0x0000_0012)

    /// EV_EFI_EVENT_BASE
    public static let efiEventBase = TCGEventType(0x8000_0000)
    /// EV_EFI_VARIABLE_DRIVER_CONFIG
    public static let efiVariableDriverConfig = TCGEventType(0x8000_0001)
    /// EV_EFI_VARIABLE_BOOT
    public static let efiVariableBoot = TCGEventType(0x8000_0002)
    /// EV_EFI_BOOT_SERVICES_APPLICATION
    public static let efiBootServicesApplication = TCGEventType(0x8000_0003)
    /// EV_EFI_BOOT_SERVICES_DRIVER
    public static let efiBootServicesDriver = TCGEventType(0x8000_0004)
    /// EV_EFI_RUNTIME_SERVICES_DRIVER
    public static let efiRuntimeServicesDriver = TCGEventType(0x8000_0005)
    /// EV_EFI_GPT_EVENT
    public static let efiGPTEvent = TCGEventType(0x8000_0006)
    /// EV_EFI_ACTION
    public static let efiAction = TCGEventType(0x8000_0007)
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB
    public static let efiPlatformFirmwareBlob = TCGEventType(0x8000_0008)
    /// EV_EFI_HANDOFF_TABLES
    public static let efiHandoffTables = TCGEventType(0x8000_0009)
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB2
    public static let efiPlatformFirmwareBlob2 = TCGEventType(0x8000_000A)
    /// EV_EFI_HANDOFF_TABLES2
    public static let efiHandoffTables2 = TCGEventType(0x8000_000B)
    /// EV_EFI_VARIABLE_BOOT2
    public static let efiVariableBoot2 = TCGEventType(0x8000_000C)
    /// EV_EFI_GPT_EVENT2
    public static let efiGPTEvent2 = TCGEventType(0x8000_000D)
    /// EV_EFI_HCRTM_EVENT: the H-CRTM measured the first code; PCR 0 started at locality 4.
    public static let efiHCRTMEvent = TCGEventType(0x8000_0010)
    /// EV_EFI_VARIABLE_AUTHORITY
    public static let efiVariableAuthority = TCGEventType(0x8000_00E0)
    /// EV_EFI_SPDM_FIRMWARE_BLOB
    public static let efiSPDMFirmwareBlob = TCGEventType(0x8000_00E1)
    /// EV_EFI_SPDM_FIRMWARE_CONFIG
    public static let efiSPDMFirmwareConfig = TCGEventType(0x8000_00E2)

    static let names: [UInt32: String] = [
        0x0: "EV_PREBOOT_CERT", 0x1: "EV_POST_CODE", 0x2: "EV_UNUSED", 0x3: "EV_NO_ACTION",
        0x4: "EV_SEPARATOR", 0x5: "EV_ACTION", 0x6: "EV_EVENT_TAG", 0x7: "EV_S_CRTM_CONTENTS",
        0x8: "EV_S_CRTM_VERSION", 0x9: "EV_CPU_MICROCODE", 0xA: "EV_PLATFORM_CONFIG_FLAGS",
        0xB: "EV_TABLE_OF_DEVICES", 0xC: "EV_COMPACT_HASH", 0xD: "EV_IPL", 0xE: "EV_IPL_PARTITION_DATA",
        0xF: "EV_NONHOST_CODE", 0x10: "EV_NONHOST_CONFIG", 0x11: "EV_NONHOST_INFO",
        0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0000: "EV_EFI_EVENT_BASE", 0x8000_0001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002: "EV_EFI_VARIABLE_BOOT", 0x8000_0003: "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004: "EV_EFI_BOOT_SERVICES_DRIVER", 0x8000_0005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006: "EV_EFI_GPT_EVENT", 0x8000_0007: "EV_EFI_ACTION",
        0x8000_0008: "EV_EFI_PLATFORM_FIRMWARE_BLOB", 0x8000_0009: "EV_EFI_HANDOFF_TABLES",
        0x8000_000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000_000B: "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C: "EV_EFI_VARIABLE_BOOT2", 0x8000_000D: "EV_EFI_GPT_EVENT2",
        0x8000_0010: "EV_EFI_HCRTM_EVENT", 0x8000_00E0: "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1: "EV_EFI_SPDM_FIRMWARE_BLOB", 0x8000_00E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
    ]

    /// The TCG name (`EV_SEPARATOR`), as tpm2_eventlog prints it, or the hex value.
    public var name: String {
        Self.names[rawValue] ?? "0x" + String(rawValue, radix: 16, uppercase: true).leftPadded(to: 8)
    }

    public var description: String { name }

    /// Parses a TCG name (`EV_SEPARATOR`) or a number (`4`, `0x80000001`).
    public init?(name: String) {
        let upper = name.uppercased()
        if let (raw, _) = Self.names.first(where: { $0.value == upper }) {
            self.init(raw)
        } else if upper.hasPrefix("0X"), let v = UInt32(upper.dropFirst(2), radix: 16) {
            self.init(v)
        } else if let v = UInt32(upper) {
            self.init(v)
        } else {
            return nil
        }
    }
}
