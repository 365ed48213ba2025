import Foundation

/// The attestation keys the interop tests make with `tpm2_createak`.
public enum AKKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case eccP256ECDSA = "ecc-ecdsa"
    case rsa2048RSASSA = "rsa-rsassa"
    case rsa2048RSAPSS = "rsa-rsapss"

    /// The signature scheme, as tpm2-tools names it.
    public var scheme: String {
        switch self {
        case .eccP256ECDSA: "ecdsa"
        case .rsa2048RSASSA: "rsassa"
        case .rsa2048RSAPSS: "rsapss"
        }
    }

    /// `tpm2_createak -G KEY -s SCHEME`.
    var createArguments: [String] { ["-G", self == .eccP256ECDSA ? "ecc" : "rsa", "-s", scheme] }

    public var description: String { rawValue }
}

/// Quote evidence that real tpm2-tools wrote on a real (software) TPM, as files in a directory:
///
/// | file | what |
/// |---|---|
/// | `ak.pem`, `ak.tss` | the AK as SubjectPublicKeyInfo PEM and as TPM2B_PUBLIC |
/// | `ak.name` | the AK's Name as `tpm2_createak -n` wrote it |
/// | `quote.msg`, `quote.sig`, `quote.pcrs` | `tpm2_quote -m -s -o` (serialized PCR file) |
/// | `quote-values.msg`, `…sig`, `…pcrs` | a second quote of the same PCRs, `-F values` |
/// | `quote-marshaled.pcrs` | `quote.pcrs` marshaled by tpm2-tss as `-F marshaled` (tpm2-tools 5.8) writes it |
/// | `certify.msg`, `certify.sig` | `tpm2_certify` of the AK by itself: a signed TPMS_ATTEST that is not a quote |
/// | `unrestricted.*` | a quote (`.msg/.sig/.pcrs`) by a signing key that is not restricted, and that key (`.pem/.tss`) |
public struct QuoteEvidence: Sendable {
    public let kind: AKKind
    public let directory: URL
    /// The PCRs quoted, in tpm2-tools syntax.
    public let pcrList: String
    public let nonceHex: String

    public func path(_ file: String) -> String { directory.appendingPathComponent(file).path }
    public func read(_ file: String) throws -> [UInt8] { Array(try Data(contentsOf: directory.appendingPathComponent(file))) }

    /// PCR 15 is extended in both banks before quoting, so the quote holds non-initial values.
    public static let pcrList = "sha1:0,15+sha256:0,1,15"
    public static let nonceHex = "5ca1ab1e00112233445566778899aabbccddeeff"
}

/// Makes quote evidence once per test process on a private swtpm (stopped as soon as the files
/// are written) and hands the same files to every test that asks.
public enum QuoteEvidenceFixture {
    private static let made: Result<[AKKind: QuoteEvidence], HarnessError> = {
        do { return .success(try make()) } catch let e as HarnessError { return .failure(e) } catch {
            return .failure(HarnessError("\(error)"))
        }
    }()

    public static func evidence(_ kind: AKKind) throws -> QuoteEvidence {
        switch made {
        case .success(let all):
            guard let e = all[kind] else { throw HarnessError("no evidence for \(kind)") }
            return e
        case .failure(let error): throw error
        }
    }

    private static func make() throws -> [AKKind: QuoteEvidence] {
        let tpm = try Swtpm(pcrBanks: ["sha1", "sha256"])
        defer { tpm.stop() }
        let root = try TemporaryDirectory.makeRemovedAtExit(prefix: "quote-evidence")
        let tools = TPM2Tools(tpm: tpm, directory: root)
        try tools.run("tpm2_createek", ["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"])
        try tools.run("tpm2_pcrextend", ["15:sha1=" + String(repeating: "ab", count: 20) + ",sha256=" + String(repeating: "cd", count: 32)])
        let nonce = QuoteEvidence.nonceHex, list = QuoteEvidence.pcrList
        var result: [AKKind: QuoteEvidence] = [:]
        for kind in AKKind.allCases {
            let dir = root.appendingPathComponent(kind.rawValue)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let t = TPM2Tools(tpm: tpm, directory: dir)
            try t.run("tpm2_createak", ["-C", "../ek.ctx", "-c", "ak.ctx", "-g", "sha256", "-u", "ak.tss", "-f", "tss", "-n", "ak.name"]
                      + kind.createArguments)
            try t.run("tpm2_readpublic", ["-c", "ak.ctx", "-o", "ak.pem", "-f", "pem"])
            try t.run("tpm2_quote", ["-c", "ak.ctx", "-l", list, "-q", nonce, "-g", "sha256", "--scheme", kind.scheme,
                                     "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs"])
            try t.run("tpm2_quote", ["-c", "ak.ctx", "-l", list, "-q", nonce, "-g", "sha256", "--scheme", kind.scheme,
                                     "-m", "quote-values.msg", "-s", "quote-values.sig", "-o", "quote-values.pcrs", "-F", "values"])
            // -F marshaled needs tpm2-tools 5.8; tpm2-tss marshals the same structures here
            try t.write("quote-marshaled.pcrs", try TSSMarshal.marshaledPCRFile(fromSerialized: try t.read("quote.pcrs")))
            try t.run("tpm2_certify", ["-c", "ak.ctx", "-C", "ak.ctx", "-g", "sha256", "--scheme", kind.scheme, "-o", "certify.msg", "-s", "certify.sig"])
            // A signing key that is not restricted: TPM2_Quote signs with it all the same.
            let keyAlg = kind == .eccP256ECDSA ? "ecc256:ecdsa-sha256:null" : "rsa2048:\(kind.scheme)-sha256:null"
            try t.run("tpm2_createprimary", ["-C", "o", "-G", "ecc", "-c", "owner.ctx"])
            try t.run("tpm2_create", ["-C", "owner.ctx", "-G", keyAlg, "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
                                      "-u", "unrestricted.pub", "-r", "unrestricted.priv"])
            try t.run("tpm2_load", ["-C", "owner.ctx", "-u", "unrestricted.pub", "-r", "unrestricted.priv", "-c", "unrestricted.ctx"])
            try t.run("tpm2_readpublic", ["-c", "unrestricted.ctx", "-o", "unrestricted.tss", "-f", "tss"])
            try t.run("tpm2_readpublic", ["-c", "unrestricted.ctx", "-o", "unrestricted.pem", "-f", "pem"])
            try t.run("tpm2_quote", ["-c", "unrestricted.ctx", "-l", list, "-q", nonce, "-g", "sha256", "--scheme", kind.scheme,
                                     "-m", "unrestricted.msg", "-s", "unrestricted.sig", "-o", "unrestricted.pcrs"])
            result[kind] = QuoteEvidence(kind: kind, directory: dir, pcrList: list, nonceHex: nonce)
        }
        return result
    }
}

