import Crypto
import Foundation
import SwiftASN1
import TPMWire
import X509

/// Why an EK certificate is not accepted. The reason names what failed.
public struct EKCertificateError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// Not a DER or PEM X.509 certificate.
        case unparseable
        /// A critical extension this verifier does not understand (the TCG ones are understood).
        case unhandledCriticalExtension
        /// No chain to a trust anchor, or a chain that breaks RFC 5280 or the TCG profile.
        case untrusted
        /// The certificate is not an EK certificate (no EK EKU, a CA, the wrong key usage).
        case notAnEKCertificate
        /// The certificate certifies another key than the EK the TPM presents.
        case keyMismatch
        /// A trust-anchor directory or file that cannot be read.
        case anchors
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}

/// An EK certificate that chains to a trust anchor and certifies the EK the TPM presented.
public struct ValidatedEKCertificate: Sendable {
    /// Leaf first, trust anchor last.
    public let chain: [Certificate]
    public var certificate: Certificate { chain[0] }
    /// From the SubjectAltName directoryName (TCG EK Credential Profile 3.2.9): TPM
    /// manufacturer (`id:00001014`), model and firmware version, as the certificate spells them.
    public let tpmManufacturer: String?
    public let tpmModel: String?
    public let tpmVersion: String?
}

/// Checks EK certificates (TCG EK Credential Profile for TPM 2.0) against trust anchors.
///
/// Everything RFC 5280 asks is enforced (signatures, validity, CA constraints, path length,
/// name constraints, critical extensions). On top of it, the TCG specifics are understood
/// rather than refused: a critical SubjectAltName holding the TPM's manufacturer, model and
/// version (the subject is often empty), and the EK certificate EKU 2.23.133.8.1, which is
/// required. And the certified key must be the EK the TPM presents.
public struct EKCertificateValidator: Sendable {
    public let roots: [Certificate]
    public let intermediates: [Certificate]

    public init(roots: [Certificate], intermediates: [Certificate] = []) {
        self.roots = roots
        self.intermediates = intermediates
    }

    /// Loads every certificate in `directory` (`.pem`, `.crt`, `.cer`, `.der`; a PEM file may
    /// hold several): self-signed ones are trust anchors, the others intermediates.
    public init(directory: String) throws(EKCertificateError) {
        var roots: [Certificate] = []
        var intermediates: [Certificate] = []
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            throw EKCertificateError(.anchors, "cannot read the trust-anchor directory \(directory): \(error.localizedDescription)")
        }
        for file in files where [".pem", ".crt", ".cer", ".der"].contains(where: file.lowercased().hasSuffix) {
            let path = directory + "/" + file
            for certificate in try Self.load(path) {
                if certificate.subject == certificate.issuer { roots.append(certificate) } else { intermediates.append(certificate) }
            }
        }
        self.init(roots: roots, intermediates: intermediates)
    }

    /// The certificates in a PEM or DER file.
    public static func load(_ path: String) throws(EKCertificateError) -> [Certificate] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EKCertificateError(.anchors, "cannot read \(path)")
        }
        do {
            return try parse(Array(data))
        } catch {
            throw EKCertificateError(.anchors, "\(path): \(error.reason)")
        }
    }

    /// A DER certificate, or one or more PEM certificates.
    public static func parse(_ bytes: [UInt8]) throws(EKCertificateError) -> [Certificate] {
        do {
            if let text = String(bytes: bytes, encoding: .utf8), text.contains("-----BEGIN") {
                return try PEMDocument.parseMultiple(pemString: text)
                    .filter { $0.discriminator == "CERTIFICATE" }
                    .map { try Certificate(derEncoded: $0.derBytes) }
            }
            return [try Certificate(derEncoded: NVCertificate.trimmingPadding(bytes))]
        } catch {
            throw EKCertificateError(.unparseable, "not an X.509 certificate: \(error)")
        }
    }

    /// Validates `der` (an EK certificate as read from the TPM's NV) and checks that it
    /// certifies `ek`.
    public func validate(_ der: [UInt8], ek: TPMTPublic) async throws(EKCertificateError) -> ValidatedEKCertificate {
        guard let leaf = try Self.parse(der).first else {
            throw EKCertificateError(.unparseable, "no certificate in \(der.count) bytes")
        }
        return try await validate(leaf, ek: ek)
    }

    /// Validity periods are checked against the current time.
    public func validate(_ leaf: Certificate, ek: TPMTPublic) async throws(EKCertificateError) -> ValidatedEKCertificate {
        // swift-certificates rejects a leaf with an unhandled critical extension without a
        // reason; say which one.
        let handled = TCGEKCertificatePolicy.handledExtensions + RFC5280Policy().verifyingCriticalExtensions
        if let unhandled = leaf.extensions.first(where: { $0.critical && !handled.contains($0.oid) }) {
            throw EKCertificateError(.unhandledCriticalExtension,
                                     "the EK certificate has a critical extension \(unhandled.oid) this verifier does not understand")
        }
        let (manufacturer, model, version) = try TCGEKCertificatePolicy.checkLeaf(leaf)

        let expected: Certificate.PublicKey
        do {
            expected = try ek.certificatePublicKey()
        } catch {
            throw EKCertificateError(.keyMismatch, "the TPM's EK cannot be compared: \(error)")
        }
        guard leaf.publicKey == expected else {
            throw EKCertificateError(.keyMismatch, "the EK certificate certifies another key than the EK the TPM presents")
        }

        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy()
            TCGEKCertificatePolicy()
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(intermediates)) {
        case .validCertificate(let chain):
            return ValidatedEKCertificate(chain: Array(chain), tpmManufacturer: manufacturer, tpmModel: model, tpmVersion: version)
        case .couldNotValidate(let failures):
            let reasons = failures.map { "\($0.policyFailureReason)" }
            throw EKCertificateError(.untrusted, reasons.isEmpty
                ? "the EK certificate (issuer \(leaf.issuer)) does not chain to any of the \(roots.count) trust anchors"
                : "the EK certificate (issuer \(leaf.issuer)) is not trusted: \(reasons.joined(separator: "; "))")
        }
    }
}

