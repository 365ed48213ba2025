import Testing
@testable import Introspection

@Suite struct PageWalkerTests {
    static let mib: UInt64 = 1 << 20

    /// A 4 MiB guest with a 4 KiB, a 2 MiB and a 1 GiB mapping in the kernel half and one user page.
    func guest(levels: Int) -> SyntheticGuest {
        var g = SyntheticGuest(levels: levels, memoryBytes: 4 << 20)
        g.map(0xffff_ffff_8100_0000, to: 0x20_0000, size: 2 * Self.mib, pageSize: 2 * Self.mib, rights: .text)
        g.map(0xffff_ffff_8120_0000, to: 0x1000, size: 0x2000, rights: .rodata)
        g.map(0xffff_8880_0000_0000, to: 0x4000_0000, size: 1 << 30, pageSize: 1 << 30, rights: .data)
        g.map(0x40_0000, to: 0x3000, size: 0x1000, rights: .init(user: true, executable: true))
        return g
    }

    @Test(arguments: [4, 5]) func translatesEveryPageSize(levels: Int) throws {
        let (dump, file) = try openQEMUDump(guest(levels: levels))
        _ = file
        let w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        #expect(w.mode.levels == levels)

        let big = try w.translate(0xffff_ffff_8112_3456)
        #expect(big.physicalAddress == 0x32_3456)
        #expect(big.pageSize == 2 * Self.mib && big.level == .pd)
        #expect(big.permissions == PagePermissions(writable: false, user: false, executable: true, global: true))

        let small = try w.translate(0xffff_ffff_8120_1abc)
        #expect(small.physicalAddress == 0x2abc && small.level == .pt && !small.permissions.executable)

        let huge = try w.translate(0xffff_8880_1234_5678)
        #expect(huge.physicalAddress == 0x5234_5678 && huge.level == .pdpt && huge.permissions.writable)

        let user = try w.translate(0x40_0010)
        #expect(user.physicalAddress == 0x3010 && user.permissions.user && user.permissions.executable)
    }

    @Test(arguments: [4, 5]) func namesTheLevelThatIsNotPresent(levels: Int) throws {
        var g = guest(levels: levels)
        // Clear one entry at each level on distinct paths and check that level is named.
        let top: PageTableLevel = levels == 5 ? .pml5 : .pml4
        var cases: [(UInt64, PageTableLevel)] = [
            (0xffff_ffff_8120_3000, .pt),             // next 4 KiB page of the PT: empty
            (0xffff_ffff_8160_0000, .pd),             // a PD slot beyond the mapped ones
            (0xffff_ffff_0000_0000, .pdpt),           // another 1 GiB slot of the PDPT
            (0xffff_9000_0000_0000, .pml4),           // another 512 GiB slot
        ]
        if levels == 5 { cases.append((0xff10_0000_0000_0000, .pml5)) }
        else { cases.append((0xffff_c000_0000_0000, top)) }
        _ = g.entryAddress(for: 0xffff_ffff_8120_0000, level: .pt)
        let (dump, file) = try openQEMUDump(g)
        _ = file
        let w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        for (va, level) in cases {
            let error = #expect(throws: TranslationError.self) { try w.translate(va) }
            #expect(error?.level == level, "0x\(String(va, radix: 16))")
            #expect(error?.reason == .notPresent)
            #expect(error?.description.contains("\(level) entry") == true)
        }
    }

