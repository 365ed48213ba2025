/// One event of the VMV domain's launch: what dom0's builder extends into the launch PCR
/// (default 13) with TPM2_PCR_Event before the VMV domain runs (docs/domp.md). The TPM hashes
/// the event's text in every bank, so the text is both the event data and what the verifier
/// replays; the VMV copies each text into a platform record (`LaunchEvent.recordAttribute`).
///
/// The text is one line of printable ASCII (at most 1024 bytes, TPM2_PCR_Event's limit):
///
///     vmv-launch/1 <kind> key=value …
///
/// - `xsm-policy sha256=<hex> size=<bytes> file=<name>`: the FLASK policy, measured, then loaded;
/// - `domp-kernel`, `domp-initramfs`, `domp-config` with the same fields: the VMV domain's image;
/// - `handover tpm=vmv|dom0`: the builder is done; with `tpm=vmv` dom0 gives the TPM away next;
/// - `xsm-policy-load-failed`: the measured policy did not load (the builder stops).
///
/// Parsing is strict: a known kind, its required fields and no others, each once, in any order.
public struct LaunchEvent: Hashable, Sendable {
    public static let prefix = "vmv-launch/1"
    /// TPM2_PCR_Event takes at most 1024 bytes of event data.
    public static let maxBytes = 1024
    /// The record attribute holding the event's text (and `tpm.pcr` its PCR).
    public static let recordAttribute = "tpm.event"
    public static let pcrAttribute = "tpm.pcr"
    /// The launch PCR dom0's builder uses: static OS range, not used by GRUB (8, 9), IMA (10),
    /// systemd-stub (11, 12), shim (14) or the VMV log (15). See docs/domp.md.
    public static let defaultPCR = 13

    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case xsmPolicy = "xsm-policy"
        case dompKernel = "domp-kernel"
        case dompInitramfs = "domp-initramfs"
        case dompConfig = "domp-config"
        case handover
        case xsmPolicyLoadFailed = "xsm-policy-load-failed"

        /// The fields an event of this kind must have, and the only ones it may have.
        var fields: Set<String> {
            switch self {
            case .xsmPolicy, .dompKernel, .dompInitramfs, .dompConfig: ["sha256", "size", "file"]
            case .handover: ["tpm"]
            case .xsmPolicyLoadFailed: []
            }
        }
    }

    /// The exact bytes the TPM hashed.
    public let text: [UInt8]
    public let kind: Kind
    /// Every field, by name.
    public let fields: [String: String]
    /// SHA-256 of the file measured (`sha256=`), for the file kinds.
    public let sha256: [UInt8]?
    public let size: UInt64?
    public let file: String?

    /// The platform record subject the VMV files this event under: `launch.<kind>`.
    public var subject: String { "launch." + kind.rawValue }

    public init(parsing bytes: [UInt8]) throws(WireError) {
        guard !bytes.isEmpty else { throw WireError(.truncated, "launch event: empty") }
        guard bytes.count <= Self.maxBytes else {
            throw WireError(.sizeTooLarge, "launch event: \(bytes.count) bytes, at most \(Self.maxBytes) (TPM2_PCR_Event)")
        }
        for (i, b) in bytes.enumerated() where b < 0x20 || b > 0x7E {
            throw WireError(.invalidValue, "launch event: byte \(i) is 0x\(String(b, radix: 16)), not printable ASCII")
        }
        let tokens = bytes.split(separator: 0x20, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard tokens.first == Self.prefix else {
            throw WireError(.syntax, "launch event: does not start with '\(Self.prefix) '")
        }
        guard tokens.count >= 2 else { throw WireError(.truncated, "launch event: no kind after '\(Self.prefix)'") }
        guard let kind = Kind(rawValue: tokens[1]) else {
            throw WireError(.invalidValue, "launch event.kind: '\(tokens[1].prefix(40))' is not one of \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var fields: [String: String] = [:]
        for token in tokens.dropFirst(2) {
            guard !token.isEmpty else { throw WireError(.syntax, "launch event: two spaces in a row, or a trailing space") }
            guard let eq = token.firstIndex(of: "=") else {
                throw WireError(.syntax, "launch event \(kind.rawValue): '\(token.prefix(40))' is not key=value")
            }
            let key = String(token[..<eq]), value = String(token[token.index(after: eq)...])
            guard kind.fields.contains(key) else {
                throw WireError(.invalidValue, "launch event \(kind.rawValue): unknown field '\(key.prefix(40))'"
                    + (kind.fields.isEmpty ? " (it has none)" : " (fields: \(kind.fields.sorted().joined(separator: ", ")))"))
            }
            guard fields[key] == nil else { throw WireError(.invalidValue, "launch event \(kind.rawValue).\(key): given twice") }
            guard !value.isEmpty else { throw WireError(.syntax, "launch event \(kind.rawValue).\(key): empty") }
            fields[key] = value
        }
        if let missing = kind.fields.subtracting(fields.keys).sorted().first {
            throw WireError(.truncated, "launch event \(kind.rawValue).\(missing): missing")
        }
        var sha256: [UInt8]?
        if let hex = fields["sha256"] {
            guard hex.utf8.count == 64, let digest = try? Hex.decode(hex) else {
                throw WireError(.invalidValue, "launch event \(kind.rawValue).sha256: not 64 hex digits")
            }
            sha256 = digest
        }
        var size: UInt64?
        if let text = fields["size"] {
            guard text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), text.utf8.count <= 19, let n = UInt64(text) else {
                throw WireError(.invalidValue, "launch event \(kind.rawValue).size: '\(text.prefix(24))' is not a byte count")
            }
            size = n
        }
        if let tpm = fields["tpm"], tpm != "vmv", tpm != "dom0" {
            throw WireError(.invalidValue, "launch event handover.tpm: '\(tpm.prefix(24))', expected vmv or dom0")
        }
        self.text = bytes
        self.kind = kind
        self.fields = fields
        self.sha256 = sha256
        self.size = size
        self.file = fields["file"]
    }

    public init(parsing text: String) throws(WireError) {
        try self.init(parsing: Array(text.utf8))
    }
}
