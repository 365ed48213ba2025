import Testing
@testable import TPMWire

@Suite struct LaunchEventTests {
    static let digest = String(repeating: "ab", count: 32)

    @Test func parsesEveryKindTheBuilderWrites() throws {
        let policy = try LaunchEvent(parsing: "vmv-launch/1 xsm-policy sha256=\(Self.digest) size=15230 file=xenpolicy-4.17.5")
        #expect(policy.kind == .xsmPolicy)
        #expect(policy.subject == "launch.xsm-policy")
        #expect(policy.sha256 == [UInt8](repeating: 0xab, count: 32))
        #expect(policy.size == 15230)
        #expect(policy.file == "xenpolicy-4.17.5")
        #expect(policy.text == Array("vmv-launch/1 xsm-policy sha256=\(Self.digest) size=15230 file=xenpolicy-4.17.5".utf8))

        // fields in any order
        let config = try LaunchEvent(parsing: "vmv-launch/1 domp-config file=domp.cfg size=7 sha256=\(Self.digest.uppercased())")
        #expect(config.kind == .dompConfig && config.size == 7 && config.sha256?.first == 0xab)

        let handover = try LaunchEvent(parsing: "vmv-launch/1 handover tpm=vmv")
        #expect(handover.kind == .handover && handover.fields == ["tpm": "vmv"] && handover.sha256 == nil)
        #expect(try LaunchEvent(parsing: "vmv-launch/1 xsm-policy-load-failed").fields.isEmpty)
    }

    /// Each hostile text is refused with the field named (and never traps).
    @Test(arguments: [
        ("", "empty"),
        ("vmv-launch/2 handover tpm=vmv", "does not start"),
        ("vmv-launch/1", "no kind"),
        ("vmv-launch/1 rootkit", "event.kind"),
        ("vmv-launch/1 handover", "handover.tpm: missing"),
        ("vmv-launch/1 handover tpm=dom1", "handover.tpm"),
        ("vmv-launch/1 handover tpm=vmv tpm=vmv", "given twice"),
        ("vmv-launch/1 handover tpm=vmv extra=1", "unknown field 'extra'"),
        ("vmv-launch/1 handover tpm", "not key=value"),
        ("vmv-launch/1 handover  tpm=vmv", "two spaces"),
        ("vmv-launch/1 handover tpm=vmv ", "trailing space"),
        ("vmv-launch/1 handover tpm=", "handover.tpm: empty"),
        ("vmv-launch/1 xsm-policy-load-failed tpm=vmv", "it has none"),
        ("vmv-launch/1 xsm-policy sha256=abcd size=1 file=p", "sha256: not 64 hex"),
        ("vmv-launch/1 xsm-policy sha256=\(digest) size=-1 file=p", "size"),
        ("vmv-launch/1 xsm-policy sha256=\(digest) size=99999999999999999999 file=p", "size"),
        ("vmv-launch/1 xsm-policy sha256=\(digest) size=1", "xsm-policy.file: missing"),
        ("vmv-launch/1 handover tpm=vmv\n", "not printable"),
    ])
    func refusesHostileText(_ text: String, _ named: String) {
        #expect {
            try LaunchEvent(parsing: text)
        } throws: { error in
            (error as? WireError)?.reason.contains(named) == true
        }
    }

    @Test func refusesMoreThanPCREventTakes() {
        let long = "vmv-launch/1 domp-config sha256=\(Self.digest) size=1 file=" + String(repeating: "f", count: 1000)
        #expect(throws: WireError(.sizeTooLarge, "launch event: \(long.utf8.count) bytes, at most 1024 (TPM2_PCR_Event)")) {
            try LaunchEvent(parsing: long)
        }
        #expect(throws: WireError.self) { try LaunchEvent(parsing: [0x76, 0x00, 0xff]) }
    }
}
