import Crypto
import Foundation
import SwiftASN1
import X509

/// A CA, a server certificate for 127.0.0.1 and client certificates, as PEM files in a
/// directory: the mutual TLS of the tests.
struct TestPKI {
    let directory: URL
    var ca: String { directory.appendingPathComponent("ca.pem").path }
    var serverCertificate: String { directory.appendingPathComponent("server.pem").path }
    var serverKey: String { directory.appendingPathComponent("server.key").path }
    var clientCertificate: String { directory.appendingPathComponent("client.pem").path }
    var clientKey: String { directory.appendingPathComponent("client.key").path }

    init(directory: URL) throws {
        self.directory = directory
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("vmv test CA") }
        let now = Date()
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey), notValidBefore: now - 3600, notValidAfter: now + 86400,
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(caKey))
        try Self.write(ca, to: self.ca)
        func issue(_ name: String, server: Bool, certificate: String, key: String) throws {
            let k = P256.Signing.PrivateKey()
            let c = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(k.publicKey), notValidBefore: now - 3600, notValidAfter: now + 86400,
                issuer: caName, subject: try DistinguishedName { CommonName(name) }, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage(server ? [.serverAuth] : [.clientAuth])
                    if server { SubjectAlternativeNames([.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])), .dnsName("localhost")]) }
                },
                issuerPrivateKey: .init(caKey))
            try Self.write(c, to: certificate)
            try k.pemRepresentation.write(toFile: key, atomically: true, encoding: .utf8)
        }
        try issue("127.0.0.1", server: true, certificate: serverCertificate, key: serverKey)
        try issue("operator", server: false, certificate: clientCertificate, key: clientKey)
    }

    static func write(_ c: Certificate, to path: String) throws {
        var serializer = DER.Serializer()
        try serializer.serialize(c)
        try PEMDocument(type: "CERTIFICATE", derBytes: serializer.serializedBytes).pemString.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
