import ArgumentParser
import FoundationEssentials
import TPMWire
import Verifier

/// `vmv-verifier quote …`: TPM quotes as tpm2_quote writes them.
struct QuoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quote",
        abstract: "Check TPM quotes.",
        subcommands: [Check.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a TPM quote against a nonce, a required PCR selection, PCR values and optionally an event log.",
            discussion: """
                The files are what tpm2-tools writes: --message is `tpm2_quote -m` (TPMS_ATTEST), \
                --signature is `tpm2_quote -s` (TPMT_SIGNATURE), --pcrs is `tpm2_quote -o` in the \
                format of --pcrs-format, --ak is the AK as PEM or DER SubjectPublicKeyInfo or as a \
                TPM2B_PUBLIC (recognised from the content). --pcr-list is the selection the quote \
                must cover exactly (tpm2-tools syntax: sha256:0,1,15 or sha1:0+sha256:0,15).

                Exit status: 0 the quote is valid; 1 it was checked and rejected (one line says \
                which rules failed and why); 2 usage error, or a file that cannot be read or parsed.
                """
        )

        @Option(help: ArgumentHelp("The attestation key: PEM/DER SubjectPublicKeyInfo or TPM2B_PUBLIC.", valueName: "file"))
        var ak: String

        @Option(help: ArgumentHelp("The quoted TPMS_ATTEST (tpm2_quote -m).", valueName: "file"))
        var message: String

        @Option(help: ArgumentHelp("The TPMT_SIGNATURE (tpm2_quote -s).", valueName: "file"))
        var signature: String

        @Option(help: ArgumentHelp("The PCR values (tpm2_quote -o).", valueName: "file"))
        var pcrs: String

        @Option(help: ArgumentHelp("The PCRs the quote must cover exactly, tpm2-tools syntax.", valueName: "spec"))
        var pcrList: String

        @Option(help: ArgumentHelp("The nonce the quote must carry as extraData, in hex.", valueName: "hex"))
        var nonce: String

        @Option(help: "The format of --pcrs: serialized (tpm2_quote's default), marshaled, or values.")
        var pcrsFormat: PCRFileFormat = .serialized

        @Option(help: ArgumentHelp("A TCG crypto-agile event log that must replay to the quoted PCRs.", valueName: "file"))
        var eventlog: String?

        @Flag(help: "Print the verdict and the quote's fields as JSON.")
        var json = false

        func validate() throws {
            let bytes: [UInt8]
            do { bytes = try Hex.decode(nonce, field: "--nonce") } catch { throw ValidationError(error.reason) }
            guard (1...TPM2B.data.capacity).contains(bytes.count) else {
                throw ValidationError("--nonce: \(bytes.count) bytes; a nonce has 1 to \(TPM2B.data.capacity) bytes")
            }
            do { _ = try PCRSelection(parsing: pcrList) } catch { throw ValidationError("--pcr-list: \(error.reason)") }
        }

        func run() throws {
            // validate() has checked both
            let nonceBytes = (try? Hex.decode(nonce)) ?? []
            let required = (try? PCRSelection(parsing: pcrList)) ?? PCRSelection(banks: [])
            let evidence: QuoteEvidence
            do {
                evidence = try load(required: required)
            } catch let error as InputFile.Error {
                throw malformedInput(error.description)
            } catch let error as EvidenceError {
                throw malformedInput(error.reason)
            }
            let verdict = QuoteVerifier.standard(nonce: nonceBytes, selection: required).check(evidence)
            if json {
                print(QuoteReport(verdict: verdict, evidence: evidence).json)
            } else if verdict.isValid {
                let q = evidence.attest
                print("valid: quote of \(q.quote?.pcrSelect.description ?? "") signed by an \(evidence.ak.publicKey.description) AK"
                      + " (clock \(q.clockInfo.clock), resetCount \(q.clockInfo.resetCount), restartCount \(q.clockInfo.restartCount))")
            } else {
                print("rejected: " + verdict.failures.map(\.description).joined(separator: "; "))
            }
            if !verdict.isValid { throw ExitCode(1) }
        }

        private func load(required: PCRSelection) throws -> QuoteEvidence {
            let ak: AttestationKey
            do { ak = try AttestationKey(contents: try InputFile.bytes(self.ak)) } catch let error as EvidenceError {
                throw EvidenceError("\(self.ak): \(error.reason)")
            }
            let pcrFile: PCRFile
            do {
                pcrFile = try PCRFile(bytes: try InputFile.bytes(pcrs), format: pcrsFormat, selection: required)
            } catch let error as WireError {
                throw EvidenceError("\(pcrs): not a \(pcrsFormat.rawValue) PCR file: \(error.reason)")
            }
            var replay: TCGReplay?
            if let eventlog {
                do { replay = try TCGEventLog.replay(bytes: try InputFile.bytes(eventlog)) } catch let error as WireError {
                    throw EvidenceError("\(eventlog): not a valid event log: \(error.reason)")
                }
            }
            let messageBytes = try InputFile.bytes(message)
            let attest: TPMSAttest, sig: TPMTSignature
            do { attest = try TPMSAttest(wireBytes: messageBytes) } catch {
                throw EvidenceError("\(message): not a TPMS_ATTEST: \(error.reason)")
            }
            do { sig = try TPMTSignature(wireBytes: try InputFile.bytes(signature)) } catch let error as WireError {
                throw EvidenceError("\(signature): not a TPMT_SIGNATURE: \(error.reason)")
            }
            return QuoteEvidence(attest: attest, message: messageBytes, signature: sig, ak: ak, pcrs: pcrFile, eventLog: replay)
        }
    }
}

