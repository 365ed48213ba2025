/// Where the TPM is, as a TCTI string in the syntax tpm2-tools takes (`TPM2TOOLS_TCTI`, `-T`):
///
/// - `device:/dev/tpmrm0` — a kernel TPM device (`device` alone means `/dev/tpmrm0`);
/// - `swtpm:host=127.0.0.1,port=2321` — a swtpm on TCP (`path=` for its UNIX socket);
/// - `mssim:host=…,port=…`, `tabrmd:…`, `cmd:…` — anything else tpm2-tss's TCTI loader knows;
/// - `simulator` or `simulator:DIR` — a private swtpm that vmv provisions and starts itself
///   (see `TPMSimulator`); without DIR, in `TPMSimulator.defaultStateDirectory`.
public enum TCTIConfiguration: Sendable, Hashable, CustomStringConvertible {
    /// A kernel TPM device, through the linked device TCTI.
    case device(path: String)
    /// A swtpm, through the linked swtpm TCTI; the configuration part of the string
    /// (`host=…,port=…` or `path=…`), passed to tpm2-tss as is.
    case swtpm(configuration: String)
    /// Any other TCTI, through `Tss2_TctiLdr_Initialize` (which dlopens `libtss2-tcti-NAME.so.0`).
    case loader(String)
    /// A swtpm that vmv starts (or finds already running) for this state directory.
    case simulator(stateDirectory: String?)

    public static let defaultDevice = "/dev/tpmrm0"

    public init(parsing text: String) throws(TPMError) {
        let trimmed = String(text.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
        guard !trimmed.isEmpty else {
            throw TPMError(.configuration, operation: "TCTI", reason: "the TCTI string is empty")
        }
        let name: Substring
        let conf: Substring?
        if let colon = trimmed.firstIndex(of: ":") {
            name = trimmed[..<colon]
            conf = trimmed[trimmed.index(after: colon)...]
        } else {
            name = Substring(trimmed)
            conf = nil
        }
        switch name {
        case "device":
            self = .device(path: conf.map(String.init).flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultDevice)
        case "swtpm":
            self = .swtpm(configuration: conf.map(String.init) ?? "")
        case "simulator":
            self = .simulator(stateDirectory: conf.map(String.init).flatMap { $0.isEmpty ? nil : $0 })
        case "":
            throw TPMError(.configuration, operation: "TCTI", reason: "'\(text)' has no TCTI name before ':'")
        default:
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
                throw TPMError(.configuration, operation: "TCTI", reason: "'\(name)' is not a TCTI name")
            }
            self = .loader(trimmed)
        }
    }

    /// The same string tpm2-tools would take (for `simulator`, the simulator's own spelling).
    public var description: String {
        switch self {
        case .device(let path): "device:\(path)"
        case .swtpm(let conf): conf.isEmpty ? "swtpm" : "swtpm:\(conf)"
        case .loader(let text): text
        case .simulator(let dir): dir.map { "simulator:\($0)" } ?? "simulator"
        }
    }

    /// Whether a resource manager sits between us and the TPM. Without one (swtpm, mssim,
    /// `/dev/tpm0`) transient objects outlive the process that loaded them, so a crashed run
    /// leaves them behind in the TPM's three or so object slots.
    var hasResourceManager: Bool {
        switch self {
        case .device(let path): path.contains("tpmrm")
        case .loader(let text): text.hasPrefix("tabrmd") || text.contains("tpmrm")
        case .swtpm, .simulator: false
        }
    }
}
