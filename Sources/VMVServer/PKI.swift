import Crypto
import FoundationEssentials
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#endif

/// A small certificate authority for the VMV's mutual TLS: one CA that signs the VMV's server
/// certificate and the verifiers' client certificates (`vmv certs init`). ECDSA P-256 keys,
/// SHA-256 signatures. certs/README.md says how to do the same with a production PKI.
public struct CertificateAuthority: Sendable {
    public let certificate: Certificate
    public let privateKey: Certificate.PrivateKey
    public let key: P256.Signing.PrivateKey

    /// A new self-signed CA valid from `notBefore` for `days`.
    public init(commonName: String = "vmv CA", days: Int = 3650, notBefore: Date = Date()) throws {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("vmv")
            CommonName(commonName)
        }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let start = notBefore.addingTimeInterval(-300)   // tolerate small clock differences
        certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: start,
            notValidAfter: notBefore.addingTimeInterval(Double(days) * 86400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        self.key = key
        self.privateKey = Certificate.PrivateKey(key)
    }

    /// Loads a CA written by `vmv certs init`.
    public init(certificatePEM: String, keyPEM: String) throws {
        certificate = try Certificate(pemEncoded: certificatePEM)
        key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM)
        privateKey = Certificate.PrivateKey(key)
    }

    public enum Usage: Sendable {
        /// A TLS server: names the host by DNS names and IP addresses.
        case server(dnsNames: [String], ipAddresses: [[UInt8]])
        /// A TLS client (a verifier).
        case client
    }

    /// A certificate for a new P-256 key, signed by this CA.
    public func issue(commonName: String, usage: Usage, days: Int, notBefore: Date = Date())
        throws -> (certificate: Certificate, key: P256.Signing.PrivateKey)
    {
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let subject = try DistinguishedName {
            OrganizationName("vmv")
            CommonName(commonName)
        }
        let authorityKeyID = try certificate.extensions.subjectKeyIdentifier?.keyIdentifier
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            SubjectKeyIdentifier(hash: publicKey)
            if let authorityKeyID {
                AuthorityKeyIdentifier(keyIdentifier: authorityKeyID)
            }
            switch usage {
            case .server(let dnsNames, let ipAddresses):
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(dnsNames.map { .dnsName($0) }
                    + ipAddresses.map { .ipAddress(ASN1OctetString(contentBytes: $0[...])) })
            case .client:
                try ExtendedKeyUsage([.clientAuth])
            }
        }
        let cert = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: notBefore.addingTimeInterval(-300),
            notValidAfter: notBefore.addingTimeInterval(Double(days) * 86400),
            issuer: certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: privateKey)
        return (cert, key)
    }
}

/// Subject alternative names from the command line: an IPv4 or IPv6 address is an IP SAN,
/// anything else a DNS name.
public enum SubjectAlternativeName {
    public static func split(_ names: [String]) throws -> (dns: [String], ip: [[UInt8]]) {
        var dns: [String] = [], ip: [[UInt8]] = []
        for name in names {
            if let v4 = ipv4(name) { ip.append(v4) } else if let v6 = ipv6(name) { ip.append(v6) } else {
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "*" }) else {
                    throw PKIError("'\(name)' is neither an IP address nor a DNS name")
                }
                dns.append(name)
            }
        }
        return (dns, ip)
    }

    static func ipv4(_ s: String) -> [UInt8]? {
        var a = in_addr()
        return inet_pton(AF_INET, s, &a) == 1 ? withUnsafeBytes(of: a) { Array($0) } : nil
    }

    static func ipv6(_ s: String) -> [UInt8]? {
        var a = in6_addr()
        return inet_pton(AF_INET6, s, &a) == 1 ? withUnsafeBytes(of: a) { Array($0) } : nil
    }
}

public struct PKIError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The files `vmv certs init` writes.
public enum PKIFiles {
    public static let names = ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"]

    /// A CA, a server certificate for `sans` and a client certificate, as PEM files in `directory`.
    /// Keys are created 0600 (never readable by others, not even for a moment); existing files
    /// are kept unless `overwrite`.
    public static func initialise(directory: String, sans: [String], days: Int, clientName: String = "vmv verifier",
                                  overwrite: Bool = false) throws -> [String] {
        let (dns, ip) = try SubjectAlternativeName.split(sans)
        guard !dns.isEmpty || !ip.isEmpty else { throw PKIError("the server certificate needs at least one name (--san)") }
        guard days >= 1 else { throw PKIError("--days must be at least 1") }
        if !overwrite {
            let existing = names.filter { FileManager.default.fileExists(atPath: directory + "/" + $0) }
            guard existing.isEmpty else {
                throw PKIError("\(directory) already has \(existing.joined(separator: ", ")); use --force to replace them")
            }
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ca = try CertificateAuthority(days: days)
        let server = try ca.issue(commonName: dns.first ?? "vmv", usage: .server(dnsNames: dns, ipAddresses: ip), days: days)
        let client = try ca.issue(commonName: clientName, usage: .client, days: days)
        var written: [String] = []
        func put(_ name: String, _ text: String, secret: Bool) throws {
            let path = directory + "/" + name
            try writeFile(path, Array(text.utf8), mode: secret ? 0o600 : 0o644)
            written.append(path)
        }
        try put("ca.pem", try ca.certificate.serializeAsPEM().pemString + "\n", secret: false)
        try put("ca.key", ca.key.pemRepresentation + "\n", secret: true)
        try put("server.pem", try server.certificate.serializeAsPEM().pemString + "\n", secret: false)
        try put("server.key", server.key.pemRepresentation + "\n", secret: true)
        try put("client.pem", try client.certificate.serializeAsPEM().pemString + "\n", secret: false)
        try put("client.key", client.key.pemRepresentation + "\n", secret: true)
        return written
    }

    /// Writes `bytes` to `path` through a temporary file created with `mode`, renamed into place.
    public static func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t) throws {
        let temporary = path + ".tmp-\(getpid())"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw PKIError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = fchmod(fd, mode) == 0   // the umask may have taken bits away; never added any
        var offset = 0
        while ok, offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { ok = false } else { offset += n }
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw PKIError("cannot write \(path): \(reason)")
        }
    }
}
