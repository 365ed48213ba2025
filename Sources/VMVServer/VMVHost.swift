import Crypto
import FoundationEssentials
import Introspection
import Logging
import Synchronization
import TPM
import TPMWire
import Verifier
import VMV
import X509

#if canImport(Glibc)
import Glibc
#endif

/// The host the API speaks for: the TPM actor (quotes, AK, EK, credential activation), the
/// measurement log the engine writes, the AK certificates verifiers issued, and the guests Xen
/// reports.
public final class VMVHost: AttestationBackend {
    public let tpm: TPM
    public let engine: MeasurementEngine
    let servedLog: ServedLog
    let measurer: GuestMeasurer?
    let metrics: ServerMetrics?
    public let pcr: Int
    public let akHandle: UInt32
    public let host: ServiceAPI.Host
    let stateDirectory: String
    let logger: Logger
    let xen: XenHost?
    /// Why there is no Xen, for `/v1/domains`.
    let xenNote: String?
    private let keyParts: Mutex<ServiceAPI.AKResponse>
    private let akName: [UInt8]

    /// Opens the AK (creating it under the EK on first use) and reads the EK certificate.
    public init(tpm: TPM, engine: MeasurementEngine, configuration: ServerConfiguration, xen: XenHost?, xenNote: String?,
                measurer: GuestMeasurer? = nil, metrics: ServerMetrics? = nil, logger: Logger) async throws {
        self.tpm = tpm
        self.engine = engine
        self.measurer = measurer
        self.metrics = metrics
        servedLog = ServedLog(stateDirectory: configuration.stateDirectory, engine: engine, pcr: engine.configuration.pcr)
        self.pcr = engine.configuration.pcr
        self.akHandle = configuration.akHandle
        self.stateDirectory = configuration.stateDirectory
        self.logger = logger
        self.xen = xen
        self.xenNote = xenNote
        self.host = ServiceAPI.Host(hostname: Self.hostname(), vmvVersion: VMVVersion.current, pcr: engine.configuration.pcr)
        let ak = try await tpm.attestationKey(at: configuration.akHandle)
        if ak.created { logger.info("created the AK", metadata: ["handle": "\(Self.handleText(ak.handle))"]) }
        let ek = try await tpm.endorsementKey(ak.parent)
        akName = ak.name
        let akPart = ServiceAPI.AK(publicArea: Base64.encode(TPM2BPublic(ak.publicArea).wireBytes), name: Hex.encode(ak.name),
                                   handle: Self.handleText(ak.handle), certificates: [])
        let ekPart = ServiceAPI.EK(certificate: try ek.certificate.map { try Self.pem(der: $0) },
                                   publicArea: Base64.encode(TPM2BPublic(ek.publicArea).wireBytes))
        keyParts = Mutex(ServiceAPI.AKResponse(ak: akPart, ek: ekPart))
        try loadAKCertificates()
    }

