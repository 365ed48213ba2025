import Foundation
import Testing
import TPMWire
@testable import Introspection

/// A small Linux-shaped kernel in a synthetic guest: text on a 2 MiB page plus a 4 KiB tail,
/// a hole, read-only data with the 6.1 placeholder banner and the real one, then writable data.
struct SyntheticKernel {
    static let banner = "Linux version 6.1.0-99-amd64 (builder@example.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2030-01-01)"
    static let placeholder = "Linux version 6.1.0-99-amd64 (builder@example.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) # SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2030-01-01)"
    static let linkText: UInt64 = 0xffff_ffff_8100_0000

    var guest: SyntheticGuest
    let slide: UInt64
    var text: UInt64 { Self.linkText + slide }
    var etext: UInt64 { text + 0x20_2d32 }           // the tail's last page is partly text
    var rodata: UInt64 { text + 0x40_0000 }
    var endRodata: UInt64 { rodata + 0x3a00 }
    var banner: UInt64 { rodata + 0x1900 }
    static let textPhysical: UInt64 = 0x20_0000
    static let rodataPhysical: UInt64 = 0x41_0000
    /// Not right after the 2 MiB page, so that the walker keeps two physical runs.
    static let tailPhysical: UInt64 = 0x40_8000

    init(levels: Int = 4, slide: UInt64 = 0x2a0_0000, gapWritable: Bool = false) {
        self.slide = slide
        guest = SyntheticGuest(levels: levels, memoryBytes: 8 << 20)
        let text = Self.linkText + slide
        guest.map(text, to: Self.textPhysical, size: 2 << 20, pageSize: 2 << 20, rights: .text)
        guest.map(text + 0x20_0000, to: Self.tailPhysical, size: 0x3000, rights: .text)
        if gapWritable { guest.map(text + 0x20_3000, to: 0x50_0000, size: 0x1000, rights: .data) }
        guest.map(text + 0x40_0000, to: Self.rodataPhysical, size: 0x4000, rights: .rodata)
        guest.map(text + 0x60_0000, to: 0x42_0000, size: 0x1000, rights: .data)
        // Text bytes: something recognisable per page, so that pages hash differently.
        for page in 0..<515 {
            let physical = page < 512 ? Self.textPhysical + UInt64(page) * 0x1000 : Self.tailPhysical + UInt64(page - 512) * 0x1000
            guest.write(Array(repeating: UInt8(truncatingIfNeeded: page), count: 16) + [0xc3], at: physical)
        }
        guest.write(Array((Self.placeholder + "\n\0").utf8), at: Self.rodataPhysical + 0x1a0)
        guest.write(Array((Self.banner + "\n\0").utf8), at: Self.rodataPhysical + 0x1900)
        // A format string that starts like a banner but is not one.
        guest.write(Array("Linux version %s (%s)\n\0".utf8), at: Self.rodataPhysical + 0x100)
    }

    /// System.map text at link-time addresses (what `nm vmlinux | sort` gives).
    func systemMap(endRodataShift: UInt64 = 0) -> String {
        [
            (Self.linkText, "T", "_text"), (Self.linkText, "T", "_stext"), (etext - slide, "T", "_etext"),
            (rodata - slide, "D", "__start_rodata"), (banner - slide, "D", "linux_banner"),
            (endRodata - slide + endRodataShift, "D", "__end_rodata"), (0xffff_ffff_8120_0000, "t", "some_function"),
        ].map { hex64($0.0) + " \($0.1) \($0.2)" }.joined(separator: "\n") + "\n"
    }
}

