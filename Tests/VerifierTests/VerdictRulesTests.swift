import Testing
import TPMWire
@testable import Verifier

/// The rules around the evidence that are plain logic: the TPM clock moving forward against
/// the stored state (every branch, with its reason), and which verdicts decide the exit status.
struct VerdictRulesTests {
    static let stored = HostState(host: "h:1", akName: "000b", clock: 10_000, resetCount: 4, restartCount: 2, epoch: 3, nextSeq: 9, pcr: 15,
                                  pcrs: [:], facts: EpochFacts(epoch: 3), verdictAt: "2026-11-27T00:00:00Z", platform: .trusted)

    static func clock(_ clock: UInt64, reset: UInt32 = 4, restart: UInt32 = 2) -> TPMSClockInfo {
        TPMSClockInfo(clock: clock, resetCount: reset, restartCount: restart, safe: true)
    }

    @Test(arguments: [
        // (clock, resetCount, restartCount, log epoch, expected reason prefix; "" = accepted)
        (10_000, 4, 2, 3, ""),
        (10_500, 4, 2, 3, ""),
        (9_999, 4, 2, 3, "TPM clock went back to 9999 from resetCount 4, restartCount 2, clock 10000 at 2026-11-27T00:00:00Z"),
        (50, 4, 3, 3, ""),                                             // TPM restart: clock may be anything
        (20_000, 4, 1, 3, "TPM restartCount went back to 1 within resetCount 4"),
        (20_000, 3, 9, 3, "TPM resetCount went back to 3"),
        (5, 5, 0, 4, ""),                                              // TPM reset and a new epoch
        (5, 5, 0, 3, "the TPM was reset (resetCount 4 → 5) but the log continues epoch 3 (last seen 3)"),
        (10_500, 4, 2, 2, "the log is epoch 2, older than epoch 3"),
    ] as [(UInt64, UInt32, UInt32, UInt32, String)])
    func clockMovesForward(clock: UInt64, reset: UInt32, restart: UInt32, epoch: UInt32, expected: String) {
        let reasons = ClockCheck.failures(Self.clock(clock, reset: reset, restart: restart), stored: Self.stored, logEpoch: epoch)
        if expected.isEmpty {
            #expect(reasons.isEmpty)
        } else {
            #expect(reasons.count == 1)
            #expect(reasons.first?.hasPrefix(expected) == true, "\(reasons)")
        }
    }

    static func domain(_ name: String, _ level: TrustLevel, running: Bool = true) -> DomainVerdict {
        DomainVerdict(uuid: "00000000-0000-0000-0000-00000000000\(name.count)", name: name, domid: 1, running: running,
                      verdict: Verdict(level: level, reasons: level == .trusted ? [] : ["\(name) is \(level)"]))
    }

    @Test func exitStatusNeedsThePlatformAndEveryDecisiveVMTrusted() {
        let trusted = Verdict(level: .trusted, reasons: [])
        let web = Self.domain("web", .trusted), db = Self.domain("db", .untrusted), gone = Self.domain("old", .untrusted, running: false)
        // Every running VM decides; a stopped one does not.
        #expect(AttestationReport.decide(platform: trusted, domains: [web, gone], requested: []).0)
        #expect(!AttestationReport.decide(platform: trusted, domains: [web, db], requested: []).0)
        // A platform that is not trusted decides alone.
        #expect(!AttestationReport.decide(platform: Verdict(level: .unknown, reasons: ["x"]), domains: [web], requested: []).0)
        // Requested VMs only (by name or UUID), stopped or not.
        #expect(AttestationReport.decide(platform: trusted, domains: [web, db], requested: ["web"]).0)
        #expect(AttestationReport.decide(platform: trusted, domains: [web, db], requested: [web.uuid]).0)
        #expect(!AttestationReport.decide(platform: trusted, domains: [web, gone], requested: ["old"]).0)
        // A requested VM the log does not have: unknown, named, listed.
        let (ok, all) = AttestationReport.decide(platform: trusted, domains: [web], requested: ["web", "mail"])
        #expect(!ok)
        let mail = all.first { $0.name == "mail" }
        #expect(mail?.verdict.level == .unknown)
        #expect(mail?.verdict.reasons == ["the VMV's log has no domain named mail"])
    }
}
