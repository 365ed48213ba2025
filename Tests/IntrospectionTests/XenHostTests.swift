import Foundation
import Testing
@testable import Introspection

/// The Xen layer off Xen: the default test machine is not a Xen domain, so opening the
/// hypervisor must fail with a reason an operator can act on (the live side is checked by
/// scripts/test-xen.sh under real Xen).
@Suite struct XenHostOffXenTests {
    @Test func openingFailsWithNotOnXen() throws {
        let onXen = XenHost.privcmdPaths.contains { FileManager.default.fileExists(atPath: $0) }
        try #require(!onXen, "this test describes a machine without Xen; this one has privcmd")
        let error = #expect(throws: XenError.self) { try XenHost() }
        #expect(error?.code == .notOnXen)
        #expect(error?.description.contains("/dev/xen/privcmd") == true)
        #expect(error?.description.contains("dom0 or a privileged VMV domain") == true)
    }

    @Test func errnoMapsToCodes() {
        #expect(XenError.call("xc_domain_pause", domain: 3, errno: EACCES, "pausing").code == .permissionDenied)
        #expect(XenError.call("xc_domain_pause", domain: 3, errno: EPERM, "pausing").code == .permissionDenied)
        #expect(XenError.call("xc_domain_getinfolist", domain: 9, errno: ESRCH, "info").code == .noSuchDomain)
        let e = XenError.call("xc_vcpu_getcontext", domain: 7, errno: EINVAL, "vCPU 0 context")
        #expect(e.code == .callFailed)
        #expect(e.description == "Xen: xc_vcpu_getcontext (domain 7): vCPU 0 context: Invalid argument [errno 22]")
    }

    @Test func stateLettersMatchXlList() {
        let s: XenDomainInfo.State = [.running, .paused]
        #expect(s.xlLetters == "r-p---")
        #expect(XenDomainInfo.State(rawValue: 1 << 4).xlLetters == "-b----")
        #expect(XenDomainInfo.State(rawValue: 1 << 0 | 1 << 2).xlLetters == "---s-d")
    }

    @Test func registersDerivedFields() {
        var r = XenVCPURegisters(vcpu: 0, rip: 0, rsp: 0, rflags: 0, cr0: 0, cr2: 0, cr3: 0x1234_5000,
                                 cr4: 0, efer: 0, pageTableFrame: 0x12345, userPageTableFrame: nil,
                                 fsBase: 0, gsBaseKernel: 0, gsBaseUser: 0, online: true, cs: 0x10)
        #expect(r.pageTableAddress == 0x1234_5000)
        #expect(!r.fiveLevelPaging)
        r.cr4 = 1 << 12
        #expect(r.fiveLevelPaging)
    }
}