@Suite struct KernelLocatorTests {
    @Test(arguments: [4, 5]) func findsTheKernelWithoutSymbols(levels: Int) throws {
        let k = SyntheticKernel(levels: levels)
        let (dump, file) = try openQEMUDump(k.guest)
        _ = file
        let found = try KernelLocator.locate(in: dump)
        #expect(found.banner.release == "6.1.0-99-amd64")
        #expect(found.banner.text == SyntheticKernel.banner)
        #expect(found.bannerAddress == k.banner)
        #expect(found.slide == Int64(k.slide))
        #expect(found.physicalSlide == Int64(SyntheticKernel.textPhysical) - 0x100_0000)
        #expect(found.mode.levels == levels)
        #expect(found.text.virtualStart == k.text && found.text.virtualEnd == k.text + 0x20_3000)
        #expect(found.text.pageCount == 515)
        #expect(found.text.runs.map(\.physicalStart) == [SyntheticKernel.textPhysical, SyntheticKernel.tailPhysical])
        #expect(found.rodata.virtualStart == k.rodata && found.rodata.virtualEnd == k.rodata + 0x4000)
        #expect(found.rodata.frames == [0x410, 0x411, 0x412, 0x413])
        #expect(!found.viaKPTIKernelRoot && found.symbols == nil)
    }

    @Test func writableGapAfterTextIsNotPartOfIt() throws {
        let k = SyntheticKernel(gapWritable: true)
        let (dump, file) = try openQEMUDump(k.guest)
        _ = file
        let found = try KernelLocator.locate(in: dump)
        #expect(found.text.virtualEnd == k.text + 0x20_3000)
        #expect(found.rodata.virtualStart == k.rodata)
    }

    @Test func findsTheKernelFromAKPTIUserPageTable() throws {
        var k = SyntheticKernel()
        let kernelPGD: UInt64 = 0x60_0000, userPGD = kernelPGD + 0x1000
        for i in 0..<512 {
            let e = k.guest.entry(at: k.guest.root + UInt64(i * 8))
            k.guest.setEntry(at: kernelPGD + UInt64(i * 8), e)
        }
        // The vCPU was in user space (CPL 3) on the user PGD, which maps nothing of the kernel.
        var regs = k.guest.registers(cr3LowBits: 0x801, pcid: true, rootOverride: userPGD)
        regs.cs = 0x33
        let (dump, file) = try openQEMUDump(k.guest, vcpus: [regs])
        _ = file
        let found = try KernelLocator.locate(in: dump)
        #expect(found.viaKPTIKernelRoot && found.root.tableAddress == kernelPGD && found.root.pcid == 0x801)
        #expect(found.slide == Int64(k.slide))
        // The same dump with KPTI's kernel half cleared too: nothing to find, and it says why.
        for i in 256..<512 { k.guest.setEntry(at: kernelPGD + UInt64(i * 8), 0) }
        let (empty, file2) = try openQEMUDump(k.guest, vcpus: [regs])
        _ = file2
        let e = #expect(throws: LocatorError.self) { try KernelLocator.locate(in: empty) }
        #expect(e?.code == .noImage && e?.reason.contains("no read-only executable mapping") == true)
    }

    @Test func triesEveryOnlineVCPU() throws {
        let k = SyntheticKernel()
        let bad = k.guest.registers(index: 0, rootOverride: 0x70_0000)   // an empty table
        var offline = k.guest.registers(index: 1)
        offline.online = false
        let good = k.guest.registers(index: 2)
        // An HVM dump-core carries the online flag; the offline vCPU's good root must be skipped.
        var pages: [(frame: UInt64, bytes: [UInt8])] = []
        for i in 0..<(k.guest.memory.count / 4096) {
            pages.append((UInt64(i), Array(k.guest.memory[(i * 4096)..<((i + 1) * 4096)])))
        }
        let file = try TempFile(DumpWriter.xenCore(pages: pages, pv: false, vcpus: [bad, offline, good]))
        let dump = try XenCoreDump(path: file.path)
        let found = try KernelLocator.locate(in: dump)
        #expect(found.vcpu == 2 && found.slide == Int64(k.slide))
        let e = #expect(throws: LocatorError.self) { try KernelLocator.locate(in: dump, vcpu: 0) }
        #expect(e?.reason.contains("vCPU 0") == true)
        // --cr3 overrides a vCPU's root.
        #expect(try KernelLocator.locate(in: dump, vcpu: 0, cr3: k.guest.root).vcpu == 0)
    }

