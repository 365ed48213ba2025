import TPMWire

/// Writes memory dumps in the two formats the readers take: a QEMU `dump-guest-memory` ELF
/// core and an `xl dump-core` file. The tests, the fuzz seeds and the benchmark make guests
/// with known contents this way; the readers' checks are exercised against what these write.
public enum DumpWriter {
    /// One block of guest-physical memory. `fileBytes` may be shorter than `size`: the rest
    /// is zeros that the file does not hold (`p_filesz < p_memsz`).
    public struct Block: Sendable {
        public var physicalStart: UInt64
        public var size: UInt64
        public var bytes: [UInt8]
        public init(physicalStart: UInt64, bytes: [UInt8], size: UInt64? = nil) {
            self.physicalStart = physicalStart
            self.bytes = bytes
            self.size = size ?? UInt64(bytes.count)
        }
    }

    /// A QEMU-style ELF core: ELF header, program headers (PT_NOTE, then one PT_LOAD per block),
    /// the notes (all NT_PRSTATUS, then all QEMU CPU states), then the blocks' bytes.
    public static func qemuELF(blocks: [Block], vcpus: [VCPURegisters]) -> [UInt8] {
        var notes = ByteWriter()
        for v in vcpus { note(&notes, name: "CORE", type: 1, descriptor: prstatus(v)) }
        for v in vcpus { note(&notes, name: "QEMU", type: 0, descriptor: qemuCPUState(v)) }
        let phnum = 1 + blocks.count
        let dataStart = UInt64(ELFFile.headerSize + phnum * ELFFile.programHeaderSize)
        var w = ByteWriter(capacity: Int(dataStart) + notes.bytes.count)
        elfHeader(&w, type: 4, phoff: UInt64(ELFFile.headerSize), phnum: UInt16(phnum), shoff: 0, shnum: 0, shstrndx: 0)
        programHeader(&w, type: ELFFile.ProgramHeader.note, offset: dataStart, paddr: 0,
                      filesz: UInt64(notes.bytes.count), memsz: UInt64(notes.bytes.count))
        var offset = dataStart + UInt64(notes.bytes.count)
        for b in blocks {
            programHeader(&w, type: ELFFile.ProgramHeader.load, offset: offset, paddr: b.physicalStart,
                          filesz: UInt64(b.bytes.count), memsz: b.size)
            offset += UInt64(b.bytes.count)
        }
        w.write(bytes: notes.bytes)
        for b in blocks { w.write(bytes: b.bytes) }
        return w.bytes
    }

