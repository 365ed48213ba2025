import Crypto
import FoundationEssentials
import TPMWire
import Verifier

/// One attestation of one host, end to end: a fresh nonce, the quote over mutual TLS, every
/// check and the appraisal (`AttestationVerifier`), and the state stored after the verdict.
public struct AttestationRun: Sendable {
    public var url: String
    public var tls: ClientTLSFiles
    public var akTrust: AKTrust
    public var references: ReferenceSet
    /// Where the per-host state lives; nil: nothing is remembered (every run replays the whole
    /// epoch and no clock is compared).
    public var store: (any HostStateStore)?
    public var selection: PCRSelection?
    public var requestedDomains: [String]

    public init(url: String, tls: ClientTLSFiles, akTrust: AKTrust, references: ReferenceSet, store: (any HostStateStore)?,
                selection: PCRSelection? = nil, requestedDomains: [String] = []) {
        self.url = url
        self.tls = tls
        self.akTrust = akTrust
        self.references = references
        self.store = store
        self.selection = selection
        self.requestedDomains = requestedDomains
    }

    public struct Outcome: Sendable {
        public var report: AttestationReport
        /// What was asked and answered, to save as evidence (`--save-evidence`, `refs learn --from`).
        public var evidence: SavedEvidence
        /// Whether a new state was stored.
        public var stored: Bool
    }

    /// 32 random bytes from the system's CSPRNG.
    public static func freshNonce() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }

    public func run() async throws -> Outcome {
        try await VMVHostClient.with(url: url, tls: tls) { client in
            let host = client.hostKey
            let state = try await store?.load(host: host)
            var cursor = state.map { ServiceAPI.LogCursor(epoch: $0.epoch, since: $0.nextSeq) }
            let wanted = selection?.description ?? state.map { s in
                s.pcrs.keys.sorted().map { "\($0):\(s.pcr)" }.joined(separator: "+")
            }
            var nonce = Self.freshNonce()
            var answer: (ServiceAPI.QuoteResponse, tlsKeyHash: [UInt8])
            do {
                answer = try await client.quote(ServiceAPI.QuoteRequest(nonce: Hex.encode(nonce), pcrSelection: wanted, log: cursor))
            } catch let e as HostError where cursor != nil && (e.status == 410 || e.code == "bad_log_cursor") {
                // The VMV no longer has our epoch (410), or our position is beyond its log (400,
                // a VMV whose state was reset): ask for the whole current epoch with a new nonce.
                cursor = nil
                nonce = Self.freshNonce()
                answer = try await client.quote(ServiceAPI.QuoteRequest(nonce: Hex.encode(nonce), pcrSelection: wanted, log: nil))
            }
            let (response, tlsKeyHash) = answer
            let context = AttestationContext(
                host: host, nonce: nonce, tlsKeyHash: tlsKeyHash, selection: selection, akTrust: akTrust, state: state,
                references: references, requestedDomains: requestedDomains, now: Date().formatted(.iso8601))
            let (report, newState) = await AttestationVerifier().verify(response, context: context)
            var stored = false
            if let newState, let store {
                try await store.save(newState)
                stored = true
            }
            let saved = SavedEvidence(host: host, nonce: Hex.encode(nonce), serverCertificate: Base64.encode(try client.serverCertificate()),
                                      request: ServiceAPI.QuoteRequest(nonce: Hex.encode(nonce), pcrSelection: wanted, log: cursor),
                                      response: response, receivedAt: context.now)
            return Outcome(report: report, evidence: saved, stored: stored)
        }
    }
}