    @Test func refusesAKernelWithoutStrictRWX() throws {
        var g = SyntheticGuest(memoryBytes: 8 << 20)
        g.map(0xffff_ffff_8100_0000, to: 0x20_0000, size: 4 << 20, pageSize: 2 << 20,
              rights: .init(writable: true, executable: true))
        let (dump, file) = try openQEMUDump(g)
        _ = file
        let e = #expect(throws: LocatorError.self) { try KernelLocator.locate(in: dump) }
        #expect(e?.reason.contains("strict kernel RWX") == true)
    }

    @Test func saysWhenThereIsNoBanner() throws {
        var k = SyntheticKernel()
        k.guest.write(Array(repeating: 0, count: 0x3000), at: SyntheticKernel.rodataPhysical)
        let (dump, file) = try openQEMUDump(k.guest)
        _ = file
        let e = #expect(throws: LocatorError.self) { try KernelLocator.locate(in: dump) }
        #expect(e?.reason.contains("no \"Linux version\" banner") == true)
    }

    @Test func confirmsAndRefinesWithASystemMap() throws {
        let k = SyntheticKernel()
        let (dump, file) = try openQEMUDump(k.guest)
        _ = file
        let symbols = try KernelSymbols(systemMap: k.systemMap(), origin: "System.map test")
        #expect(symbols.addresses["_stext"] == SyntheticKernel.linkText && symbols.addresses.count == 6)
        let found = try KernelLocator.locate(in: dump, symbols: symbols)
        #expect(found.slide == Int64(k.slide))
        #expect(found.text.symbolRange == k.text..<k.etext)
        #expect(found.rodata.symbolRange == k.rodata..<k.endRodata)
        #expect(found.symbols?.origin == "System.map test")

        // A map of another build: __end_rodata two pages further.
        let wrong = try KernelSymbols(systemMap: k.systemMap(endRodataShift: 0x2000), origin: "System.map other")
        let e = #expect(throws: LocatorError.self) { try KernelLocator.locate(in: dump, symbols: wrong) }
        #expect(e?.code == .symbolMismatch)
        #expect(e?.reason.contains("end of read-only data") == true)
    }

    @Test func rejectsDebiansStubAndMalformedMaps() {
        let stub = "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n"
        let e = #expect(throws: WireError.self) { try KernelSymbols(systemMap: stub, origin: "System.map-6.1.0-56-amd64") }
        #expect(e?.reason.contains("Debian's stub") == true)
        let bad = #expect(throws: WireError.self) { try KernelSymbols(systemMap: "ffffffff81000000 T _stext\nzz T x\n", origin: "m") }
        #expect(bad?.reason.contains("line 2") == true)
        #expect(throws: WireError.self) { try KernelSymbols(systemMap: "ffffffff81000000 _stext\n", origin: "m") }
    }

