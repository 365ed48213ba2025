import ArgumentParser
import Foundation
import Logging
import TPM
import TPMWire
import Verifier
import X509

/// `vmv tpm …`: the operator's view of the TPM vmv uses.
struct TPMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tpm",
        abstract: "Inspect the TPM, enroll its AK, take quotes, run the embedded swtpm.",
        discussion: """
            Every command takes --tcti, in tpm2-tools syntax: device:/dev/tpmrm0, \
            swtpm:host=127.0.0.1,port=2321, mssim:host=…,port=…, or simulator (the default): a \
            private swtpm in \(TPMSimulator.defaultStateDirectory()) that vmv provisions on first \
            use and starts and stops around the command, unless `vmv tpm simulator start` already \
            runs one there. simulator:DIR uses another state directory.
            """,
        subcommands: [TPMInfoCommand.self, TPMPCRsCommand.self, TPMEnrollCommand.self, TPMQuoteCommand.self, TPMSimulatorCommand.self]
    )
}

/// The TPM a command talks to.
struct TPMOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The TPM, as a TCTI string (see `vmv tpm --help`).", valueName: "tcti"))
    var tcti: String = "simulator"

    @Option(name: .long, help: ArgumentHelp("Persistent handle of the AK.", valueName: "handle"),
            transform: parseHandle)
    var akHandle: UInt32 = TPM.AttestationKey.defaultHandle

    func validate() throws {
        do { _ = try TCTIConfiguration(parsing: tcti) } catch { throw ValidationError("--tcti: \(error.reason)") }
    }

    var configuration: TCTIConfiguration {
        (try? TCTIConfiguration(parsing: tcti)) ?? .simulator(stateDirectory: nil)
    }

    /// Opens the TPM, runs `body`, and closes it (stopping a simulator it started) on every path.
    func withTPM<T>(_ body: (TPM) async throws -> T) async throws -> T {
        let tpm = try await TPM.open(configuration, logger: vmvLogger)
        do {
            let result = try await body(tpm)
            await tpm.close()
            return result
        } catch {
            await tpm.close()
            throw error
        }
    }

    /// The state directory when the TCTI is the embedded simulator.
    var simulatorState: String? {
        guard case .simulator(let directory) = configuration else { return nil }
        return directory ?? TPMSimulator.defaultStateDirectory()
    }
}

let vmvLogger: Logger = {
    var logger = Logger(label: "vmv")
    logger.logLevel = ProcessInfo.processInfo.environment["VMV_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .notice
    return logger
}()

func parseHandle(_ text: String) throws -> UInt32 {
    let digits = text.lowercased().hasPrefix("0x") ? String(text.dropFirst(2)) : text
    guard let value = UInt32(digits, radix: 16) else { throw ValidationError("\"\(text)\" is not a hexadecimal handle such as 0x81010003") }
    return value
}

func handleText(_ handle: UInt32) -> String { String(format: "0x%08x", handle) }

func parseSelection(_ text: String, _ option: String) throws -> PCRSelection {
    do { return try PCRSelection(parsing: text) } catch { throw ValidationError("\(option): \(error.reason)") }
}

/// Writes `bytes` to DIR/name, creating DIR.
func writeFile(_ bytes: [UInt8], _ directory: String, _ name: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try Data(bytes).write(to: URL(fileURLWithPath: directory).appendingPathComponent(name))
}

extension TPM.EndorsementKey.Kind: ExpressibleByArgument {}
extension TPM.AttestationKey.Kind: ExpressibleByArgument {}

// MARK: - info

struct TPMInfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Manufacturer, firmware, PCR banks, EK certificate and AK of the TPM.")

    @OptionGroup var options: TPMOptions

    func run() async throws {
        try await options.withTPM { tpm in
            let info = try await tpm.info()
            print("TCTI:          \(tpm.tcti)")
            print("manufacturer:  \(info.manufacturer) (0x\(String(info.manufacturerID, radix: 16))), vendor \"\(info.vendorString)\"")
            print("firmware:      \(info.firmwareVersionDescription)")
            print("specification: TPM \(info.specFamily) level \(info.specLevel) revision \(info.specRevisionDescription) (\(info.specYear), day \(info.specDayOfYear))")
            let allocated = info.pcrBanks.banks.filter { !$0.pcrs.isEmpty }
            let idle = info.pcrBanks.banks.filter(\.pcrs.isEmpty).map(\.hash.name)
            print("PCR banks:     " + allocated.map { "\($0.hash.name) (\($0.pcrs.count) PCRs)" }.joined(separator: ", ")
                  + (idle.isEmpty ? "" : "; implemented, not allocated: " + idle.joined(separator: ", ")))
            for kind in TPM.EndorsementKey.Kind.allCases {
                let ek = try await tpm.endorsementKey(kind)
                let place = ek.persistentHandle.map { "persistent at \(handleText($0))" } ?? "from the template"
                var line = "\(kind):".padding(toLength: 15, withPad: " ", startingAt: 0) + "\(place), "
                if let der = ek.certificate, let certificate = try? EKCertificateValidator.parse(der).first {
                    let subject = certificate.subject.description.isEmpty ? "(empty)" : certificate.subject.description
                    line += "certificate subject \(subject), issuer \(certificate.issuer), valid until \(ISO8601DateFormatter().string(from: certificate.notValidAfter))"
                } else if ek.certificate != nil {
                    line += "certificate in NV \(handleText(kind.certificateIndex)) does not parse"
                } else {
                    line += "no certificate in NV \(handleText(kind.certificateIndex))"
                }
                print(line)
            }
            do {
                let ak = try await tpm.attestationKey(at: options.akHandle, createIfMissing: false)
                print("AK:            \(handleText(ak.handle)), \(ak.publicArea.type.name) \(ak.publicArea.key.scheme.scheme.name)-\(ak.publicArea.key.scheme.hash?.name ?? "?"), name \(Hex.encode(ak.name))")
            } catch let error as TPMError where error.code == .invalidArgument {
                print("AK:            none at \(handleText(options.akHandle)) (vmv tpm enroll creates one)")
            }
        }
    }
}

