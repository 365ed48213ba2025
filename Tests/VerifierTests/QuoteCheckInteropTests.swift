import Foundation
import Testing
import TestSupport
import TPMWire

/// `vmv-verifier quote check` against quotes that tpm2_quote made on swtpm: accepted in every
/// PCR file format and with both AK formats (as tpm2_checkquote accepts them), and rejected
/// for the right reason when one rule is broken.
@Suite struct QuoteCheckInteropTests {
    struct Files {
        var ak = "ak.tss"
        var message = "quote.msg"
        var signature = "quote.sig"
        var pcrs = "quote.pcrs"
        var format = "serialized"
    }

    static let formats: [(format: String, message: String, signature: String, pcrs: String)] = [
        ("serialized", "quote.msg", "quote.sig", "quote.pcrs"),
        ("marshaled", "quote.msg", "quote.sig", "quote-marshaled.pcrs"),
        ("values", "quote-values.msg", "quote-values.sig", "quote-values.pcrs"),
    ]

    /// Runs the verifier on files of `evidence` (names relative to its directory, or absolute).
    static func check(_ e: QuoteEvidence, _ f: Files = Files(), pcrList: String? = nil, nonce: String? = nil,
                      eventLog: String? = nil, json: Bool = false) throws -> Tools.Result {
        func p(_ name: String) -> String { name.hasPrefix("/") ? name : e.path(name) }
        var args = ["quote", "check", "--ak", p(f.ak), "--message", p(f.message), "--signature", p(f.signature),
                    "--pcrs", p(f.pcrs), "--pcrs-format", f.format, "--pcr-list", pcrList ?? e.pcrList, "--nonce", nonce ?? e.nonceHex]
        if let eventLog { args += ["--eventlog", eventLog] }
        if json { args.append("--json") }
        return try Binaries.run("vmv-verifier", args)
    }

    /// The failed rules, from `--json`.
    static func failedRules(_ e: QuoteEvidence, _ f: Files = Files(), pcrList: String? = nil, nonce: String? = nil,
                            eventLog: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
        let r = try check(e, f, pcrList: pcrList, nonce: nonce, eventLog: eventLog, json: true)
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let reasons = (object?["reasons"] as? [[String: String]]) ?? []
        let valid = object?["valid"] as? Bool
        #expect(r.status == (reasons.isEmpty ? 0 : 1), "\(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
        #expect(valid == reasons.isEmpty, sourceLocation: sourceLocation)
        return reasons.compactMap { $0["rule"] }
    }

    static func checkquote(_ e: QuoteEvidence, _ f: Files, withList: Bool) throws -> Tools.Result {
        var args = ["-u", e.path(f.ak), "-m", e.path(f.message), "-s", e.path(f.signature), "-f", e.path(f.pcrs),
                    "-q", e.nonceHex, "-g", "sha256"]
        if withList { args += ["-l", e.pcrList] }
        return try Tools.run(try Tools.path("tpm2_checkquote"), args)
    }

    /// A copy of an evidence file with one byte changed, in a fresh directory.
    static func tampered(_ e: QuoteEvidence, _ name: String, at offset: (Int) -> Int) throws -> String {
        var bytes = try e.read(name)
        bytes[offset(bytes.count)] ^= 0x01
        return try write(bytes, name)
    }

    static func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let dir = try TemporaryDirectory.makeRemovedAtExit(prefix: "tampered")
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    @Test(arguments: AKKind.allCases, ["ak.pem", "ak.tss"])
    func acceptsRealQuotesInEveryFormatLikeTPM2Checkquote(_ kind: AKKind, _ ak: String) throws {
        let e = try QuoteEvidenceFixture.evidence(kind)
        for (format, message, signature, pcrs) in Self.formats {
            let files = Files(ak: ak, message: message, signature: signature, pcrs: pcrs, format: format)
            let r = try Self.check(e, files)
            #expect(r.status == 0, "\(format): \(r.stdout)\(r.stderr)")
            #expect(r.stdout.hasPrefix("valid: quote of sha1:0,15+sha256:0,1,15"), "\(r.stdout)")
            #expect(try Self.failedRules(e, files) == [])
            // tpm2_checkquote 5.4 reads serialized files on their own and values files with -l
            if format != "marshaled" && kind != .rsa2048RSAPSS {
                let peer = try Self.checkquote(e, files, withList: format == "values")
                #expect(peer.status == 0, "tpm2_checkquote rejects what vmv-verifier accepts: \(peer.stderr)")
            }
            // tpm2_checkquote 5.4 verifies RSA signatures with PKCS#1 v1.5 only (RSAPSS came in
            // 5.5): openssl checks the PSS signature (salt = digest length, as TPMs sign).
            if kind == .rsa2048RSAPSS {
                guard case .rsapss(_, let raw) = try TPMTSignature(wireBytes: try e.read(signature)) else {
                    Issue.record("not an RSAPSS signature"); continue
                }
                let rawPath = try Self.write(raw, "sig.raw")
                let peer = try Tools.run(try Tools.path("openssl"), ["dgst", "-sha256", "-verify", e.path("ak.pem"),
                    "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest", "-signature", rawPath, e.path(message)])
                #expect(peer.status == 0 && peer.stdout.contains("Verified OK"), "openssl: \(peer.stdout)\(peer.stderr)")
            }
        }
    }

