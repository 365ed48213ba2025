import TPMWire
import Verifier

/// What the API needs from the host it speaks for: the TPM (quotes, keys, credential
/// activation), the measurement log and the guests. `VMVHost` is the only one (the TPM actor,
/// the log store, Xen); the API layer stays free of how they are reached.
public protocol AttestationBackend: Sendable {
    /// The selection quoted when a request names none: the VMV PCR in every allocated bank.
    func defaultSelection() async throws -> PCRSelection
    /// One TPM quote, with the log position it accounts for.
    func quote(_ selection: PCRSelection, qualifyingData: [UInt8]) async throws -> SignedQuote
    /// The AK and EK parts of answers.
    func keys() async throws -> ServiceAPI.AKResponse
    /// TPM2_ActivateCredential for the AK, answered with `ActivationProof` (never the credential).
    func activateCredential(credentialBlob: [UInt8], secret: [UInt8]) async throws -> [UInt8]
    /// Stores an AK certificate a verifier issued at enrollment.
    func storeAKCertificate(pem: String) async throws
    /// Refuses a log cursor no answer can serve (410 `log_gone`, 400 `bad_log_cursor`).
    func checkLogCursor(_ cursor: ServiceAPI.LogCursor) async throws
    /// Records of `epoch` (nil: the current one) from `since`, up to `upTo` when a quote fixed it.
    func log(epoch: UInt32?, since: UInt64, upTo: LogPosition?) async throws -> ServiceAPI.Log
    func domains() async -> ServiceAPI.DomainsResponse
    /// nil when the TPM and the log are usable, else why not.
    func unavailability() async -> String?
    var host: ServiceAPI.Host { get }
}

/// An API error: its HTTP status, a stable code and a message for people. Never a stack trace.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String
    /// Seconds a client should wait before trying again (429, 503).
    public let retryAfter: Int?

    public init(_ status: Int, _ code: String, _ message: String, retryAfter: Int? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status) \(code): \(message)" }

    public static func badRequest(_ message: String, code: String = "bad_request") -> APIError {
        APIError(400, code, message)
    }
}
