import Crypto
import Foundation
import SwiftASN1
import Testing
import TPMWire
@testable import Verifier
import X509

/// EK certificate validation against certificates made here with swift-certificates: the TCG
/// specifics are accepted, and everything else that is wrong is refused with its reason.
@Suite struct EKCertificateTests {
    static let rootKey = P256.Signing.PrivateKey()
    static let root: Certificate = try! makeCA(key: rootKey)
    static let ekKey = P256.KeyAgreement.PrivateKey()
    /// The EK as a TPM would present it: an ECC P-256 restricted decryption key.
    static let ek: TPMTPublic = {
        let raw = Array(ekKey.publicKey.rawRepresentation)
        return TPMTPublic(nameAlg: .sha256, objectAttributes: [.fixedTPM, .fixedParent, .sensitiveDataOrigin, .adminWithPolicy, .restricted, .decrypt],
                          key: .ecc(TPMSECCParms(symmetric: TPMTSymDefObject(algorithm: .aes, keyBits: 128, mode: .cfb), scheme: .null, curve: .nistP256),
                                    x: Array(raw.prefix(32)), y: Array(raw.suffix(32))))
    }()
    static let validator = EKCertificateValidator(roots: [root])

    static func makeCA(key: P256.Signing.PrivateKey) throws -> Certificate {
        let name = try DistinguishedName { CommonName("test TPM manufacturer root") }
        return try Certificate(version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                               notValidBefore: Date() - 3600, notValidAfter: Date() + 86400 * 365, issuer: name, subject: name,
                               signatureAlgorithm: .ecdsaWithSHA256,
                               extensions: try Certificate.Extensions {
                                   Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                                   Critical(KeyUsage(keyCertSign: true))
                               },
                               issuerPrivateKey: .init(key))
    }

    /// The SubjectAltName of the EK Credential Profile: a directoryName with the TPM's
    /// manufacturer, model and version.
    static func tpmSAN() -> SubjectAlternativeNames {
        SubjectAlternativeNames([.directoryName(DistinguishedName([
            RelativeDistinguishedName([
                .init(type: [2, 23, 133, 2, 1], utf8String: "id:494E5443"),
                .init(type: [2, 23, 133, 2, 2], utf8String: "vmv-test"),
                .init(type: [2, 23, 133, 2, 3], utf8String: "id:00010002"),
            ]),
        ]))])
    }

    static func makeEKCertificate(
        subject: DistinguishedName = DistinguishedName(), notValidAfter: Date = Date() + 86400,
        @ExtensionsBuilder extensions: () throws -> Result<Certificate.Extensions, any Error>
    ) throws -> [UInt8] {
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(P256.Signing.PublicKey(rawRepresentation: ekKey.publicKey.rawRepresentation)),
            notValidBefore: Date() - 3600, notValidAfter: notValidAfter, issuer: root.subject, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: try Certificate.Extensions(builder: extensions),
            issuerPrivateKey: .init(rootKey))
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    static let ekUsage = ExtendedKeyUsage.Usage(oid: [2, 23, 133, 8, 1])

    @Test func acceptsATCGEKCertificateWithAnEmptySubjectAndCriticalSAN() async throws {
        let der = try Self.makeEKCertificate {
            Critical(Self.tpmSAN())
            try ExtendedKeyUsage([Self.ekUsage])
            Critical(BasicConstraints.notCertificateAuthority)
        }
        let validated = try await Self.validator.validate(der, ek: Self.ek)
        #expect(validated.tpmManufacturer == "id:494E5443")
        #expect(validated.tpmModel == "vmv-test")
        #expect(validated.tpmVersion == "id:00010002")
        #expect(validated.chain.count == 2)
        // As TPMs store it in NV: padded with zeros, or with FF.
        #expect(try await Self.validator.validate(der + [UInt8](repeating: 0, count: 200), ek: Self.ek).chain.count == 2)
        #expect(try await Self.validator.validate(der + [UInt8](repeating: 0xFF, count: 7), ek: Self.ek).chain.count == 2)
    }

    @Test func refusesWhatIsNotAnEKCertificate() async throws {
        let noEKU = try Self.makeEKCertificate { Critical(Self.tpmSAN()) }
        let e1 = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(noEKU, ek: Self.ek) }
        #expect(e1?.code == .notAnEKCertificate)
        #expect(e1?.reason == "the certificate lacks the EK certificate ExtendedKeyUsage 2.23.133.8.1")

        let serverEKU = try Self.makeEKCertificate {
            Critical(Self.tpmSAN())
            try ExtendedKeyUsage([.serverAuth])
        }
        let e2 = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(serverEKU, ek: Self.ek) }
        #expect(e2?.code == .notAnEKCertificate)

        let isCA = try Self.makeEKCertificate {
            Critical(Self.tpmSAN())
            try ExtendedKeyUsage([Self.ekUsage])
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
        }
        let e3 = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(isCA, ek: Self.ek) }
        #expect(e3?.reason == "the EK certificate is a CA certificate")

        let nonCriticalSAN = try Self.makeEKCertificate {
            Self.tpmSAN()
            try ExtendedKeyUsage([Self.ekUsage])
        }
        let e4 = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(nonCriticalSAN, ek: Self.ek) }
        #expect(e4?.reason == "the EK certificate has an empty subject and no critical SubjectAltName")
    }

    @Test func refusesUnknownCriticalExtensionsExpiryOtherKeysAndOtherIssuers() async throws {
        let unknownCritical = try Self.makeEKCertificate {
            Critical(Self.tpmSAN())
            try ExtendedKeyUsage([Self.ekUsage])
            Certificate.Extension(oid: [1, 3, 6, 1, 4, 1, 99999, 1], critical: true, value: [0x05, 0x00])
        }
        let e1 = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(unknownCritical, ek: Self.ek) }
        #expect(e1?.code == .unhandledCriticalExtension)
        #expect(e1?.reason.contains("1.3.6.1.4.1.99999.1") == true)

        let expired = try Self.makeEKCertificate(notValidAfter: Date() - 60) {
            Critical(Self.tpmSAN())
            try ExtendedKeyUsage([Self.ekUsage])
        }
        let e2 = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(expired, ek: Self.ek) }
        #expect(e2?.code == .untrusted)

        let good = try Self.makeEKCertificate {
            Critical(Self.tpmSAN())
            try ExtendedKeyUsage([Self.ekUsage])
        }
        var otherEK = Self.ek
        let other = Array(P256.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
        otherEK.key = .ecc(TPMSECCParms(scheme: .null, curve: .nistP256), x: Array(other.prefix(32)), y: Array(other.suffix(32)))
        let e3 = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(good, ek: otherEK) }
        #expect(e3?.reason == "the EK certificate certifies another key than the EK the TPM presents")

        let stranger = EKCertificateValidator(roots: [try Self.makeCA(key: P256.Signing.PrivateKey())])
        let e4 = await #expect(throws: EKCertificateError.self) { try await stranger.validate(good, ek: Self.ek) }
        #expect(e4?.code == .untrusted)
    }

    @Test(arguments: [[], [0x30], [0x30, 0x82, 0xFF, 0xFF, 0x00], Array("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".utf8),
                      (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 37) }])
    func hostileBytesAreUnparseableNotATrap(_ bytes: [UInt8]) async {
        let error = await #expect(throws: EKCertificateError.self) { try await Self.validator.validate(bytes, ek: Self.ek) }
        #expect(error?.code == .unparseable)
    }
}