    @Test(arguments: AKKind.allCases)
    func jsonCarriesTheQuotesFields(_ kind: AKKind) throws {
        let e = try QuoteEvidenceFixture.evidence(kind)
        let r = try Self.check(e, json: true)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let attest = try TPMSAttest(wireBytes: try e.read("quote.msg"))
        let quote = try #require(object["quote"] as? [String: Any])
        #expect(object["valid"] as? Bool == true)
        #expect((quote["clock"] as? NSNumber)?.uint64Value == attest.clockInfo.clock)
        #expect((quote["resetCount"] as? NSNumber)?.uint32Value == attest.clockInfo.resetCount)
        #expect((quote["restartCount"] as? NSNumber)?.uint32Value == attest.clockInfo.restartCount)
        #expect(quote["firmwareVersion"] as? String == String(attest.firmwareVersion, radix: 16).leftPadded(16))
        #expect(quote["selection"] as? String == "sha1:0,15+sha256:0,1,15")
        #expect(quote["extraData"] as? String == e.nonceHex)
        let pcrs = try #require(object["pcrs"] as? [String: [String: String]])
        let file = try PCRFile(bytes: try e.read("quote.pcrs"), format: .serialized)
        #expect(pcrs["sha256"]?["15"] == file.values[.sha256, 15].map { Hex.encode($0) })
        #expect(pcrs["sha1"]?.count == 2 && pcrs["sha256"]?.count == 3)
    }

    @Test(arguments: AKKind.allCases)
    func rejectsEachBrokenRuleForTheRightReason(_ kind: AKKind) throws {
        let e = try QuoteEvidenceFixture.evidence(kind)
        let nonce = String(e.nonceHex.dropLast(2)) + "00"
        #expect(try Self.failedRules(e, nonce: nonce) == ["nonce"])
        #expect(try Self.failedRules(e, nonce: e.nonceHex + "00") == ["nonce"])

        // one flipped bit in the signature, in the signed message (the clock), in the PCR values
        let sig = try Self.tampered(e, "quote.sig") { $0 - 1 }
        #expect(try Self.failedRules(e, Files(signature: sig)) == ["signature"])
        let msg = try Self.tampered(e, "quote.msg") { _ in 2 + 4 + 36 + 22 + 3 }   // a byte of clockInfo.clock
        #expect(try Self.failedRules(e, Files(message: msg)) == ["signature"])
        var file = try PCRFile(bytes: try e.read("quote.pcrs"), format: .serialized)
        file.values[.sha256, 15]?[0] ^= 1
        let pcrs = try Self.write(try file.bytes(format: .serialized), "quote.pcrs")
        #expect(try Self.failedRules(e, Files(pcrs: pcrs)) == ["pcrDigest"])
        let peer = try Tools.run(try Tools.path("tpm2_checkquote"), ["-u", e.path("ak.pem"), "-m", e.path("quote.msg"),
                                 "-s", e.path("quote.sig"), "-f", pcrs, "-q", e.nonceHex])
        #expect(peer.status != 0, "tpm2_checkquote accepts a changed PCR value")

        // the required selection differs by one PCR or one bank, either way
        for list in ["sha1:0,15+sha256:0,1", "sha1:0,15+sha256:0,1,15,16", "sha1:0+sha256:0,1,15",
                     "sha256:0,1,15", "sha1:0,15+sha256:0,1,15+sha384:0"] {
            #expect(try Self.failedRules(e, pcrList: list) == ["selection"], "\(list)")
        }
        // a values file read with another selection of the same size: the values are not the quoted ones
        #expect(try Self.failedRules(e, Files(message: "quote-values.msg", signature: "quote-values.sig", pcrs: "quote-values.pcrs", format: "values"),
                                     pcrList: "sha1:0,16+sha256:0,1,15") == ["selection", "pcrDigest"])

        // a signing key that is not restricted: refused as TPM2B_PUBLIC; as PEM nothing says so
        let unrestricted = Files(ak: "unrestricted.tss", message: "unrestricted.msg", signature: "unrestricted.sig", pcrs: "unrestricted.pcrs")
        #expect(try Self.failedRules(e, unrestricted) == ["akAttributes"])
        var pem = unrestricted
        pem.ak = "unrestricted.pem"
        #expect(try Self.failedRules(e, pem) == [])

        // a signed attestation that is not a quote (tpm2_certify of the AK)
        #expect(try Self.failedRules(e, Files(message: "certify.msg", signature: "certify.sig"))
                == ["type", "nonce", "selection", "pcrDigest"])

        // another key's quote, and a quote checked with another AK
        let other = try QuoteEvidenceFixture.evidence(kind == .eccP256ECDSA ? .rsa2048RSASSA : .eccP256ECDSA)
        #expect(try Self.failedRules(e, Files(ak: other.path("ak.tss"))) == ["signature"])
        #expect(try Self.failedRules(e, Files(ak: other.path("ak.pem"))) == ["signature"])
        let sameType = try QuoteEvidenceFixture.evidence(kind == .rsa2048RSASSA ? .rsa2048RSAPSS : (kind == .rsa2048RSAPSS ? .rsa2048RSASSA : .eccP256ECDSA))
        if sameType.kind != kind {
            // RSASSA signature with an RSAPSS AK (same key type, other scheme)
            let r = try Self.check(e, Files(ak: sameType.path("ak.tss")), json: true)
            #expect(r.status == 1 && r.stdout.contains("\"rule\":\"signature\"") && r.stdout.contains("the AK's scheme is"))
        }
    }

    @Test func rejectionIsOneLineNamingTheRule() throws {
        let e = try QuoteEvidenceFixture.evidence(.eccP256ECDSA)
        let r = try Self.check(e, pcrList: "sha256:0,1,15", nonce: "00")
        #expect(r.status == 1)
        #expect(r.stdout == "rejected: nonce: extraData has 20 bytes, the nonce 1; selection: quote selects sha1:0,15+sha256:0,1,15, required sha256:0,1,15 (quote has extra sha1:0,15)\n")
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