    @Test func rejectsReservedBitsAtEachLevel() throws {
        var g = guest(levels: 4)
        let va: UInt64 = 0xffff_ffff_8120_0000
        // PS in a PML4 entry is reserved.
        let pml4e = g.entryAddress(for: va, level: .pml4)
        let good = g.entry(at: pml4e)
        g.setEntry(at: pml4e, good | X86.pageSize)
        var (dump, file) = try openQEMUDump(g)
        var w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        var e = #expect(throws: TranslationError.self) { try w.translate(va) }
        #expect(e?.level == .pml4 && e?.reason == .reservedBits(X86.pageSize))
        g.setEntry(at: pml4e, good)

        // Bits 20:13 of a 2 MiB page are reserved.
        let pde = g.entryAddress(for: 0xffff_ffff_8100_0000, level: .pd)
        g.setEntry(at: pde, g.entry(at: pde) | 0x2000)
        (dump, file) = try openQEMUDump(g)
        w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        e = #expect(throws: TranslationError.self) { try w.translate(0xffff_ffff_8100_0000) }
        #expect(e?.level == .pd && e?.reason == .reservedBits(0x2000))

        // Bits 29:13 of a 1 GiB page are reserved.
        let pdpte = g.entryAddress(for: 0xffff_8880_0000_0000, level: .pdpt)
        g.setEntry(at: pdpte, g.entry(at: pdpte) | 0x1000_0000)
        (dump, file) = try openQEMUDump(g)
        w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        e = #expect(throws: TranslationError.self) { try w.translate(0xffff_8880_0000_0000) }
        #expect(e?.level == .pdpt && e?.reason == .reservedBits(0x1000_0000))

        // With EFER.NXE clear, XD is reserved; above MAXPHYADDR, address bits are.
        var regs = try dump.vcpus()[0]
        regs.efer = X86.eferLMA | X86.eferLME
        w = try PageWalker(source: dump, registers: regs)
        e = #expect(throws: TranslationError.self) { try w.translate(0xffff_ffff_8120_0000) }
        #expect(e?.level == .pt && e?.reason == .reservedBits(X86.executeDisable))
        let narrow = PagingMode(levels: 4, noExecute: true, physicalAddressBits: 30)
        w = PageWalker(source: dump, mode: narrow, root: PageTableRoot(cr3: g.root, mode: narrow))
        e = #expect(throws: TranslationError.self) { try w.translate(0xffff_8880_0000_0000) }
        #expect(e?.level == .pdpt && e?.reason == .reservedBits(0x4000_0000 | 0x1000_0000))
        _ = file
    }

