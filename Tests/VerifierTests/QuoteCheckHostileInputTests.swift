import Foundation
import Testing
import TestSupport
import TPMWire

/// Whatever the files hold, `vmv-verifier quote check` ends with exit 2 and one message naming
/// the file, never a crash or a verdict; usage errors exit 2 too.
@Suite struct QuoteCheckHostileInputTests {
    typealias Interop = QuoteCheckInteropTests

    /// Every file cut short (a spread of lengths: every length is the in-process parser tests'
    /// job, each run here is a process), padded with a byte, and replaced by noise.
    @Test(arguments: AKKind.allCases, ["ak.tss", "quote.msg", "quote.sig", "quote.pcrs"])
    func truncatedAndNoisyFilesExitTwo(_ kind: AKKind, _ name: String) throws {
        let e = try QuoteEvidenceFixture.evidence(kind)
        let bytes = try e.read(name)
        let lengths = (0..<bytes.count).filter { $0 < 8 || $0 % 13 == 0 || $0 > bytes.count - 4 }
        var generator = SystemRandomNumberGenerator()
        let noise = (0..<bytes.count).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var variants = lengths.map { Array(bytes.prefix($0)) } + [bytes + [0], noise]
        if name == "ak.tss" { variants.removeAll { $0.first == 0x30 } }  // that would be read as DER
        for variant in variants {
            let path = try Interop.write(variant, name)
            var files = Interop.Files()
            switch name {
            case "ak.tss": files.ak = path
            case "quote.msg": files.message = path
            case "quote.sig": files.signature = path
            default: files.pcrs = path
            }
            let r = try Interop.check(e, files)
            #expect(r.status == 2, "\(name) of \(variant.count) bytes: exit \(r.status) \(r.stdout)\(r.stderr)")
            #expect(r.stdout.isEmpty)
            #expect(r.stderr.hasPrefix("vmv-verifier: \(path): "), "\(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1)
        }
    }

    @Test(arguments: [
        (["--nonce", "xyz"], "--nonce"), (["--nonce", ""], "--nonce"), (["--nonce", String(repeating: "00", count: 65)], "--nonce"),
        (["--pcr-list", "sha256:99"], "--pcr-list"), (["--pcr-list", "md5:0"], "--pcr-list"),
        (["--pcrs-format", "yaml"], "pcrs-format"), (["--bogus"], "bogus"),
    ])
    func usageErrorsExitTwo(_ override: [String], _ mention: String) throws {
        let e = try QuoteEvidenceFixture.evidence(.eccP256ECDSA)
        var args = ["quote", "check", "--ak", e.path("ak.tss"), "--message", e.path("quote.msg"), "--signature", e.path("quote.sig"),
                    "--pcrs", e.path("quote.pcrs"), "--pcr-list", e.pcrList, "--nonce", e.nonceHex]
        if let i = args.firstIndex(of: override[0]), override.count == 2 { args[i + 1] = override[1] } else { args += override }
        let r = try Binaries.run("vmv-verifier", args)
        #expect(r.status == 2, "\(override): \(r.stderr)")
        #expect(r.stderr.contains(mention), "\(r.stderr)")
        #expect(r.stdout.isEmpty)
    }

    @Test func missingFilesAndOptionsExitTwo() throws {
        let e = try QuoteEvidenceFixture.evidence(.eccP256ECDSA)
        let r = try Interop.check(e, Interop.Files(signature: "/nonexistent/quote.sig"))
        #expect(r.status == 2 && r.stderr == "vmv-verifier: /nonexistent/quote.sig: cannot open: No such file or directory\n")
        let usage = try Binaries.run("vmv-verifier", ["quote", "check", "--ak", e.path("ak.tss")])
        #expect(usage.status == 2 && usage.stderr.contains("Missing expected argument '--message <file>'"))
        let help = try Binaries.run("vmv-verifier", ["quote", "check", "--help"])
        #expect(help.status == 0 && help.stdout.contains("--pcrs-format"))
    }
}
