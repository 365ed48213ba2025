import Testing
@testable import Introspection

/// A 64-bit Xen PV kernel runs in ring 3, so Xen has every kernel mapping carry the user bit.
/// The locator must still find it in a machine-frame source (a PV domain), and must not take
/// user mappings for the kernel anywhere else. (Seen on Debian's 6.1 under Xen 4.17:
/// `vmv introspect translate --domain guest-pv 0xffffffff81000000` gives `ur-x`.)
@Suite struct PVKernelLocatorTests {
    /// A dump read as if its frames were machine frames: what a PV domain's source reports.
    final class MachineFrames: GuestMemorySource, @unchecked Sendable {
        let inner: QEMUDump
        init(_ inner: QEMUDump) { self.inner = inner }
        var domain: DomainIdentity { DomainIdentity(kind: .pv, origin: "test") }
        var frameSpace: FrameSpace { .machine }
        func vcpus() throws(GuestMemoryError) -> [VCPURegisters] { try inner.vcpus() }
        func withMappedFrames<R>(_ frames: [UInt64], _ body: (MappedFrames) throws -> R) throws -> R {
            try inner.withMappedFrames(frames, body)
        }
    }

    static let text: UInt64 = 0xffff_ffff_8100_0000
    static let banner = "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2"

    /// Text and read-only data mapped as Xen PV maps them: user bit set everywhere.
    func pvShapedGuest() -> SyntheticGuest {
        var g = SyntheticGuest(memoryBytes: 8 << 20)
        g.map(Self.text, to: 0x20_0000, size: 0x4000, rights: .init(user: true, executable: true, global: true))
        g.map(Self.text + 0x40_0000, to: 0x41_0000, size: 0x2000, rights: .init(user: true, global: true))
        g.map(Self.text + 0x60_0000, to: 0x42_0000, size: 0x1000, rights: .init(writable: true, user: true, global: true))
        g.write(Array((Self.banner + "\n\0").utf8), at: 0x41_0100)
        return g
    }

    @Test func findsAPVKernelWhoseMappingsCarryTheUserBit() throws {
        let (dump, file) = try openQEMUDump(pvShapedGuest())
        _ = file
        let found = try KernelLocator.locate(in: MachineFrames(dump))
        #expect(found.banner.release == "6.1.0-56-amd64")
        #expect(found.slide == 0)
        #expect(found.text.virtualStart == Self.text && found.text.virtualEnd == Self.text + 0x4000)
        #expect(found.rodata.virtualStart == Self.text + 0x40_0000 && found.rodata.pageCount == 2)
    }

    @Test func userMappingsAreNotAKernelOutsidePV() throws {
        let (dump, file) = try openQEMUDump(pvShapedGuest())
        _ = file
        #expect(throws: LocatorError.self) { try KernelLocator.locate(in: dump) }
    }
}