    /// An `xl dump-core` file. `pages` are (frame, contents) pairs; for a PV dump the frame is
    /// the machine frame and `pseudoPhysical` gives each page's pfn.
    public static func xenCore(pages: [(frame: UInt64, bytes: [UInt8])], pv: Bool, vcpus: [VCPURegisters],
                               pseudoPhysical: [UInt64]? = nil, xenVersion: (UInt64, UInt64, String) = (4, 17, ".5")) -> [UInt8] {
        var notes = ByteWriter()
        note(&notes, name: "Xen", type: XenCoreDump.noteNone, descriptor: [])
        var header = ByteWriter()
        header.writeLE(pv ? XenCoreDump.magicPV : XenCoreDump.magicHVM)
        header.writeLE(UInt64(vcpus.count))
        header.writeLE(UInt64(pages.count))
        header.writeLE(UInt64(MappedFrames.pageSize))
        note(&notes, name: "Xen", type: XenCoreDump.noteHeader, descriptor: header.bytes)
        var version = ByteWriter()
        version.writeLE(xenVersion.0)
        version.writeLE(xenVersion.1)
        var extra = Array(xenVersion.2.utf8.prefix(15))
        extra += [UInt8](repeating: 0, count: 16 - extra.count)
        version.write(bytes: extra)
        version.write(bytes: [UInt8](repeating: 0, count: 144 + 1024 + 64 + 8))
        version.writeLE(UInt64(MappedFrames.pageSize))
        note(&notes, name: "Xen", type: XenCoreDump.noteXenVersion, descriptor: version.bytes)
        var format = ByteWriter()
        format.writeLE(UInt64(1))
        note(&notes, name: "Xen", type: XenCoreDump.noteFormatVersion, descriptor: format.bytes)

        var prstatus = [UInt8]()
        for v in vcpus { prstatus += xenContext(v) }
        var frameTable = ByteWriter()
        for (i, p) in pages.enumerated() {
            if pv {
                frameTable.writeLE(pseudoPhysical?[i] ?? UInt64(i))
                frameTable.writeLE(p.frame)
            } else {
                frameTable.writeLE(p.frame)
            }
        }
        let names = "\0.shstrtab\0.note.Xen\0.xen_prstatus\0.xen_pages\0" + (pv ? ".xen_p2m\0" : ".xen_pfn\0")
        let nameBytes = Array(names.utf8)
        func nameOffset(_ n: String) -> UInt32 {
            let target = Array((n + "\0").utf8)
            var i = 0
            while i + target.count <= nameBytes.count {
                if Array(nameBytes[i..<(i + target.count)]) == target && (i == 0 || nameBytes[i - 1] == 0) { return UInt32(i) }
                i += 1
            }
            return 0
        }
        // Layout: header, section headers, shstrtab, notes, prstatus, frame table, pages (page-aligned).
        let shnum = 6
        var offset = UInt64(ELFFile.headerSize + shnum * ELFFile.sectionHeaderSize)
        let strOff = offset; offset += UInt64(nameBytes.count)
        let noteOff = offset; offset += UInt64(notes.bytes.count)
        let prOff = offset; offset += UInt64(prstatus.count)
        let tableOff = offset; offset += UInt64(frameTable.bytes.count)
        let pageSize = UInt64(MappedFrames.pageSize)
        let pagesOff = (offset + pageSize - 1) / pageSize * pageSize
        var w = ByteWriter(capacity: Int(pagesOff) + pages.count * Int(pageSize))
        elfHeader(&w, type: 4, phoff: 0, phnum: 0, shoff: UInt64(ELFFile.headerSize), shnum: UInt16(shnum), shstrndx: 1)
        sectionHeader(&w, name: 0, type: 0, offset: 0, size: 0)
        sectionHeader(&w, name: nameOffset(".shstrtab"), type: ELFFile.SectionHeader.strtab, offset: strOff, size: UInt64(nameBytes.count))
        sectionHeader(&w, name: nameOffset(".note.Xen"), type: ELFFile.SectionHeader.note, offset: noteOff, size: UInt64(notes.bytes.count))
        sectionHeader(&w, name: nameOffset(".xen_prstatus"), type: 1, offset: prOff, size: UInt64(prstatus.count))
        sectionHeader(&w, name: nameOffset(pv ? ".xen_p2m" : ".xen_pfn"), type: 1, offset: tableOff, size: UInt64(frameTable.bytes.count))
        sectionHeader(&w, name: nameOffset(".xen_pages"), type: 1, offset: pagesOff, size: UInt64(pages.count) * pageSize)
        w.write(bytes: nameBytes)
        w.write(bytes: notes.bytes)
        w.write(bytes: prstatus)
        w.write(bytes: frameTable.bytes)
        w.write(bytes: [UInt8](repeating: 0, count: Int(pagesOff - offset)))
        for p in pages {
            w.write(bytes: p.bytes.prefix(Int(pageSize)))
            if p.bytes.count < Int(pageSize) { w.write(bytes: [UInt8](repeating: 0, count: Int(pageSize) - p.bytes.count)) }
        }
        return w.bytes
    }

    static func elfHeader(_ w: inout ByteWriter, type: UInt16, phoff: UInt64, phnum: UInt16, shoff: UInt64, shnum: UInt16, shstrndx: UInt16) {
        w.write(bytes: [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8))
        w.writeLE(type)
        w.writeLE(QEMUDump.emX86_64)
        w.writeLE(UInt32(1))
        w.writeLE(UInt64(0))                 // e_entry
        w.writeLE(phoff)
        w.writeLE(shoff)
        w.writeLE(UInt32(0))                 // e_flags
        w.writeLE(UInt16(ELFFile.headerSize))
        w.writeLE(UInt16(phnum == 0 ? 0 : ELFFile.programHeaderSize))
        w.writeLE(phnum)
        w.writeLE(UInt16(shnum == 0 ? 0 : ELFFile.sectionHeaderSize))
        w.writeLE(shnum)
        w.writeLE(shstrndx)
    }

