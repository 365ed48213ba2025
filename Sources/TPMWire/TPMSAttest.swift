/// TPMS_CLOCK_INFO: the TPM's clock when it signed, and how often it was reset or restarted.
public struct TPMSClockInfo: Hashable, Sendable, TPMWireCodable {
    /// Milliseconds the TPM has been powered since it was last cleared (monotonic, persisted).
    public var clock: UInt64
    /// TPM resets (TPM2_Startup(CLEAR) after a TPM reset, i.e. reboots) since the last clear.
    public var resetCount: UInt32
    /// TPM restarts and resumes (Startup after Shutdown(STATE)) since the last reset.
    public var restartCount: UInt32
    /// Whether `clock` is known not to have been rolled back (TPMI_YES_NO).
    public var safe: Bool

    public init(clock: UInt64, resetCount: UInt32, restartCount: UInt32, safe: Bool) {
        self.clock = clock
        self.resetCount = resetCount
        self.restartCount = restartCount
        self.safe = safe
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        clock = try reader.readUInt64("TPMS_CLOCK_INFO.clock")
        resetCount = try reader.readUInt32("TPMS_CLOCK_INFO.resetCount")
        restartCount = try reader.readUInt32("TPMS_CLOCK_INFO.restartCount")
        safe = try reader.readYesNo("TPMS_CLOCK_INFO.safe")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(clock)
        writer.write(resetCount)
        writer.write(restartCount)
        writer.write(UInt8(safe ? 1 : 0))
    }
}

/// TPM_ST tags of the attestation structures (TPMI_ST_ATTEST).
public struct TPMAttestationType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let nv = TPMAttestationType(rawValue: 0x8014)
    public static let commandAudit = TPMAttestationType(rawValue: 0x8015)
    public static let sessionAudit = TPMAttestationType(rawValue: 0x8016)
    public static let certify = TPMAttestationType(rawValue: 0x8017)
    public static let quote = TPMAttestationType(rawValue: 0x8018)
    public static let time = TPMAttestationType(rawValue: 0x8019)
    public static let creation = TPMAttestationType(rawValue: 0x801A)
    public static let nvDigest = TPMAttestationType(rawValue: 0x801C)

    public var description: String {
        let name: String? = switch self {
        case .nv: "TPM_ST_ATTEST_NV"
        case .commandAudit: "TPM_ST_ATTEST_COMMAND_AUDIT"
        case .sessionAudit: "TPM_ST_ATTEST_SESSION_AUDIT"
        case .certify: "TPM_ST_ATTEST_CERTIFY"
        case .quote: "TPM_ST_ATTEST_QUOTE"
        case .time: "TPM_ST_ATTEST_TIME"
        case .creation: "TPM_ST_ATTEST_CREATION"
        case .nvDigest: "TPM_ST_ATTEST_NV_DIGEST"
        default: nil
        }
        return name ?? "0x" + String(rawValue, radix: 16).leftPadded(to: 4)
    }
}

/// TPMS_QUOTE_INFO: the PCRs a quote covers and the digest of their values.
public struct TPMSQuoteInfo: Hashable, Sendable, TPMWireCodable {
    public var pcrSelect: PCRSelection
    /// Hash (with the signing scheme's hash) of the selected PCR values, concatenated in
    /// selection order.
    public var pcrDigest: [UInt8]

    public init(pcrSelect: PCRSelection, pcrDigest: [UInt8]) {
        self.pcrSelect = pcrSelect
        self.pcrDigest = pcrDigest
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        pcrSelect = try PCRSelection(from: &reader)
        pcrDigest = try reader.read(.digest, "TPMS_QUOTE_INFO.pcrDigest")
    }

    public func write(to writer: inout ByteWriter) {
        pcrSelect.write(to: &writer)
        writer.write(.digest, pcrDigest)
    }
}

/// TPMS_CERTIFY_INFO: TPM2_Certify's statement that an object with this Name is loaded.
public struct TPMSCertifyInfo: Hashable, Sendable, TPMWireCodable {
    public var name: [UInt8]
    public var qualifiedName: [UInt8]

    public init(name: [UInt8], qualifiedName: [UInt8]) {
        self.name = name
        self.qualifiedName = qualifiedName
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        name = try reader.read(.name, "TPMS_CERTIFY_INFO.name")
        qualifiedName = try reader.read(.name, "TPMS_CERTIFY_INFO.qualifiedName")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(.name, name)
        writer.write(.name, qualifiedName)
    }
}

/// TPMS_SESSION_AUDIT_INFO.
public struct TPMSSessionAuditInfo: Hashable, Sendable, TPMWireCodable {
    public var exclusiveSession: Bool
    public var sessionDigest: [UInt8]

    public init(exclusiveSession: Bool, sessionDigest: [UInt8]) {
        self.exclusiveSession = exclusiveSession
        self.sessionDigest = sessionDigest
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        exclusiveSession = try reader.readYesNo("TPMS_SESSION_AUDIT_INFO.exclusiveSession")
        sessionDigest = try reader.read(.digest, "TPMS_SESSION_AUDIT_INFO.sessionDigest")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(UInt8(exclusiveSession ? 1 : 0))
        writer.write(.digest, sessionDigest)
    }
}