extension PCRFileFormat: ExpressibleByArgument {}

/// The `--json` output: the verdict, every failed rule, and what the quote says.
struct QuoteReport: Encodable {
    struct Reason: Encodable {
        let rule: String
        let reason: String
    }

    struct Quote: Encodable {
        let type: String
        let magic: String
        let qualifiedSigner: String
        let extraData: String
        let clock: UInt64
        let resetCount: UInt32
        let restartCount: UInt32
        let safe: Bool
        let firmwareVersion: String
        let selection: String?
        let pcrDigest: String?
    }

    struct Signature: Encodable {
        let scheme: String
        let hash: String
    }

    struct AK: Encodable {
        let key: String
        let name: String?
        let attributes: String?
    }

    let valid: Bool
    let reasons: [Reason]
    let quote: Quote
    let signature: Signature
    let ak: AK
    /// The supplied PCR values: bank → PCR index → hex.
    let pcrs: [String: [String: String]]

    init(verdict: QuoteVerdict, evidence: QuoteEvidence) {
        valid = verdict.isValid
        reasons = verdict.failures.map { Reason(rule: $0.rule.rawValue, reason: $0.reason) }
        let a = evidence.attest
        quote = Quote(type: a.type.description, magic: Hex.encode(withUnsafeBytes(of: a.magic.bigEndian) { Array($0) }),
                      qualifiedSigner: Hex.encode(a.qualifiedSigner), extraData: Hex.encode(a.extraData),
                      clock: a.clockInfo.clock, resetCount: a.clockInfo.resetCount, restartCount: a.clockInfo.restartCount,
                      safe: a.clockInfo.safe, firmwareVersion: Hex.encode(withUnsafeBytes(of: a.firmwareVersion.bigEndian) { Array($0) }),
                      selection: a.quote?.pcrSelect.description, pcrDigest: a.quote.map { Hex.encode($0.pcrDigest) })
        signature = Signature(scheme: evidence.signature.scheme.name, hash: evidence.signature.hash.name)
        let tpm = evidence.ak.tpmPublic
        ak = AK(key: evidence.ak.publicKey.description, name: tpm?.name.map { Hex.encode($0) },
                attributes: tpm?.objectAttributes.description)
        var values: [String: [String: String]] = [:]
        for (hash, pcr) in evidence.pcrs.selection.pairs {
            values[hash.name, default: [:]][String(pcr)] = evidence.pcrs.values[hash, pcr].map { Hex.encode($0) }
        }
        pcrs = values
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding plain strings, numbers and dictionaries cannot fail.
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