// MARK: - pcrs

struct TPMPCRsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pcrs", abstract: "Read PCRs, printed as tpm2_pcrread prints them.")

    @OptionGroup var options: TPMOptions

    @Option(name: .long, help: ArgumentHelp("PCRs to read, tpm2-tools syntax (default: every PCR of every allocated bank).", valueName: "spec"))
    var pcrList: String?

    func validate() throws {
        if let pcrList { _ = try parseSelection(pcrList, "--pcr-list") }
    }

    func run() async throws {
        try await options.withTPM { tpm in
            let selection: PCRSelection
            if let pcrList {
                selection = try parseSelection(pcrList, "--pcr-list")
            } else {
                selection = try await tpm.info().pcrBanks
            }
            let values = try await tpm.readPCRs(PCRSelection(banks: selection.banks.filter { !$0.pcrs.isEmpty }))
            // Like tpm2_pcrread, an implemented bank with nothing allocated is listed empty.
            for bank in selection.banks {
                print("  \(bank.hash.name):")
                for pcr in bank.pcrs {
                    let index = String(pcr).padding(toLength: 2, withPad: " ", startingAt: 0)
                    print("    \(index): 0x\(Hex.encode(values[bank.hash, pcr] ?? []).uppercased())")
                }
            }
        }
    }
}

// MARK: - enroll