    @Test func nonCanonicalAndUnreadable() throws {
        var g = guest(levels: 4)
        // A PD entry pointing to a page table beyond the guest's memory.
        let pde = g.entryAddress(for: 0xffff_ffff_8140_0000, level: .pd)
        g.setEntry(at: pde, 0x7000_0000 | X86.present | X86.writable)
        let (dump, file) = try openQEMUDump(g)
        _ = file
        let w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        let nc = #expect(throws: TranslationError.self) { try w.translate(0x0000_8000_0000_0000) }
        #expect(nc?.reason == .nonCanonical(bits: 48))
        let un = #expect(throws: TranslationError.self) { try w.translate(0xffff_ffff_8140_0000) }
        #expect(un?.level == .pt)
        if case .tableUnreadable(let fe) = un?.reason { #expect(fe.frame == 0x70000 && fe.code == .notPresent) }
        else { Issue.record("expected an unreadable table, got \(String(describing: un))") }
        // 5-level: the same address is canonical.
        #expect(PagingMode(levels: 5).isCanonical(0x0000_8000_0000_0000))
    }

    @Test func pcidAndKPTIRoots() throws {
        var g = guest(levels: 4)
        // A KPTI pair: kernel PGD at an 8 KiB-aligned page, user PGD the page above, mapping only
        // the user page and nothing of the kernel half.
        let kernelPGD: UInt64 = 0x10_0000
        let userPGD = kernelPGD + 0x1000
        for i in 0..<512 {
            let e = g.entry(at: g.root + UInt64(i * 8))
            g.setEntry(at: kernelPGD + UInt64(i * 8), e)
            if i < 256 { g.setEntry(at: userPGD + UInt64(i * 8), e) }
        }
        // User PCID 5 with the KPTI user bit (11), as Linux does with PCID on.
        let regs = g.registers(cr3LowBits: 0x805, pcid: true, rootOverride: userPGD)
        let (dump, file) = try openQEMUDump(g, vcpus: [regs])
        _ = file
        let w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        #expect(w.root.tableAddress == userPGD && w.root.pcid == 0x805)
        #expect(try w.translate(0x40_0000).physicalAddress == 0x3000)
        let e = #expect(throws: TranslationError.self) { try w.translate(0xffff_ffff_8100_0000) }
        #expect(e?.level == .pml4 && e?.reason == .notPresent)
        let kernelRoot = try #require(w.root.kptiKernelRoot)
        #expect(kernelRoot.tableAddress == kernelPGD)
        let kw = w.with(root: kernelRoot)
        #expect(try kw.translate(0xffff_ffff_8100_0000).physicalAddress == 0x20_0000)
        #expect(try kw.translate(0x40_0000).physicalAddress == 0x3000)
        // An even root has no KPTI partner.
        #expect(PageTableRoot(cr3: kernelPGD, mode: w.mode).kptiKernelRoot == nil)
    }

    @Test(arguments: [4, 5]) func enumeratesMergedAndClippedMappings(levels: Int) throws {
        var g = SyntheticGuest(levels: levels, memoryBytes: 4 << 20)
        // Three 4 KiB pages contiguous in both spaces merge; a fourth with other rights does not.
        g.map(0xffff_ffff_8100_0000, to: 0x10_0000, size: 0x3000, rights: .text)
        g.map(0xffff_ffff_8100_3000, to: 0x10_3000, size: 0x1000, rights: .rodata)
        g.map(0xffff_ffff_8120_0000, to: 0x20_0000, size: 2 * Self.mib, pageSize: 2 * Self.mib, rights: .rodata)
        let (dump, file) = try openQEMUDump(g)
        _ = file
        let w = try PageWalker(source: dump, registers: try dump.vcpus()[0])
        let all = try w.mappings(from: 0xffff_ffff_8000_0000, to: 0xffff_ffff_c000_0000)
        #expect(all.skipped.isEmpty)
        #expect(all.mappings.map(\.size) == [0x3000, 0x1000, 2 * Self.mib])
        #expect(all.mappings[0].virtualStart == 0xffff_ffff_8100_0000 && all.mappings[0].size == 0x3000)
        #expect(all.mappings[0].permissions.executable)
        // The rodata 4 KiB page at 0x...3000 is not virtually adjacent to the 2 MiB page: separate.
        let ro = try w.mappings(from: 0xffff_ffff_8100_3000, to: 0xffff_ffff_8130_0000)
        #expect(ro.mappings.map(\.size) == [0x1000, 0x10_0000])
        // Clipped: only the first MiB of the large page was asked for.
        #expect(ro.mappings[1].physicalStart == 0x20_0000 && ro.mappings[1].largestPage == 2 * Self.mib)
        // Starting inside the large page clips its physical start too.
        let mid = try w.mappings(from: 0xffff_ffff_8128_0000, to: 0xffff_ffff_8129_0000)
        #expect(mid.mappings.count == 1 && mid.mappings[0].physicalStart == 0x28_0000 && mid.mappings[0].size == 0x1_0000)
    }

    @Test func refusesModesItCannotWalk() {
        var r = VCPURegisters(index: 0, cr0: 0, cr3: 0x1000, cr4: X86.cr4PAE)
        #expect(throws: TranslationError.self) { try PagingMode(registers: r) }
        r.cr0 = X86.cr0PG
        r.cr4 = 0
        #expect(throws: TranslationError.self) { try PagingMode(registers: r) }
        r.cr4 = X86.cr4PAE
        r.efer = 0
        let e = #expect(throws: TranslationError.self) { try PagingMode(registers: r) }
        #expect(e?.description.contains("EFER.LMA") == true)
        r.efer = nil
        #expect(throws: Never.self) { try PagingMode(registers: r) }
    }
}
