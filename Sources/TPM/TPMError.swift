import CTSS2

/// Why a TPM operation failed: the operation, and either the TSS2 response code (with
/// tpm2-tss's own decoding of it) or a reason in words.
///
/// One small struct in the style of `WireError`: `code` is for programs, `description`
/// for people. `rc` is the raw TSS2_RC, layer included, exactly as `tpm2_rc_decode` takes it.
public struct TPMError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// The TPM answered with an error response code.
        case tpm
        /// The transport (TCTI) failed: the TPM or swtpm is unreachable or went away.
        case transport
        /// tpm2-tss itself refused (ESYS, MU or SYS layer), e.g. a bad sequence or argument.
        case tss
        /// The TCTI string cannot be understood.
        case configuration
        /// The caller asked for something the TPM cannot do as asked (an unallocated bank,
        /// a PCR index out of range, a digest of the wrong size, ...).
        case invalidArgument
        /// The TPM returned something that is not what the operation needs: an object at the
        /// AK handle that is not a restricted signing key, an EK that is not the TCG template,
        /// a response that does not parse.
        case unexpectedResponse
        /// The PCRs kept changing between the quote and the read-back.
        case pcrsKeptChanging
        /// Starting, provisioning or stopping the swtpm simulator failed.
        case simulator
    }

    public let code: Code
    /// What was being done: `Esys_Quote`, `PCR read sha256:0-7`, `swtpm_setup`, ...
    public let operation: String
    /// The TSS2 response code, when the failure has one.
    public let rc: UInt32?
    /// The reason in words: `Tss2_RC_Decode` output for response codes.
    public let reason: String

    public init(_ code: Code, operation: String, rc: UInt32? = nil, reason: String) {
        self.code = code
        self.operation = operation
        self.rc = rc
        self.reason = reason
    }

    /// An error for a non-success TSS2_RC, classified by its layer and decoded by tpm2-tss.
    init(operation: String, rc: TSS2_RC) {
        let layer = rc & CTSS2_RC_LAYER_MASK
        let code: Code = layer == CTSS2_TPM_RC_LAYER ? .tpm : layer == CTSS2_TCTI_RC_LAYER ? .transport : .tss
        self.init(code, operation: operation, rc: rc, reason: TPMError.decode(rc))
    }

    public var description: String {
        if let rc {
            return "\(operation): \(reason) (rc 0x\(String(rc, radix: 16, uppercase: false)))"
        }
        return "\(operation): \(reason)"
    }

    /// The TPM-layer response code without its handle/session/parameter number, for
    /// comparisons such as "is this TPM_RC_HANDLE"; nil unless `code == .tpm`.
    public var tpmBaseCode: UInt32? {
        guard code == .tpm, let rc else { return nil }
        let low = rc & 0xFFF
        // Format-one codes carry a parameter/handle/session number in bits 6 and 8..11.
        return low & CTSS2_RC_FMT1 != 0 ? low & 0xBF : low
    }

    /// True when the connection is gone and the TPM must be reopened.
    public var isTransportFailure: Bool { code == .transport }

    /// `Tss2_RC_Decode` returns a pointer to a thread-local buffer that the next call on the
    /// same thread overwrites: copy it at once.
    static func decode(_ rc: TSS2_RC) -> String {
        guard let text = Tss2_RC_Decode(rc) else { return "unknown response code" }
        return String(cString: text)
    }
}