struct TPMEnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Create (or find) the AK under the EK, prove it with credential activation, and write what a verifier needs.",
        discussion: """
            Writes to --out: ak.pub (TPM2B_PUBLIC, as tpm2_createak -u), ak.pem \
            (SubjectPublicKeyInfo), ak.name, ak.handle, ek.pub (TPM2B_PUBLIC) and ek.crt (the EK \
            certificate from NV, DER) when the TPM has one. The credential activation round trip \
            is the one a remote verifier does: MakeCredential in software from the EK's public \
            area and the AK's Name, ActivateCredential in the TPM. With --ek-anchors (and always \
            for the embedded simulator, whose CA is in its state directory) the EK certificate \
            must chain to those trust anchors and certify the EK.
            """)

    @OptionGroup var options: TPMOptions

    @Option(name: .long, help: ArgumentHelp("Directory for the AK and EK files.", valueName: "dir"))
    var out: String

    @Option(name: .long, help: "The EK to create the AK under: rsa (TCG template L-1) or ecc (L-2).")
    var ek: TPM.EndorsementKey.Kind = .rsa2048

    @Option(name: .long, help: "The AK to create when there is none: ecc (P-256, ECDSA-SHA256) or rsa (2048, RSASSA-SHA256).")
    var akKind: TPM.AttestationKey.Kind = .eccP256

    @Option(name: .long, help: ArgumentHelp("Directory of EK trust anchors and intermediates (PEM or DER), e.g. certs/tpm-ek.", valueName: "dir"))
    var ekAnchors: String?

    @Flag(name: .long, help: "Replace the AK at the handle with a new one.")
    var newAK = false

    func run() async throws {
        try await options.withTPM { tpm in
            let ek = try await tpm.endorsementKey(self.ek)
            if newAK { try await tpm.removeAttestationKey(at: options.akHandle) }
            let ak = try await tpm.attestationKey(at: options.akHandle, kind: akKind, parent: self.ek)

            // The verifier's half, then the TPM's: the secret comes back only if this AK lives
            // in the TPM that holds this EK.
            var generator = SystemRandomNumberGenerator()
            let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let challenge = try CredentialChallenge(ek: ek.publicArea, objectName: ak.name, credential: secret)
            let recovered = try await tpm.activateCredential(credentialBlob: challenge.credentialBlob,
                                                             encryptedSecret: challenge.encryptedSecret,
                                                             akHandle: ak.handle, ek: self.ek)
            guard constantTimeEqual(recovered, secret) else {
                throw ValidationError("credential activation returned another secret: the AK is not bound to this EK")
            }

            var certificateLine = "EK certificate: none in NV \(handleText(self.ek.certificateIndex))"
            if let certificate = ek.certificate {
                var anchorDirectories = ekAnchors.map { [$0] } ?? []
                if let state = options.simulatorState { anchorDirectories.append(state + "/ca") }
                if anchorDirectories.isEmpty {
                    certificateLine = "EK certificate: present, not checked (no --ek-anchors)"
                } else {
                    var roots: [Certificate] = [], intermediates: [Certificate] = []
                    for directory in anchorDirectories {
                        let loaded = try EKCertificateValidator(directory: directory)
                        roots += loaded.roots
                        intermediates += loaded.intermediates
                    }
                    let validated = try await EKCertificateValidator(roots: roots, intermediates: intermediates)
                        .validate(certificate, ek: ek.publicArea)
                    certificateLine = "EK certificate: valid, chains to \(validated.chain.last.map { "\($0.subject)" } ?? "?")"
                        + ", TPM \(validated.tpmManufacturer ?? "?") \(validated.tpmModel ?? "?") \(validated.tpmVersion ?? "?")"
                }
                try writeFile(certificate, out, "ek.crt")
            }
            try writeFile(TPM2BPublic(ak.publicArea).wireBytes, out, "ak.pub")
            try writeFile(Array(try ak.publicArea.pemRepresentation().utf8), out, "ak.pem")
            try writeFile(ak.name, out, "ak.name")
            try writeFile(Array((handleText(ak.handle) + "\n").utf8), out, "ak.handle")
            try writeFile(TPM2BPublic(ek.publicArea).wireBytes, out, "ek.pub")

            print("EK:   \(self.ek), " + (ek.persistentHandle.map { "persistent at \(handleText($0))" } ?? "created from the template"))
            print("AK:   \(handleText(ak.handle)) \(ak.created ? "created" : "already there"), name \(Hex.encode(ak.name))")
            print("credential activation: the TPM recovered the secret (the AK is in the TPM that holds this EK)")
            print(certificateLine)
            print("wrote \(out)/{ak.pub,ak.pem,ak.name,ak.handle,ek.pub\(ek.certificate == nil ? "" : ",ek.crt")}")
        }
    }
}

// MARK: - quote