/// TPMS_COMMAND_AUDIT_INFO.
public struct TPMSCommandAuditInfo: Hashable, Sendable, TPMWireCodable {
    public var auditCounter: UInt64
    public var digestAlg: TPMAlgorithm
    public var auditDigest: [UInt8]
    public var commandDigest: [UInt8]

    public init(auditCounter: UInt64, digestAlg: TPMAlgorithm, auditDigest: [UInt8], commandDigest: [UInt8]) {
        self.auditCounter = auditCounter
        self.digestAlg = digestAlg
        self.auditDigest = auditDigest
        self.commandDigest = commandDigest
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        auditCounter = try reader.readUInt64("TPMS_COMMAND_AUDIT_INFO.auditCounter")
        digestAlg = try TPMAlgorithm.readHash(&reader, "TPMS_COMMAND_AUDIT_INFO.digestAlg")
        auditDigest = try reader.read(.digest, "TPMS_COMMAND_AUDIT_INFO.auditDigest")
        commandDigest = try reader.read(.digest, "TPMS_COMMAND_AUDIT_INFO.commandDigest")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(auditCounter)
        writer.write(digestAlg.rawValue)
        writer.write(.digest, auditDigest)
        writer.write(.digest, commandDigest)
    }
}

/// TPMS_TIME_ATTEST_INFO: TPM2_GetTime's statement (TPMS_TIME_INFO, then firmwareVersion).
public struct TPMSTimeAttestInfo: Hashable, Sendable, TPMWireCodable {
    /// TPMS_TIME_INFO.time: milliseconds since the last TPM2_Startup.
    public var time: UInt64
    public var clockInfo: TPMSClockInfo
    public var firmwareVersion: UInt64

    public init(time: UInt64, clockInfo: TPMSClockInfo, firmwareVersion: UInt64) {
        self.time = time
        self.clockInfo = clockInfo
        self.firmwareVersion = firmwareVersion
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        time = try reader.readUInt64("TPMS_TIME_INFO.time")
        clockInfo = try TPMSClockInfo(from: &reader)
        firmwareVersion = try reader.readUInt64("TPMS_TIME_ATTEST_INFO.firmwareVersion")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(time)
        clockInfo.write(to: &writer)
        writer.write(firmwareVersion)
    }
}

/// TPMS_CREATION_INFO: TPM2_CertifyCreation's statement.
public struct TPMSCreationInfo: Hashable, Sendable, TPMWireCodable {
    public var objectName: [UInt8]
    public var creationHash: [UInt8]

    public init(objectName: [UInt8], creationHash: [UInt8]) {
        self.objectName = objectName
        self.creationHash = creationHash
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        objectName = try reader.read(.name, "TPMS_CREATION_INFO.objectName")
        creationHash = try reader.read(.digest, "TPMS_CREATION_INFO.creationHash")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(.name, objectName)
        writer.write(.digest, creationHash)
    }
}

/// TPMS_NV_CERTIFY_INFO: TPM2_NV_Certify's statement about (part of) an NV index's contents.
public struct TPMSNVCertifyInfo: Hashable, Sendable, TPMWireCodable {
    public var indexName: [UInt8]
    public var offset: UInt16
    public var nvContents: [UInt8]

    public init(indexName: [UInt8], offset: UInt16, nvContents: [UInt8]) {
        self.indexName = indexName
        self.offset = offset
        self.nvContents = nvContents
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        indexName = try reader.read(.name, "TPMS_NV_CERTIFY_INFO.indexName")
        offset = try reader.readUInt16("TPMS_NV_CERTIFY_INFO.offset")
        nvContents = try reader.read(.maxNVBuffer, "TPMS_NV_CERTIFY_INFO.nvContents")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(.name, indexName)
        writer.write(offset)
        writer.write(.maxNVBuffer, nvContents)
    }
}

/// TPMS_NV_DIGEST_CERTIFY_INFO: TPM2_NV_Certify's statement about a digest of an NV index.
public struct TPMSNVDigestCertifyInfo: Hashable, Sendable, TPMWireCodable {
    public var indexName: [UInt8]
    public var nvDigest: [UInt8]

    public init(indexName: [UInt8], nvDigest: [UInt8]) {
        self.indexName = indexName
        self.nvDigest = nvDigest
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        indexName = try reader.read(.name, "TPMS_NV_DIGEST_CERTIFY_INFO.indexName")
        nvDigest = try reader.read(.digest, "TPMS_NV_DIGEST_CERTIFY_INFO.nvDigest")
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(.name, indexName)
        writer.write(.digest, nvDigest)
    }
}

