import ArgumentParser
import FoundationEssentials
import TPMWire
import Verifier
import VerifierClient
import SwiftASN1
import X509

/// The TLS options every command that talks to a VMV host takes.
struct HostTLSOptions: ParsableArguments {
    @Option(help: ArgumentHelp("PEM CA certificate the VMV's server certificate must chain to.", valueName: "file"))
    var ca: String

    @Option(help: ArgumentHelp("PEM client certificate of this verifier.", valueName: "file"))
    var cert: String

    @Option(help: ArgumentHelp("PEM private key of the client certificate.", valueName: "file"))
    var key: String

    @Flag(help: "Do not check that the server certificate names the host in the URL (the chain is still verified, and the quote is still bound to the TLS key). For hosts reached through a port forward.")
    var insecureSkipHostnameVerification = false

    var files: ClientTLSFiles {
        ClientTLSFiles(ca: ca, certificate: cert, key: key, skipHostnameVerification: insecureSkipHostnameVerification)
    }
}

/// `vmv-verifier attest https://HOST:PORT …`
struct AttestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attest",
        abstract: "Attest a VMV host: a fresh quote over mutual TLS, every check, and a verdict for the platform and each VM.",
        discussion: """
            Sends a fresh 32-byte nonce, checks the quote (signature by the AK pinned at enrollment \
            or certified by --ak-ca, the binding of the nonce and of the TLS key of this very \
            handshake, selection, PCR digest, AK attributes), the TPM clock against the state \
            stored for the host (--state), every log record, the log's replay to the quoted PCR, \
            and appraises every record against the reference values in --refs. \
            docs/verification.md gives every rule.

            Exit status: 0 the platform and every requested VM (--domain, default every running \
            one) are trusted; 1 something is untrusted or unknown; 2 the host could not be asked \
            (TLS, HTTP) or an input file is unusable.
            """
    )

    @Argument(help: "The VMV host: https://HOST:PORT.")
    var url: String

    @OptionGroup var tls: HostTLSOptions

    @Option(help: ArgumentHelp("Directory of reference-value documents (measurements/).", valueName: "dir"))
    var refs: String

    @Option(help: ArgumentHelp("The AK pin written by `vmv-verifier enroll`.", valueName: "file"))
    var ak: String?

    @Option(help: ArgumentHelp("PEM AK CA certificate(s): trust an AK whose certificate chains to one.", valueName: "file"))
    var akCa: String?

    @Option(help: ArgumentHelp("Directory for per-host state (TPM clock, replay position); without it nothing is remembered.", valueName: "dir"))
    var state: String?

    @Option(help: ArgumentHelp("The PCRs the quote must cover exactly (tpm2-tools syntax); default: the log's PCR in every bank of the log.", valueName: "spec"))
    var pcrList: String?

    @Option(name: .customLong("domain"), help: ArgumentHelp("A VM (name or UUID) whose verdict decides the exit status; repeatable. Default: every running VM.", valueName: "name"))
    var domains: [String] = []

    @Option(help: ArgumentHelp("Write the evidence received (and this verifier's nonce) to this file.", valueName: "file"))
    var saveEvidence: String?

    @Flag(help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        guard (ak == nil) != (akCa == nil) else {
            throw ValidationError("give exactly one of --ak (a pin from `vmv-verifier enroll`) and --ak-ca")
        }
        if let pcrList {
            do { _ = try PCRSelection(parsing: pcrList) } catch { throw ValidationError("--pcr-list: \(error.reason)") }
        }
    }

    func run() async throws {
        let run: AttestationRun
        do {
            run = AttestationRun(
                url: url, tls: tls.files, akTrust: try akTrust(ak: ak, akCa: akCa), references: try ReferenceSet(directory: refs),
                store: state.map { JSONFileHostStateStore(directory: $0) },
                selection: try pcrList.map { try PCRSelection(parsing: $0) }, requestedDomains: domains)
        } catch let e as ReferenceError {
            throw malformedInput(e.reason)
        } catch let e as EvidenceError {
            throw malformedInput(e.reason)
        }
        let outcome: AttestationRun.Outcome
        do { outcome = try await run.run() } catch let e as HostError {
            throw malformedInput(e.description)
        } catch let e as EvidenceError {
            throw malformedInput(e.reason)
        }
        if let saveEvidence {
            do { try AtomicFile.write(saveEvidence, outcome.evidence.json(), mode: 0o644) } catch { throw malformedInput(error.reason) }
        }
        print(json ? ReportFormat.json(outcome.report) : ReportFormat.table(outcome.report), terminator: "")
        if !outcome.report.trusted { throw ExitCode(1) }
    }
}

func akTrust(ak: String?, akCa: String?) throws -> AKTrust {
    if let ak { return .pinned(try AKPin.load(ak)) }
    guard let akCa else { return .unchecked }
    guard let data = FileManager.default.contents(atPath: akCa) else { throw EvidenceError("--ak-ca \(akCa): cannot read") }
    do {
        let roots = try PEMDocument.parseMultiple(pemString: String(decoding: data, as: UTF8.self))
            .filter { $0.discriminator == "CERTIFICATE" }.map { try Certificate(derEncoded: $0.derBytes) }
        guard !roots.isEmpty else { throw EvidenceError("--ak-ca \(akCa): no certificate in it") }
        return .certificateAuthority(roots)
    } catch let e as EvidenceError { throw e } catch {
        throw EvidenceError("--ak-ca \(akCa): not PEM certificates (\(error))")
    }
}

/// The report for people (a table) and for programs (JSON).
enum ReportFormat {
    static func json(_ report: AttestationReport) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return ((try? encoder.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? "{}") + "\n"
    }

    static func table(_ r: AttestationReport) -> String {
        let e = r.evidence
        var out = "host \(r.host)"
        if let ak = e.akName { out += "  AK \(ak.prefix(20))…" }
        if let epoch = e.epoch { out += "  epoch \(epoch) records \(e.since ?? 0)..<\(e.nextSeq ?? 0) (\(e.replay) replay)" }
        if let c = e.clock { out += "  clock \(c) resetCount \(e.resetCount ?? 0) restartCount \(e.restartCount ?? 0)" }
        if let b = e.batch, b > 1 { out += "  batch of \(b)" }
        out += "\n"
        var rows: [(String, String, [String])] = [(r.platform.level.rawValue, "platform", r.platform.reasons)]
        for d in r.domains {
            var name = d.name ?? d.uuid
            if let id = d.domid { name += " (domid \(id))" }
            if !d.running { name += " [stopped]" }
            rows.append((d.verdict.level.rawValue, name, d.verdict.reasons))
        }
        let width = max(7, rows.map(\.1.count).max() ?? 0)
        out += "VERDICT    " + "SUBJECT".padded(width) + "  REASONS\n"
        for (level, subject, reasons) in rows {
            let first = reasons.first ?? (level == "trusted" ? "every measurement matches its reference" : "")
            out += level.padded(9) + "  " + subject.padded(width) + "  " + first + "\n"
            for more in reasons.dropFirst() { out += String(repeating: " ", count: 11 + width + 2) + more + "\n" }
        }
        out += r.trusted ? "result: trusted\n" : "result: NOT trusted\n"
        return out
    }
}

extension String {
    func padded(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
