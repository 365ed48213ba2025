import FoundationEssentials
import TPMWire

/// An attestation's evidence as received, with what the verifier knew (its nonce, the server
/// certificate of its handshake): enough to check it again later (`refs learn --from`).
public struct SavedEvidence: Codable, Sendable {
    public static let schema = "vmv-evidence/v1"
    public var schema: String
    public var host: String
    public var nonce: String
    /// base64 DER of the server certificate in the handshake.
    public var serverCertificate: String
    public var request: ServiceAPI.QuoteRequest
    public var response: ServiceAPI.QuoteResponse
    public var receivedAt: String

    public init(host: String, nonce: String, serverCertificate: String, request: ServiceAPI.QuoteRequest,
                response: ServiceAPI.QuoteResponse, receivedAt: String) {
        schema = Self.schema
        self.host = host
        self.nonce = nonce
        self.serverCertificate = serverCertificate
        self.request = request
        self.response = response
        self.receivedAt = receivedAt
    }

    public static func load(_ path: String) throws(EvidenceError) -> SavedEvidence {
        guard let data = FileManager.default.contents(atPath: path) else { throw EvidenceError("\(path): cannot read") }
        let e: SavedEvidence
        do { e = try JSONDecoder().decode(SavedEvidence.self, from: data) } catch {
            throw EvidenceError("\(path): not evidence saved by `vmv-verifier attest --save-evidence` (\(ReferenceDocument.describe(error)))")
        }
        guard e.schema == schema else { throw EvidenceError("\(path): schema \(e.schema), expected \(schema)") }
        return e
    }

    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return ((try? encoder.encode(self)).map { Array($0) } ?? []) + [0x0a]
    }

    /// Checks the evidence again, as at the time it was received but without freshness (the
    /// nonce is the saved one) and without stored state: the verified facts, or why not.
    public func verifiedFacts(akTrust: AKTrust) async throws(EvidenceError) -> EpochFacts {
        guard let nonce = try? Hex.decode(self.nonce), let der = Base64.decode(serverCertificate) else {
            throw EvidenceError("the saved nonce or server certificate is not hex/base64")
        }
        let context = AttestationContext(host: host, nonce: nonce, tlsKeyHash: try QuoteBinding.tlsKeyHash(certificateDER: der),
                                         selection: nil, akTrust: akTrust, state: nil, references: ReferenceSet(), now: receivedAt)
        let (report, state) = await AttestationVerifier().verify(response, context: context)
        guard let state, report.failedChecks.isEmpty else {
            throw EvidenceError("the saved evidence does not verify: " + report.failedChecks.map { "\($0.rule): \($0.reason)" }.joined(separator: "; "))
        }
        return state.facts
    }
}
