import ArgumentParser
import Verifier
import VerifierClient

/// `vmv-verifier enroll https://HOST:PORT …`
struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Enroll a VMV host: validate its EK certificate, activate a credential for its AK, and pin the AK.",
        discussion: """
            GET /v1/ak; the EK certificate must chain to a certificate in --ek-anchors and \
            certify the EK the host presents; the AK must be a restricted signing key that never \
            left the TPM (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin); a \
            credential is made in software for the AK's Name under that EK \
            (TPM2_MakeCredential) and the host must prove its TPM activated it \
            (POST /v1/enroll/activate). Then the AK is written to --out, for `attest --ak`.

            Exit status: 0 enrolled; 1 a check failed (the step and why are printed); 2 the \
            host could not be asked or a file is unusable.
            """
    )

    @Argument(help: "The VMV host: https://HOST:PORT.")
    var url: String

    @OptionGroup var tls: HostTLSOptions

    @Option(help: ArgumentHelp("Directory of EK trust anchors: the TPM vendors' CA certificates (PEM/DER).", valueName: "dir"))
    var ekAnchors: String

    @Option(help: ArgumentHelp("Where to write the AK pin.", valueName: "file"))
    var out: String

    @Option(help: ArgumentHelp("PEM certificate of this verifier's AK CA: also certify the AK and store the certificate on the host.", valueName: "file"))
    var akCaCert: String?

    @Option(help: ArgumentHelp("PEM P-256 private key of the AK CA.", valueName: "file"))
    var akCaKey: String?

    func validate() throws {
        guard (akCaCert == nil) == (akCaKey == nil) else { throw ValidationError("--ak-ca-cert and --ak-ca-key go together") }
    }

    func run() async throws {
        let anchors: EKCertificateValidator
        do { anchors = try EKCertificateValidator(directory: ekAnchors) } catch { throw malformedInput(error.reason) }
        var issuer: AKCertificateIssuer?
        if let akCaCert, let akCaKey {
            do {
                issuer = try AKCertificateIssuer(certificatePEM: String(decoding: try InputFile.bytes(akCaCert), as: UTF8.self),
                                                 keyPEM: String(decoding: try InputFile.bytes(akCaKey), as: UTF8.self))
            } catch let e as InputFile.Error { throw malformedInput(e.description) } catch let e as EvidenceError { throw malformedInput(e.reason) }
        }
        let pin: AKPin
        do {
            pin = try await EnrollmentRun(url: url, tls: tls.files, ekAnchors: anchors, issuer: issuer).run()
        } catch let e as EnrollmentRun.Failure {
            print("not enrolled: \(e.description)")
            throw ExitCode(1)
        } catch let e as HostError {
            throw malformedInput(e.description)
        }
        do { try AtomicFile.write(out, pin.json(), mode: 0o644) } catch { throw malformedInput(error.reason) }
        print("enrolled \(pin.host): AK \(pin.akName) (handle \(pin.akHandle ?? "?")) of a TPM by \(pin.tpmManufacturer ?? "an unnamed manufacturer")"
              + "\(pin.tpmModel.map { " model \($0)" } ?? ""), EK certificate validated, credential activated; pinned in \(out)"
              + (issuer != nil ? "; AK certificate issued and stored on the host" : ""))
    }
}
