import Crypto
import FoundationEssentials
import TPMWire

/// The signature of a webhook (docs/fleet.md, "Webhooks"): the header
///
///     VMV-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." ‖ body)>
///
/// The timestamp is signed with the body, so a receiver that refuses timestamps outside its
/// replay window (default 300 s) and remembers the `VMV-Webhook-Id`s it has seen within that
/// window cannot be fed an old notification again.
public enum WebhookSignature {
    public static let header = "VMV-Signature"
    public static let idHeader = "VMV-Webhook-Id"
    public static let defaultTolerance = 300

    public static func sign(body: [UInt8], secret: [UInt8], timestamp: Int) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("\(timestamp).".utf8) + body, using: SymmetricKey(data: secret))
        return "t=\(timestamp),v1=" + Hex.encode(Array(mac))
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case stale(age: Int, tolerance: Int)
        case mismatch

        public var description: String {
            switch self {
            case .malformed(let why): "the \(WebhookSignature.header) header is malformed: \(why)"
            case .stale(let age, let tolerance): "the signature is \(age) s from now, outside the \(tolerance) s window: a replay or a wrong clock"
            case .mismatch: "the signature does not match the body (another secret, or a changed body)"
            }
        }
    }

    /// Checks a received webhook; returns its signed timestamp.
    @discardableResult
    public static func verify(header: String, body: [UInt8], secret: [UInt8], now: Int, tolerance: Int = defaultTolerance) throws(Failure) -> Int {
        var timestamp: Int?
        var signatures: [[UInt8]] = []
        for part in header.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { throw .malformed("'\(part)' is not key=value") }
            switch kv[0] {
            case "t":
                guard let t = Int(kv[1]) else { throw .malformed("t is not a number") }
                timestamp = t
            case "v1":
                guard kv[1].utf8.count == 64, let bytes = try? Hex.decode(kv[1]) else { throw .malformed("v1 is not 64 hex digits") }
                signatures.append(bytes)
            default:
                continue   // other schemes, for later versions
            }
        }
        guard let timestamp else { throw .malformed("no t=") }
        guard !signatures.isEmpty else { throw .malformed("no v1=") }
        let age = now - timestamp
        guard abs(age) <= tolerance else { throw .stale(age: age, tolerance: tolerance) }
        let key = SymmetricKey(data: secret)
        let message = Array("\(timestamp).".utf8) + body
        // HMAC.isValidAuthenticationCode compares in constant time.
        guard signatures.contains(where: { HMAC<SHA256>.isValidAuthenticationCode($0, authenticating: message, using: key) }) else {
            throw .mismatch
        }
        return timestamp
    }
}