struct TPMQuoteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quote",
        abstract: "Quote PCRs with the AK, writing quote.msg, quote.sig and quote.pcrs as tpm2_quote does.",
        discussion: """
            quote.msg is the TPMS_ATTEST (tpm2_quote -m), quote.sig the TPMT_SIGNATURE \
            (tpm2_quote -s), quote.pcrs the PCR values the quote covers in tpm2-tools' serialized \
            format (tpm2_quote -o). Check them with
              tpm2_checkquote -u ak.pem -m quote.msg -s quote.sig -f quote.pcrs -g sha256 -q NONCE
            or vmv-verifier quote check.
            """)

    @OptionGroup var options: TPMOptions

    @Option(name: .long, help: ArgumentHelp("PCRs to quote, tpm2-tools syntax.", valueName: "spec"))
    var pcrList: String

    @Option(name: .long, help: ArgumentHelp("Qualifying data (the verifier's nonce), hex, 1 to 64 bytes.", valueName: "hex"))
    var nonce: String

    @Option(name: .long, help: ArgumentHelp("Directory for the quote files.", valueName: "dir"))
    var out: String

    func validate() throws {
        _ = try parseSelection(pcrList, "--pcr-list")
        let bytes: [UInt8]
        do { bytes = try Hex.decode(nonce, field: "--nonce") } catch { throw ValidationError(error.reason) }
        guard (1...TPMAlgorithm.maxDigestSize).contains(bytes.count) else {
            throw ValidationError("--nonce: \(bytes.count) bytes; a nonce has 1 to \(TPMAlgorithm.maxDigestSize) bytes")
        }
    }

    func run() async throws {
        let selection = try parseSelection(pcrList, "--pcr-list")
        let qualifyingData = try Hex.decode(nonce, field: "--nonce")
        try await options.withTPM { tpm in
            let quote = try await tpm.quote(selection, qualifyingData: qualifyingData, akHandle: options.akHandle)
            try writeFile(quote.attestBytes, out, "quote.msg")
            try writeFile(quote.signature.wireBytes, out, "quote.sig")
            try writeFile(try PCRFile(selection: quote.selection, values: quote.pcrValues).bytes(format: .serialized), out, "quote.pcrs")
            let clock = quote.attest.clockInfo
            print("quote of \(quote.selection) by the AK at \(handleText(options.akHandle)), \(quote.signature.scheme.name)-\(quote.signature.hash.name)")
            print("clock \(clock.clock), resetCount \(clock.resetCount), restartCount \(clock.restartCount), pcrDigest \(Hex.encode(quote.attest.quote?.pcrDigest ?? []))")
            print("wrote \(out)/{quote.msg,quote.sig,quote.pcrs}")
        }
    }
}

// MARK: - simulator

struct TPMSimulatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulator",
        abstract: "Run the embedded swtpm in the background, for tpm2-tools or several vmv commands to share.",
        subcommands: [Start.self, Stop.self, Status.self])

    struct State: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("State directory (default: \(TPMSimulator.defaultStateDirectory())).", valueName: "dir"))
        var state: String?

        var directory: String {
            let path = state ?? TPMSimulator.defaultStateDirectory()
            return path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        }
    }

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Provision (first time: swtpm_setup, EK and EK certificate) and start swtpm on free loopback ports.")

        @OptionGroup var state: State

        @Option(name: .long, help: ArgumentHelp("PCR banks to allocate when provisioning.", valueName: "banks"))
        var banks: String = TPMSimulator.defaultBanks.map(\.name).joined(separator: ",")

        func run() throws {
            var algorithms: [TPMAlgorithm] = []
            for name in banks.split(separator: ",") {
                guard let hash = TPMAlgorithm(name: String(name)), hash.isHash else {
                    throw ValidationError("--banks: \(name) is not a hash algorithm")
                }
                algorithms.append(hash)
            }
            let simulator = try TPMSimulator.start(stateDirectory: state.directory, banks: algorithms, detached: true, logger: vmvLogger)
            print("swtpm running, pid \(simulator.pid)")
            print("TCTI \(simulator.tcti)")
            print("export TPM2TOOLS_TCTI=\(simulator.tcti)")
            print("EK CA root \(simulator.certificateAuthority.root)")
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the swtpm of a state directory.")
        @OptionGroup var state: State

        func run() throws {
            guard let running = TPMSimulator.running(stateDirectory: state.directory) else {
                print("not running (\(TPMSimulator.status(stateDirectory: state.directory)))")
                return
            }
            running.stop()
            print("stopped swtpm pid \(running.pid)")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Whether a swtpm runs for a state directory, and its TCTI.")
        @OptionGroup var state: State

        func run() throws {
            print("\(state.directory): \(TPMSimulator.status(stateDirectory: state.directory))")
        }
    }
}