    static func programHeader(_ w: inout ByteWriter, type: UInt32, offset: UInt64, paddr: UInt64, filesz: UInt64, memsz: UInt64) {
        w.writeLE(type)
        w.writeLE(UInt32(0))
        w.writeLE(offset)
        w.writeLE(UInt64(0))                 // p_vaddr: QEMU writes 0 without paging
        w.writeLE(paddr)
        w.writeLE(filesz)
        w.writeLE(memsz)
        w.writeLE(UInt64(0))
    }

    static func sectionHeader(_ w: inout ByteWriter, name: UInt32, type: UInt32, offset: UInt64, size: UInt64) {
        w.writeLE(name)
        w.writeLE(type)
        w.writeLE(UInt64(0))                 // sh_flags
        w.writeLE(UInt64(0))                 // sh_addr
        w.writeLE(offset)
        w.writeLE(size)
        w.writeLE(UInt32(0))
        w.writeLE(UInt32(0))
        w.writeLE(UInt64(0))
        w.writeLE(UInt64(0))
    }

    static func note(_ w: inout ByteWriter, name: String, type: UInt32, descriptor: [UInt8]) {
        let n = Array(name.utf8) + [0]
        w.writeLE(UInt32(n.count))
        w.writeLE(UInt32(descriptor.count))
        w.writeLE(type)
        w.write(bytes: n)
        w.write(bytes: [UInt8](repeating: 0, count: (4 - n.count % 4) % 4))
        w.write(bytes: descriptor)
        w.write(bytes: [UInt8](repeating: 0, count: (4 - descriptor.count % 4) % 4))
    }

    /// x86-64 `elf_prstatus`: 112 bytes of header (pr_pid at 32), 27 registers, 8 of padding.
    static func prstatus(_ v: VCPURegisters) -> [UInt8] {
        var w = ByteWriter()
        w.write(bytes: [UInt8](repeating: 0, count: 32))
        w.writeLE(UInt32(v.index))
        w.write(bytes: [UInt8](repeating: 0, count: 76))
        var regs = [UInt64](repeating: 0, count: 27)
        regs[16] = v.rip ?? 0
        regs[17] = UInt64(v.cs ?? 0)
        regs[19] = v.rsp ?? 0
        for r in regs { w.writeLE(r) }
        w.writeLE(UInt64(0))
        return w.bytes
    }

    /// QEMU's `QEMUCPUState` version 1 with `kernel_gs_base` (440 bytes).
    static func qemuCPUState(_ v: VCPURegisters) -> [UInt8] {
        var w = ByteWriter()
        w.writeLE(UInt32(1))
        w.writeLE(UInt32(440))
        var gp = [UInt64](repeating: 0, count: 18)
        gp[6] = v.rsp ?? 0
        gp[16] = v.rip ?? 0
        for r in gp { w.writeLE(r) }
        for s in 0..<10 {
            w.writeLE(UInt32(s == 0 ? UInt32(v.cs ?? 0) : 0))
            w.write(bytes: [UInt8](repeating: 0, count: 20))
        }
        for c in [v.cr0, 0, v.cr2 ?? 0, v.cr3, v.cr4] { w.writeLE(c) }
        w.writeLE(UInt64(0))
        return w.bytes
    }

    /// An x86-64 `vcpu_guest_context` with the fields the reader uses.
    static func xenContext(_ v: VCPURegisters) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: XenCoreDump.vcpuContextSize)
        func put(_ value: UInt64, _ offset: Int, _ size: Int = 8) {
            for i in 0..<size { c[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        put(v.online ? XenCoreDump.vgcfOnline : 0, XenCoreDump.contextFlagsOffset)
        put(v.rip ?? 0, XenCoreDump.contextRIPOffset)
        put(UInt64(v.cs ?? 0), XenCoreDump.contextCSOffset, 2)
        put(v.rsp ?? 0, XenCoreDump.contextRSPOffset)
        let ctrl = [v.cr0, v.userCR3 ?? 0, v.cr2 ?? 0, v.cr3, v.cr4]
        for (i, value) in ctrl.enumerated() { put(value, XenCoreDump.contextCtrlRegOffset + 8 * i) }
        return c
    }
}