    @Test func readsSymbolsBannerAndBuildIDFromVmlinux() throws {
        let k = SyntheticKernel()
        let link = { (v: UInt64) in v - k.slide }
        let elf = VmlinuxWriter.make(symbols: [
            ("_stext", SyntheticKernel.linkText), ("_etext", link(k.etext)), ("__start_rodata", link(k.rodata)),
            ("__end_rodata", link(k.endRodata)), ("linux_banner", link(k.banner)), ("unrelated", 0x1234),
        ], rodataAddress: link(k.rodata), rodata: {
            var r = [UInt8](repeating: 0, count: 0x3a00)
            let b = Array((SyntheticKernel.banner + "\n\0").utf8)
            r.replaceSubrange(0x1900..<(0x1900 + b.count), with: b)
            return r
        }(), buildID: [0xde, 0xad, 0xbe, 0xef])
        let file = try TempFile(elf, name: "vmlinux")
        let symbols = try KernelSymbols(vmlinuxPath: file.path)
        #expect(symbols.addresses["_etext"] == link(k.etext) && symbols.addresses["unrelated"] == nil)
        #expect(symbols.banner == SyntheticKernel.banner + "\n")
        #expect(symbols.buildID == "deadbeef")
        let (dump, dumpFile) = try openQEMUDump(k.guest)
        _ = dumpFile
        #expect(try KernelLocator.locate(in: dump, symbols: symbols).symbols?.buildID == "deadbeef")

        // A stripped image has no symbol table.
        let stripped = try TempFile(VmlinuxWriter.make(symbols: nil, rodataAddress: 0, rodata: [], buildID: nil), name: "vmlinux")
        let e = #expect(throws: WireError.self) { try KernelSymbols(vmlinuxPath: stripped.path) }
        #expect(e?.reason.contains("no symbol table") == true)
    }
}

/// A minimal vmlinux: ELF64 ET_EXEC with .rodata, .symtab, .strtab, .note.gnu.build-id, .shstrtab.
enum VmlinuxWriter {
    static func make(symbols: [(String, UInt64)]?, rodataAddress: UInt64, rodata: [UInt8], buildID: [UInt8]?) -> [UInt8] {
        var strtab: [UInt8] = [0]
        var symtab = ByteWriter()
        symtab.write(bytes: [UInt8](repeating: 0, count: 24))
        for (name, value) in symbols ?? [] {
            symtab.writeLE(UInt32(strtab.count))
            strtab += Array(name.utf8) + [0]
            symtab.write(bytes: [0x11, 0])          // STB_GLOBAL | STT_OBJECT, st_other
            symtab.writeLE(UInt16(1))
            symtab.writeLE(value)
            symtab.writeLE(UInt64(0))
        }
        var note = ByteWriter()
        if let id = buildID {
            note.writeLE(UInt32(4)); note.writeLE(UInt32(id.count)); note.writeLE(UInt32(3))
            note.write(bytes: Array("GNU\0".utf8)); note.write(bytes: id)
        }
        let names = Array("\0.rodata\0.symtab\0.strtab\0.note.gnu.build-id\0.shstrtab\0".utf8)
        // (name offset, type, address, bytes, link)
        var sections: [(UInt32, UInt32, UInt64, [UInt8], UInt32)] = [(0, 0, 0, [], 0), (1, 1, rodataAddress, rodata, 0)]
        if symbols != nil {
            sections.append((9, ELFFile.SectionHeader.symtab, 0, symtab.bytes, 3))
            sections.append((17, ELFFile.SectionHeader.strtab, 0, strtab, 0))
        } else {
            sections.append((9, 1, 0, [], 0))
            sections.append((17, 1, 0, [], 0))
        }
        sections.append((25, ELFFile.SectionHeader.note, 0, note.bytes, 0))
        sections.append((44, ELFFile.SectionHeader.strtab, 0, names, 0))
        var offset = UInt64(64 + sections.count * 64)
        var w = ByteWriter()
        DumpWriter.elfHeader(&w, type: 2, phoff: 0, phnum: 0, shoff: 64, shnum: UInt16(sections.count), shstrndx: UInt16(sections.count - 1))
        for s in sections {
            w.writeLE(s.0); w.writeLE(s.1); w.writeLE(UInt64(0)); w.writeLE(s.2)
            w.writeLE(s.3.isEmpty ? 0 : offset); w.writeLE(UInt64(s.3.count)); w.writeLE(s.4); w.writeLE(UInt32(0))
            w.writeLE(UInt64(0)); w.writeLE(UInt64(s.1 == ELFFile.SectionHeader.symtab ? 24 : 0))
            offset += UInt64(s.3.count)
        }
        for s in sections { w.write(bytes: s.3) }
        return w.bytes
    }
}