    static func handleText(_ handle: UInt32) -> String {
        let digits = String(handle, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func pem(der: [UInt8]) throws -> String {
        try Certificate(derEncoded: der).serializeAsPEM().pemString
    }

    // MARK: AttestationBackend

    public func defaultSelection() async throws -> PCRSelection {
        let banks = try await tpm.allocatedBanks()
        return PCRSelection(banks: banks.map { PCRSelection.Bank(hash: $0, pcrs: [pcr]) })
    }

    public func quote(_ selection: PCRSelection, qualifyingData: [UInt8]) async throws -> SignedQuote {
        let quote: TPM.Quote
        do {
            quote = try await tpm.quote(selection, qualifyingData: qualifyingData, akHandle: akHandle)
        } catch {
            throw Self.apiError(error, badRequest: "bad_selection", prefix: "pcrSelection")
        }
        let pcrs = try PCRFile(selection: quote.selection, values: quote.pcrValues).bytes(format: .serialized)
        let position = try await servedLog.position(quoted: quote.pcrValues, selection: quote.selection)
        if let position { metrics?.setLog(epoch: position.epoch, records: position.nextSeq) }
        return SignedQuote(message: quote.attestBytes, signature: quote.signature.wireBytes, pcrs: pcrs,
                           selection: quote.selection, logPosition: position)
    }

    /// A TPM refusal of what the client sent is the client's error (400); anything else is the host's.
    static func apiError(_ error: TPMError, badRequest code: String, prefix: String) -> any Error {
        guard error.code == .invalidArgument else { return error }
        return APIError.badRequest("\(prefix): \(error.reason)", code: code)
    }

    public func keys() async throws -> ServiceAPI.AKResponse {
        keyParts.withLock { $0 }
    }

    public func activateCredential(credentialBlob: [UInt8], secret: [UInt8]) async throws -> [UInt8] {
        let credential: [UInt8]
        do {
            credential = try await tpm.activateCredential(credentialBlob: credentialBlob, encryptedSecret: secret, akHandle: akHandle)
        } catch {
            guard error.code != .transport else { throw error }
            throw APIError(400, "activation_failed", "the TPM refused the credential: \(error.reason)")
        }
        return ActivationProof.compute(credential: credential, akName: akName)
    }

    public func storeAKCertificate(pem: String) async throws {
        let certificate: Certificate
        do { certificate = try Certificate(pemEncoded: pem) } catch {
            throw APIError.badRequest("certificate: not a PEM X.509 certificate: \(error)")
        }
        // It must certify this AK: the same public key.
        let ak = try await tpm.attestationKey(at: akHandle, createIfMissing: false)
        let key: VerificationKey
        do { key = try VerificationKey(tpmPublic: ak.publicArea) } catch {
            throw APIError(500, "internal", "the AK's public key is not usable: \(error)")
        }
        guard key.certifies(certificate) else {
            throw APIError.badRequest("certificate: its public key is not this host's AK", code: "wrong_key")
        }
        let directory = stateDirectory + "/ak-certificates"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let der = try certificate.serializeAsPEM().derBytes
        let name = Hex.encode(Array(SHA256.hash(data: der))).prefix(16)
        try PKIFiles.writeFile("\(directory)/\(name).pem", Array((try certificate.serializeAsPEM().pemString + "\n").utf8), mode: 0o644)
        try loadAKCertificates()
    }

    /// The stored AK certificates, newest (latest notValidBefore) first.
    private func loadAKCertificates() throws {
        let directory = stateDirectory + "/ak-certificates"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var certificates: [(Date, String)] = []
        for file in files where file.hasSuffix(".pem") {
            guard let text = try? String(contentsOfFile: directory + "/" + file, encoding: .utf8),
                  let certificate = try? Certificate(pemEncoded: text) else {
                logger.warning("ignoring an unreadable AK certificate", metadata: ["file": "\(directory)/\(file)"])
                continue
            }
            certificates.append((certificate.notValidBefore, try certificate.serializeAsPEM().pemString))
        }
        let pems = certificates.sorted { $0.0 > $1.0 }.map(\.1)
        keyParts.withLock { $0.ak.certificates = pems }
    }

    public func checkLogCursor(_ cursor: ServiceAPI.LogCursor) async throws {
        try await servedLog.check(cursor)
    }

    public func log(epoch: UInt32?, since: UInt64, upTo: LogPosition?) async throws -> ServiceAPI.Log {
        try await servedLog.log(epoch: epoch, since: since, upTo: upTo)
    }

    public func domains() async -> ServiceAPI.DomainsResponse {
        guard let xen else { return ServiceAPI.DomainsResponse(domains: [], note: xenNote) }
        let measured = await servedLog.lastMeasurements()
        let statuses = Dictionary(await measurer?.status().map { ($0.domainID, $0) } ?? [], uniquingKeysWith: { a, _ in a })
        do {
            let domains = try xen.domains().filter { $0.id != 0 }.map { d in
                let uuid = d.uuid.uuidString.lowercased()
                let status = statuses[d.id]
                return ServiceAPI.Domain(domid: d.id, name: d.name ?? "", uuid: uuid, type: d.type.rawValue,
                                         state: Self.stateName(d.state), measurements: measured[uuid] ?? [:],
                                         incarnation: status?.incarnation, kernelRelease: status?.kernelRelease,
                                         lastMeasured: status?.lastMeasured.map(LogRecord.utc), lastChanged: status?.lastChanged.map(LogRecord.utc),
                                         roots: status.map(\.roots), lastError: status?.lastError.map { "\($0)" })
            }
            return ServiceAPI.DomainsResponse(domains: domains)
        } catch {
            return ServiceAPI.DomainsResponse(domains: [], note: "\(error)")
        }
    }

    static func stateName(_ state: XenDomainInfo.State) -> String {
        if state.contains(.dying) { return "dying" }
        if state.contains(.shutdown) { return "shutdown" }
        if state.contains(.paused) { return "paused" }
        if state.contains(.running) { return "running" }
        if state.contains(.blocked) { return "blocked" }
        return "unknown"
    }

    public func unavailability() async -> String? {
        do {
            _ = try await tpm.readPCRs(try await defaultSelection())
        } catch {
            return "the TPM does not answer: \(error)"
        }
        do {
            _ = try await servedLog.read(epoch: await engine.status().epoch)
        } catch {
            return "the measurement log cannot be read: \(error)"
        }
        return nil
    }
}

/// The version `vmv` reports (host part of every quote answer).
public enum VMVVersion {
    public static let current = "0.1.0"
}
