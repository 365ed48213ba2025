import Crypto
import Foundation
import TestSupport
import TPM
import TPMWire
import Verifier
import VMV

/// A VMV host made of the real parts, without its HTTP layer: a private swtpm driven by the TPM
/// actor, an AK under its EK, and the measurement engine with its log store, answering quote
/// requests in the API's shape (`ServiceAPI.QuoteResponse`) as docs/api.md says a VMV does:
/// the log since the verifier's position, a TPM quote whose qualifying data is the root of the
/// batch of bound nonces, the AK and EK parts.
final class RealStackHost: @unchecked Sendable {
    /// Replaced by `resetTPM()` (a power cycle of the same swtpm).
    private(set) var simulator: TPMSimulator
    let tpm: TPM
    let engine: MeasurementEngine
    let state: String
    let ak: TPM.AttestationKey
    let ek: TPM.EndorsementKey
    let pcr = 15
    /// The SHA-256 of this host's (pretend) TLS server key: what a verifier that talked to it
    /// directly would see.
    let tlsKeyHash: [UInt8]

    static func start(fresh: Bool = false) async throws -> RealStackHost {
        let simulator = try TPMSimulator.ephemeral(fresh: fresh)
        let tpm = try await TPM.open(simulator: simulator)
        let ak = try await tpm.attestationKey()
        let ek = try await tpm.endorsementKey(ak.parent)
        let state = try TemporaryDirectory.make(prefix: "vmv-attest-state").path
        let engine = try await MeasurementEngine.open(stateDirectory: state, tpm: tpm)
        return RealStackHost(simulator: simulator, tpm: tpm, engine: engine, state: state, ak: ak, ek: ek,
                             tlsKeyHash: Array(SHA256.hash(data: Array(UUID().uuidString.utf8))))
    }

    private init(simulator: TPMSimulator, tpm: TPM, engine: MeasurementEngine, state: String, ak: TPM.AttestationKey,
                 ek: TPM.EndorsementKey, tlsKeyHash: [UInt8]) {
        self.simulator = simulator
        self.tpm = tpm
        self.engine = engine
        self.state = state
        self.ak = ak
        self.ek = ek
        self.tlsKeyHash = tlsKeyHash
    }

    func stop() async {
        await engine.close()
        await tpm.close()
        simulator.stop()
        try? FileManager.default.removeItem(atPath: state)
    }

    /// A TPM reset under the running VMV: swtpm killed, a measurement that fails, swtpm
    /// started again on the same state (PCRs at their reset value, resetCount + 1). The
    /// engine's next measurement ends the epoch and starts a new one.
    func resetTPM() async throws {
        simulator.kill()
        _ = try? await engine.measure(.content(.platform, subject: "lost", hashing: [1]))
        simulator = try simulator.restart()
    }

    // MARK: Measurements as a VMV makes them

    static func uuid(_ name: String) -> [UInt8] { Array(SHA256.hash(data: Array(name.utf8)).prefix(16)) }

    /// The VMV's boot measurements: its binary, its configuration, the platform facts.
    func measurePlatform() async throws {
        for m in [Measurement.content(.vmvBinary, subject: "/usr/sbin/vmv", hashing: Array("vmv 0.1 binary".utf8)),
                  Measurement.content(.vmvConfig, subject: "defaults", hashing: Array("pcr = 15\n".utf8)),
                  Measurement.content(.platform, subject: "hypervisor", hashing: Array("xen.version=4.17\n".utf8),
                                      attributes: [("xen.version", "4.17")])] {
            _ = try await engine.measure(m)
        }
    }

    /// A guest's start, its kernel image and its kernel text and read-only data, with roots
    /// derived from `kernel` (another kernel, other roots).
    func measureGuest(_ name: String, kernel: String, text: String? = nil) async throws {
        let domain = Measurement.Domain(uuid: Self.uuid(name), id: 1, name: name)
        _ = try await engine.measure(Measurement(kind: .domainStart, domain: domain))
        _ = try await engine.measure(.content(.kernelImage, subject: "/boot/vmlinuz-\(kernel)", hashing: Array("image \(kernel)".utf8), domain: domain))
        try await measureRegion(name, "kernel.text", root: text ?? "text \(kernel)", release: kernel)
        try await measureRegion(name, "kernel.rodata", root: "rodata \(kernel)", release: kernel)
    }

    func measureRegion(_ name: String, _ subject: String, root: String, release: String) async throws {
        let domain = Measurement.Domain(uuid: Self.uuid(name), id: 1, name: name)
        _ = try await engine.measure(.memoryRegion(domain: domain, subject: subject, virtualStart: 0xffff_ffff_8100_0000, pageSize: 4096,
                                                   pageCount: 2048, merkleRoot: Array(SHA256.hash(data: Array(root.utf8))),
                                                   attributes: [("kernel.release", release)]))
    }

    // MARK: Answers