/// The TCG EK Credential Profile's part of the policy: it understands (and so accepts as
/// critical) the SubjectAltName and the EKU, and requires the EK certificate EKU.
struct TCGEKCertificatePolicy: VerifierPolicy {
    /// tcg-kp-EKCertificate
    static let ekCertificateUsage: ASN1ObjectIdentifier = [2, 23, 133, 8, 1]
    static let tpmManufacturer: ASN1ObjectIdentifier = [2, 23, 133, 2, 1]
    static let tpmModel: ASN1ObjectIdentifier = [2, 23, 133, 2, 2]
    static let tpmVersion: ASN1ObjectIdentifier = [2, 23, 133, 2, 3]
    static let handledExtensions: [ASN1ObjectIdentifier] = [
        .X509ExtensionID.subjectAlternativeName, .X509ExtensionID.extendedKeyUsage,
    ]

    var verifyingCriticalExtensions: [ASN1ObjectIdentifier] { Self.handledExtensions }

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        do {
            _ = try Self.checkLeaf(chain.leaf)
            return .meetsPolicy
        } catch {
            return .failsToMeetPolicy(reason: error.reason)
        }
    }

    /// The leaf's TCG requirements; the TPM manufacturer, model and version from its SAN.
    static func checkLeaf(_ leaf: Certificate) throws(EKCertificateError) -> (String?, String?, String?) {
        let extensions = leaf.extensions
        let eku: ExtendedKeyUsage?
        do { eku = try extensions.extendedKeyUsage } catch {
            throw EKCertificateError(.notAnEKCertificate, "the EK certificate's ExtendedKeyUsage does not parse: \(error)")
        }
        guard let eku, eku.contains(ExtendedKeyUsage.Usage(oid: ekCertificateUsage)) else {
            throw EKCertificateError(.notAnEKCertificate,
                                     "the certificate lacks the EK certificate ExtendedKeyUsage \(ekCertificateUsage)")
        }
        if let constraints = try? extensions.basicConstraints, case .isCertificateAuthority = constraints {
            throw EKCertificateError(.notAnEKCertificate, "the EK certificate is a CA certificate")
        }
        let names: SubjectAlternativeNames?
        do { names = try extensions.subjectAlternativeNames } catch {
            throw EKCertificateError(.notAnEKCertificate, "the EK certificate's SubjectAltName does not parse: \(error)")
        }
        // RFC 5280 4.1.2.6: an empty subject needs a critical SubjectAltName.
        if leaf.subject.isEmpty {
            guard names != nil, extensions.first(where: { $0.oid == .X509ExtensionID.subjectAlternativeName })?.critical == true else {
                throw EKCertificateError(.notAnEKCertificate, "the EK certificate has an empty subject and no critical SubjectAltName")
            }
        }
        var manufacturer: String?, model: String?, version: String?
        for case .directoryName(let name) in names ?? SubjectAlternativeNames() {
            for attribute in name.flatMap({ $0 }) {
                switch attribute.type {
                case tpmManufacturer: manufacturer = String(attribute.value)
                case tpmModel: model = String(attribute.value)
                case tpmVersion: version = String(attribute.value)
                default: break
                }
            }
        }
        return (manufacturer, model, version)
    }
}
