import Crypto
import FoundationEssentials
import SwiftASN1
import TPMWire
import X509

/// What `vmv-verifier enroll` writes after a credential activation succeeded: the host's AK,
/// exactly as its TPM2B_PUBLIC, and what it was certified against.
public struct AKPin: Codable, Hashable, Sendable {
    public static let schema = "vmv-ak-pin/v1"

    public var schema: String
    /// "host:port" enrolled.
    public var host: String
    /// The hostname the VMV reported.
    public var hostname: String?
    /// base64 TPM2B_PUBLIC of the AK.
    public var akPublic: String
    public var akName: String
    public var akHandle: String?
    /// PEM EK certificate the activation was made against, and its TPM's facts.
    public var ekCertificate: String
    public var tpmManufacturer: String?
    public var tpmModel: String?
    public var tpmVersion: String?
    /// SHA-256 of the TLS key the host presented at enrollment (informational: TLS keys rotate).
    public var tlsKeyHash: String?
    /// ISO 8601.
    public var enrolledAt: String

    public init(host: String, hostname: String?, akPublic: [UInt8], akName: [UInt8], akHandle: String?, ekCertificate: String,
                tpmManufacturer: String?, tpmModel: String?, tpmVersion: String?, tlsKeyHash: [UInt8]?, enrolledAt: String) {
        schema = Self.schema
        self.host = host
        self.hostname = hostname
        self.akPublic = Base64.encode(akPublic)
        self.akName = Hex.encode(akName)
        self.akHandle = akHandle
        self.ekCertificate = ekCertificate
        self.tpmManufacturer = tpmManufacturer
        self.tpmModel = tpmModel
        self.tpmVersion = tpmVersion
        self.tlsKeyHash = tlsKeyHash.map { Hex.encode($0) }
        self.enrolledAt = enrolledAt
    }

    public static func load(_ path: String) throws(EvidenceError) -> AKPin {
        guard let data = FileManager.default.contents(atPath: path) else { throw EvidenceError("\(path): cannot read the AK pin") }
        let pin: AKPin
        do { pin = try JSONDecoder().decode(AKPin.self, from: data) } catch {
            throw EvidenceError("\(path): not an AK pin from `vmv-verifier enroll` (\(ReferenceDocument.describe(error)))")
        }
        guard pin.schema == schema else { throw EvidenceError("\(path): schema \(pin.schema), expected \(schema)") }
        guard Base64.decode(pin.akPublic) != nil else { throw EvidenceError("\(path).akPublic: not base64") }
        return pin
    }

    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return ((try? encoder.encode(self)).map { Array($0) } ?? []) + [0x0a]
    }
}

/// How a verifier decides that the key that signed a quote is the host's TPM's AK.
public enum AKTrust: Sendable {
    /// Enrolled with this verifier: the quote's TPM2B_PUBLIC must equal the pinned one byte for byte.
    case pinned(AKPin)
    /// Certified by an AK CA (one that issues AK certificates only after a credential
    /// activation): the first AK certificate must chain to one of these roots and certify the AK.
    case certificateAuthority([Certificate])
    /// Any AK: only for re-reading evidence an operator vouches for (`refs learn --from` without
    /// `--ak`), never for an attestation.
    case unchecked

    /// Why the AK is not trusted, or nil when it is.
    public func failure(akPublic: [UInt8], ak: AttestationKey, certificates: [String]) async -> String? {
        switch self {
        case .unchecked:
            return nil
        case .pinned(let pin):
            guard let pinned = Base64.decode(pin.akPublic) else { return "the pinned AK is not base64" }
            // Public data: no need for constant time.
            if pinned == akPublic { return nil }
            let name = (try? TPM2BPublic(wireBytes: akPublic).publicArea.name).flatMap { $0 }.map { Hex.encode($0) } ?? "unparseable"
            return "the quote is signed by AK \(name), not by the AK \(pin.akName) pinned at enrollment (\(pin.enrolledAt))"
        case .certificateAuthority(let roots):
            guard let pem = certificates.first else { return "the host sent no AK certificate, and the AK is not pinned" }
            let leaf: Certificate
            do { leaf = try Certificate(pemEncoded: pem) } catch { return "the AK certificate is not a PEM X.509 certificate: \(error)" }
            guard ak.certifies(leaf) else {
                return "the AK certificate (subject \(leaf.subject)) certifies another key than the AK that signed the quote"
            }
            var intermediates: [Certificate] = []
            for p in certificates.dropFirst() {
                if let c = try? Certificate(pemEncoded: p) { intermediates.append(c) }
            }
            var verifier = X509.Verifier(rootCertificates: CertificateStore(roots)) { RFC5280Policy() }
            switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(intermediates)) {
            case .validCertificate: return nil
            case .couldNotValidate(let failures):
                let reasons = failures.map { "\($0.policyFailureReason)" }
                return "the AK certificate (issuer \(leaf.issuer)) does not chain to the AK CA"
                    + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; "))
            }
        }
    }
}

/// Standard base64 (padded), as the API carries binary TPM structures.
public enum Base64 {
    public static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    public static func decode(_ text: String) -> [UInt8]? { Data(base64Encoded: text).map { Array($0) } }
}