/// TPMS_ATTEST: what a TPM signs in TPM2_Quote, TPM2_Certify and the other attestation commands.
///
/// `-m` of `tpm2_quote` is this structure alone (TPM2B_ATTEST's payload, no size prefix). The
/// signature covers these exact bytes; parse → serialise is byte-exact.
public struct TPMSAttest: Hashable, Sendable, TPMWireCodable {
    /// TPM_GENERATED_VALUE: a TPM sets it only in structures it produced itself.
    public static let generatedValue: UInt32 = 0xff54_4347

    /// TPMU_ATTEST, selected by `type`.
    public enum Attested: Hashable, Sendable {
        case certify(TPMSCertifyInfo)
        case creation(TPMSCreationInfo)
        case quote(TPMSQuoteInfo)
        case commandAudit(TPMSCommandAuditInfo)
        case sessionAudit(TPMSSessionAuditInfo)
        case time(TPMSTimeAttestInfo)
        case nv(TPMSNVCertifyInfo)
        case nvDigest(TPMSNVDigestCertifyInfo)

        /// The TPM_ST tag that goes with this body.
        public var type: TPMAttestationType {
            switch self {
            case .certify: .certify
            case .creation: .creation
            case .quote: .quote
            case .commandAudit: .commandAudit
            case .sessionAudit: .sessionAudit
            case .time: .time
            case .nv: .nv
            case .nvDigest: .nvDigest
            }
        }
    }

    /// Kept as read (not checked here): whether it is TPM_GENERATED_VALUE is the verifier's rule.
    public var magic: UInt32
    /// The Name of the signing key, qualified by its hierarchy.
    public var qualifiedSigner: [UInt8]
    /// The caller's qualifying data (a quote's nonce).
    public var extraData: [UInt8]
    public var clockInfo: TPMSClockInfo
    /// Vendor-specific firmware version (obfuscated by the TPM for keys outside the
    /// endorsement and platform hierarchies, like resetCount and restartCount).
    public var firmwareVersion: UInt64
    public var attested: Attested

    public var type: TPMAttestationType { attested.type }

    /// The quote's body, or nil for other attestation types.
    public var quote: TPMSQuoteInfo? {
        if case .quote(let q) = attested { q } else { nil }
    }

    public init(magic: UInt32 = TPMSAttest.generatedValue, qualifiedSigner: [UInt8], extraData: [UInt8],
                clockInfo: TPMSClockInfo, firmwareVersion: UInt64, attested: Attested) {
        self.magic = magic
        self.qualifiedSigner = qualifiedSigner
        self.extraData = extraData
        self.clockInfo = clockInfo
        self.firmwareVersion = firmwareVersion
        self.attested = attested
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        magic = try reader.readUInt32("TPMS_ATTEST.magic")
        let type = TPMAttestationType(rawValue: try reader.readUInt16("TPMS_ATTEST.type"))
        qualifiedSigner = try reader.read(.name, "TPMS_ATTEST.qualifiedSigner")
        extraData = try reader.read(.data, "TPMS_ATTEST.extraData")
        clockInfo = try TPMSClockInfo(from: &reader)
        firmwareVersion = try reader.readUInt64("TPMS_ATTEST.firmwareVersion")
        switch type {
        case .certify: attested = .certify(try TPMSCertifyInfo(from: &reader))
        case .creation: attested = .creation(try TPMSCreationInfo(from: &reader))
        case .quote: attested = .quote(try TPMSQuoteInfo(from: &reader))
        case .commandAudit: attested = .commandAudit(try TPMSCommandAuditInfo(from: &reader))
        case .sessionAudit: attested = .sessionAudit(try TPMSSessionAuditInfo(from: &reader))
        case .time: attested = .time(try TPMSTimeAttestInfo(from: &reader))
        case .nv: attested = .nv(try TPMSNVCertifyInfo(from: &reader))
        case .nvDigest: attested = .nvDigest(try TPMSNVDigestCertifyInfo(from: &reader))
        default:
            throw WireError(.invalidValue, "TPMS_ATTEST.type: \(type) is not an attestation structure tag")
        }
    }

    public func write(to writer: inout ByteWriter) {
        writer.write(magic)
        writer.write(type.rawValue)
        writer.write(.name, qualifiedSigner)
        writer.write(.data, extraData)
        clockInfo.write(to: &writer)
        writer.write(firmwareVersion)
        switch attested {
        case .certify(let info): info.write(to: &writer)
        case .creation(let info): info.write(to: &writer)
        case .quote(let info): info.write(to: &writer)
        case .commandAudit(let info): info.write(to: &writer)
        case .sessionAudit(let info): info.write(to: &writer)
        case .time(let info): info.write(to: &writer)
        case .nv(let info): info.write(to: &writer)
        case .nvDigest(let info): info.write(to: &writer)
        }
    }
}

extension ByteReader {
    /// TPMI_YES_NO: one byte, 0 or 1; anything else is refused, as a TPM would.
    public mutating func readYesNo(_ field: @autoclosure () -> String) throws(WireError) -> Bool {
        switch try readUInt8(field()) {
        case 0: return false
        case 1: return true
        case let v: throw WireError(.invalidValue, "\(field()): \(v) is not a TPMI_YES_NO (0 or 1)")
        }
    }
}