    /// The answer to `POST /v1/quote` for `nonces` quoted together (the verifier's is
    /// `nonces[index]`), bound to `tlsKeyHash`. A cursor in an epoch that is no longer the
    /// open one gets the whole open epoch (docs/api.md); `servingEpoch` overrides that, as a
    /// host serving an old log would.
    func answer(nonces: [[UInt8]], index: Int = 0, cursor: ServiceAPI.LogCursor? = nil, tlsKeyHash: [UInt8]? = nil,
                selection: PCRSelection? = nil, servingEpoch: UInt32? = nil) async throws -> ServiceAPI.QuoteResponse {
        let key = tlsKeyHash ?? self.tlsKeyHash
        let tree = BindingTree(leaves: nonces.map { QuoteBinding.leaf(nonce: $0, tlsKeyHash: key) })
        let status = await engine.status()
        let banks = status.banks
        let wanted = selection ?? PCRSelection(banks: banks.map { .init(hash: $0, pcrs: [pcr]) })
        let quote = try await tpm.quote(wanted, qualifyingData: tree.root)
        let reader = LogReader(stateDirectory: state)
        let epoch = servingEpoch ?? status.epoch
        let since = servingEpoch == nil && cursor?.epoch == status.epoch ? cursor?.since ?? 0 : 0
        // The engine publishes its committed count for readers asynchronously: wait for it to
        // reach what the PCR holds, as a server must before it pairs a log with a quote.
        var log = try reader.read(epoch: epoch, since: since)
        for _ in 0..<200 where epoch == status.epoch && log.count < status.records {
            try await Task.sleep(for: .milliseconds(5))
            log = try reader.read(epoch: epoch, since: since)
        }
        let records = log.records.flatMap { $0.event.serialized() }
        let proof = tree.proof(for: index)
        return ServiceAPI.QuoteResponse(
            quote: .init(message: Base64.encode(quote.attestBytes), signature: Base64.encode(quote.signature.wireBytes),
                         pcrs: Base64.encode(try PCRFile(selection: quote.selection, values: quote.pcrValues).bytes(format: .serialized)),
                         pcrSelection: quote.selection.description),
            binding: .init(tlsKeyHash: Hex.encode(key), leafIndex: proof.leafIndex, leafCount: proof.leafCount,
                           proof: proof.path.map { Hex.encode($0) }),
            log: .init(epoch: epoch, since: since, nextSeq: log.count, header: Base64.encode(log.header.serialized()),
                       records: Base64.encode(records), epochInfo: .init(state: "open")),
            ak: .init(publicArea: Base64.encode(TPM2BPublic(ak.publicArea).wireBytes), name: Hex.encode(ak.name),
                      handle: "0x81010003", certificates: []),
            ek: .init(certificate: nil, publicArea: Base64.encode(TPM2BPublic(ek.publicArea).wireBytes)),
            host: .init(hostname: "test-host", vmvVersion: "0.1", pcr: pcr))
    }

    /// This host's AK, pinned as enrollment would.
    var pin: AKPin {
        AKPin(host: "test-host:8443", hostname: "test-host", akPublic: TPM2BPublic(ak.publicArea).wireBytes, akName: ak.name,
              akHandle: "0x81010003", ekCertificate: "", tpmManufacturer: nil, tpmModel: nil, tpmVersion: nil, tlsKeyHash: tlsKeyHash,
              enrolledAt: "2026-01-01T00:00:00Z")
    }
}

/// A verifier's side of the tests: a nonce per attestation, the pinned AK, references, state.
struct TestVerifier {
    var pin: AKPin
    var references = ReferenceSet()
    var state: HostState?
    var requested: [String] = []

    static func nonce() -> [UInt8] { (0..<32).map { _ in UInt8.random(in: 0...255) } }

    func context(nonce: [UInt8], tlsKeyHash: [UInt8]) -> AttestationContext {
        AttestationContext(host: "test-host:8443", nonce: nonce, tlsKeyHash: tlsKeyHash, selection: nil, akTrust: .pinned(pin),
                           state: state, references: references, requestedDomains: requested, now: "2026-11-27T00:00:00Z")
    }

    /// One attestation against `host`: asks from the stored position, checks, keeps the state.
    mutating func attest(_ host: RealStackHost) async throws -> (AttestationReport, ServiceAPI.QuoteResponse) {
        let nonce = Self.nonce()
        let cursor = state.map { ServiceAPI.LogCursor(epoch: $0.epoch, since: $0.nextSeq) }
        let response = try await host.answer(nonces: [nonce], cursor: cursor)
        let (report, newState) = await AttestationVerifier().verify(response, context: context(nonce: nonce, tlsKeyHash: host.tlsKeyHash))
        if let newState { state = newState }
        return (report, response)
    }
}

extension AttestationReport {
    func verdict(_ name: String) -> DomainVerdict? { domains.first { $0.name == name } }
    var rules: Set<String> { Set(failedChecks.map(\.rule)) }
}

/// A self-signed P-256 certificate (DER), standing for a TLS server certificate.
enum TestCertificate {
    static func make() throws -> [UInt8] {
        let dir = try TemporaryDirectory.make(prefix: "vmv-cert")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("c.der").path
        let r = try Tools.run(try Tools.path("openssl"), ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                                         "-keyout", dir.appendingPathComponent("k.pem").path, "-subj", "/CN=test-host",
                                                         "-days", "1", "-outform", "DER", "-out", out])
        guard r.status == 0 else { throw HarnessError("openssl req: \(r.stderr)") }
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }
}
