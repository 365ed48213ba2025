import Testing
import TPMWire
@testable import Introspection

@Suite struct QEMUDumpTests {
    static let regs = VCPURegisters(index: 0, cr0: 0x8005_0033, cr2: 0x5e_22c0, cr3: 0x285_3000, cr4: 0x75_0ef0,
                                    rip: 0x42_ec36, rsp: 0x7ffe_eb0c_5570, cs: 0x33)

    func page(_ fill: UInt8) -> [UInt8] { [UInt8](repeating: fill, count: 4096) }

    @Test func readsSegmentsNotesAndZeroFill() throws {
        var second = Self.regs
        second.index = 1
        second.cr3 = 0x1234_5000
        let bytes = DumpWriter.qemuELF(blocks: [
            .init(physicalStart: 0, bytes: page(0xaa) + page(0xbb)),
            // 2 pages of memory, only 1 in the file: the second reads as zeros.
            .init(physicalStart: 0x10_0000, bytes: page(0xcc), size: 0x2000),
        ], vcpus: [Self.regs, second])
        let file = try TempFile(bytes)
        let dump = try QEMUDump(path: file.path)
        #expect(dump.physicalRanges == [0..<0x2000, 0x10_0000..<0x10_2000])
        let vcpus = try dump.vcpus()
        #expect(vcpus.count == 2)
        #expect(vcpus[0] == Self.regs)
        #expect(vcpus[1].cr3 == 0x1234_5000 && vcpus[1].index == 1)
        #expect(vcpus[0].privilegeLevel == 3)

        try dump.withMappedFrames([1, 0x100, 0x101, 0x2, 0x1_0000_0000_0000]) { m in
            let p0 = Array(try m.page(0))
            #expect(p0 == [UInt8](repeating: 0xbb, count: 4096))
            let p1 = Array(try m.page(1))
            #expect(p1 == [UInt8](repeating: 0xcc, count: 4096))
            let p2 = Array(try m.page(2))
            #expect(p2 == [UInt8](repeating: 0, count: 4096))
            let hole = #expect(throws: FrameError.self) { try m.page(3) }
            #expect(hole?.code == .notPresent && hole?.frame == 2)
            let absurd = #expect(throws: FrameError.self) { try m.page(4) }
            #expect(absurd?.code == .invalidFrame)
            #expect(m.failures.count == 2)
        }
        // Byte reads cross pages and segments' ends.
        #expect(try dump.read(physical: 0xffe, count: 4) == [0xaa, 0xaa, 0xbb, 0xbb])
        #expect(throws: FrameError.self) { try dump.read(physical: 0x1ffe, count: 4) }
    }

    @Test func assemblesAPageSplitAcrossSegments() throws {
        let bytes = DumpWriter.qemuELF(blocks: [
            .init(physicalStart: 0x1000, bytes: [UInt8](repeating: 1, count: 0x800)),
            .init(physicalStart: 0x1800, bytes: [UInt8](repeating: 2, count: 0x800)),
        ], vcpus: [Self.regs])
        let file = try TempFile(bytes)
        let dump = try QEMUDump(path: file.path)
        try dump.withMappedFrames([1]) { m in
            let p = try m.page(0)
            #expect(p[0] == 1 && p[0x7ff] == 1 && p[0x800] == 2 && p[0xfff] == 2)
        }
    }

    @Test func noCPUStateMeansNoRegisters() throws {
        let bytes = DumpWriter.qemuELF(blocks: [.init(physicalStart: 0, bytes: page(0))], vcpus: [])
        let file = try TempFile(bytes)
        let dump = try QEMUDump(path: file.path)
        let e = #expect(throws: GuestMemoryError.self) { try dump.vcpus() }
        #expect(e?.code == .noRegisters && e?.reason.contains("--cr3") == true)
    }

    // MARK: hostile dumps

    /// A valid two-segment dump to corrupt: offsets of its parts for the tests below.
    func base() -> [UInt8] {
        DumpWriter.qemuELF(blocks: [.init(physicalStart: 0, bytes: page(1)), .init(physicalStart: 0x2000, bytes: page(2))],
                           vcpus: [Self.regs])
    }
    static let phoff = 64
    static func ph(_ i: Int) -> Int { phoff + i * 56 }   // 0 = PT_NOTE, 1 and 2 = PT_LOAD

    func expectRejected(_ bytes: [UInt8], _ fragment: String, code: WireError.Code? = nil,
                        sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = try TempFile(bytes)
        let e = #expect(throws: WireError.self, sourceLocation: sourceLocation) { try QEMUDump(path: file.path) }
        #expect(e?.reason.contains(fragment) == true, "\(e?.reason ?? "no error")", sourceLocation: sourceLocation)
        if let code { #expect(e?.code == code, sourceLocation: sourceLocation) }
    }

    @Test func rejectsTruncatedAndForeignFiles() throws {
        let good = base()
        try expectRejected([], "e_ident", code: .truncated)
        try expectRejected(Array(good.prefix(40)), "ELF header", code: .truncated)
        var b = good; b[0] = 0x7e
        try expectRejected(b, "magic")
        b = good; b[4] = 1
        try expectRejected(b, "ELFCLASS64")
        b = good; b[5] = 2
        try expectRejected(b, "little-endian")
        b = good; b.putLE(2, at: 16, size: 2)
        try expectRejected(b, "ET_CORE")
        b = good; b.putLE(3, at: 18, size: 2)
        try expectRejected(b, "x86-64")
        // The file ends inside the second segment's data.
        try expectRejected(Array(good.dropLast(100)), "program header 2): p_offset", code: .truncated)
        try expectRejected(Array(good.prefix(Self.ph(2))), "program header table", code: .sizeTooLarge)
    }

    @Test func rejectsAbsurdSizesAndCounts() throws {
        let good = base()
        var b = good; b.putLE(40, at: 54, size: 2)            // e_phentsize
        try expectRejected(b, "e_phentsize is 40")
        b = good; b.putLE(0xfff0, at: 56, size: 2)            // e_phnum far beyond the file
        try expectRejected(b, "program header table (65520 entries", code: .sizeTooLarge)
        b = good; b.putLE(0xffff, at: 56, size: 2)            // PN_XNUM without section header 0
        try expectRejected(b, "PN_XNUM")
        b = good; b.putLE(UInt64.max - 10, at: Self.ph(1) + 8, size: 8)   // p_offset
        try expectRejected(b, "program header 1): p_offset")
        b = good; b.putLE(1 << 40, at: Self.ph(1) + 32, size: 8)          // p_filesz huge
        try expectRejected(b, "p_filesz 1099511627776 exceeds p_memsz")
        b = good; b.putLE(1 << 62, at: Self.ph(1) + 40, size: 8)          // p_memsz beyond 52 bits
        try expectRejected(b, "52-bit physical address space", code: .sizeTooLarge)
        b = good; b.putLE(UInt64.max - 0x10, at: Self.ph(2) + 24, size: 8) // p_paddr + p_memsz overflows
        try expectRejected(b, "52-bit physical address space")
        b = good; b.putLE(1 << 30, at: Self.ph(0) + 32, size: 8)          // note area of 1 GiB
        try expectRejected(b, "note area of 1073741824 bytes", code: .sizeTooLarge)
    }

    @Test func rejectsOverlapsAndBrokenNotes() throws {
        let good = base()
        var b = good; b.putLE(0x800, at: Self.ph(2) + 24, size: 8)        // segment 2 starts inside segment 1
        try expectRejected(b, "PT_LOAD segments 1 [0x0, 0x1000) and 2 [0x800, 0x1800) overlap")
        b = good; b.putLE(0, at: Self.ph(1) + 40, size: 8); b.putLE(0, at: Self.ph(1) + 32, size: 8)
        b.putLE(0, at: Self.ph(2) + 40, size: 8); b.putLE(0, at: Self.ph(2) + 32, size: 8)
        try expectRejected(b, "no PT_LOAD segment with memory")
        // The first note's descsz claims more than the note area holds.
        let notes = Int(good[Self.ph(0) + 8]) | Int(good[Self.ph(0) + 9]) << 8
        b = good; b.putLE(0x10000, at: notes + 4, size: 4)
        try expectRejected(b, "n_descsz 65536 exceeds", code: .sizeTooLarge)
        // QEMU CPU state: unknown version, then a size beyond its descriptor.
        let core = 12 + 8 + 336
        b = good; b.putLE(2, at: notes + core + 20, size: 4)
        try expectRejected(b, "QEMUCPUState version 2")
        b = good; b.putLE(4000, at: notes + core + 24, size: 4)
        try expectRejected(b, "QEMUCPUState size 4000")
    }
}

@Suite struct XenCoreDumpTests {
    func page(_ fill: UInt8) -> [UInt8] { [UInt8](repeating: fill, count: 4096) }
    static let regs = VCPURegisters(index: 0, cr0: 0x8005_003b, cr3: 0x1_2345_6000, cr4: 0x2660 | X86.cr4LA57,
                                    userCR3: 0x1_2345_7000, rip: 0xffff_ffff_8100_0000, rsp: 0xffff_c900_0000_0000, cs: 0xe033)

    @Test func readsAnHVMDumpByGuestFrame() throws {
        var offline = Self.regs
        offline.index = 1
        offline.online = false
        let bytes = DumpWriter.xenCore(pages: [(0x100, page(1)), (0x7, page(2)), (0x5000, page(3))], pv: false,
                                       vcpus: [Self.regs, offline])
        let file = try TempFile(bytes)
        let dump = try XenCoreDump(path: file.path)
        #expect(dump.frameSpace == .guestPhysical && dump.domain.kind == .hvm)
        #expect(dump.xenVersion == "4.17.5" && dump.pageCount == 3)
        let v = try dump.vcpus()
        #expect(v.count == 2 && v[0].online && !v[1].online)
        #expect(v[0].cr3 == 0x1_2345_6000 && v[0].cr4 == Self.regs.cr4 && v[0].rip == Self.regs.rip && v[0].cs == 0xe033)
        #expect(v[0].userCR3 == nil)
        try dump.withMappedFrames([7, 0x5000, 0x100, 8]) { m in
            let p0 = Array(try m.page(0))
            #expect(p0 == [UInt8](repeating: 2, count: 4096))
            let p1 = Array(try m.page(1))
            #expect(p1 == [UInt8](repeating: 3, count: 4096))
            let p2 = Array(try m.page(2))
            #expect(p2 == [UInt8](repeating: 1, count: 4096))
            #expect(throws: FrameError.self) { try m.page(3) }
        }
        // Reopened through the generic entry point, it is recognised as a Xen dump.
        #expect(try MemoryDump.open(path: file.path) is XenCoreDump)
    }

    @Test func readsAPVDumpByMachineFrame() throws {
        let bytes = DumpWriter.xenCore(pages: [(0x9_0000, page(1)), (0x8_0000, page(2))], pv: true, vcpus: [Self.regs],
                                       pseudoPhysical: [0, 1])
        let file = try TempFile(bytes)
        let dump = try XenCoreDump(path: file.path)
        #expect(dump.frameSpace == .machine && dump.domain.kind == .pv)
        #expect(dump.pseudoPhysicalFrame(ofMachineFrame: 0x8_0000) == 1)
        let v = try dump.vcpus()[0]
        // PV page tables are 4-level: LA57 is cleared whatever the context says.
        #expect(v.cr4 & X86.cr4LA57 == 0 && v.userCR3 == 0x1_2345_7000)
        #expect(try dump.read(physical: 0x8_0000_000, count: 2) == [2, 2])
        #expect(throws: FrameError.self) { try dump.read(physical: 0, count: 1) }
    }

    func expectRejected(_ bytes: [UInt8], _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = try TempFile(bytes)
        let e = #expect(throws: WireError.self, sourceLocation: sourceLocation) { try XenCoreDump(path: file.path) }
        #expect(e?.reason.contains(fragment) == true, "\(e?.reason ?? "no error")", sourceLocation: sourceLocation)
    }

    /// Offset of a section header's field in a dump written by `DumpWriter.xenCore`.
    static func sh(_ i: Int, _ field: Int) -> Int { 64 + i * 64 + field }
    static let shOffset = 24, shSize = 32

    func readLE(_ b: [UInt8], _ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) } }

    @Test func rejectsHostileDumps() throws {
        let good = DumpWriter.xenCore(pages: [(0x10, page(1)), (0x11, page(2))], pv: false, vcpus: [Self.regs])
        let notes = readLE(good, Self.sh(2, Self.shOffset))
        // Header descriptor starts after namesz/descsz/type and "Xen\0" of the header note, which
        // follows the empty DUMPCORE_NONE note (16 bytes).
        let header = notes + 16 + 16
        var b = good; b.putLE(0xdead, at: header, size: 8)
        try expectRejected(b, "xch_magic is 0xdead")
        b = good; b.putLE(8192, at: header + 24, size: 8)
        try expectRejected(b, "xch_page_size is 8192")
        b = good; b.putLE(1 << 40, at: header + 8, size: 8)
        try expectRejected(b, "xch_nr_vcpus 1099511627776 exceeds")
        b = good; b.putLE(3, at: header + 16, size: 8)
        try expectRejected(b, ".xen_pages is 8192 bytes, but xch_nr_pages 3")
        b = good; b.putLE(1 << 61, at: header + 16, size: 8)
        try expectRejected(b, "more than 2^64")
        // The same frame twice.
        let table = readLE(good, Self.sh(4, Self.shOffset))
        b = good; b.putLE(0x10, at: table + 8, size: 8)
        try expectRejected(b, "frame 0x10 is given to pages 0 and 1")
        // vCPU contexts of the wrong size (a 32-bit guest's).
        b = good; b.putLE(5000, at: Self.sh(3, Self.shSize), size: 8)
        try expectRejected(b, ".xen_prstatus is 5000 bytes")
        // Pages section beyond the end of the file.
        try expectRejected(Array(good.dropLast(1)), ".xen_pages")
        // A renamed .note.Xen is not a Xen dump.
        b = good
        let names = readLE(good, Self.sh(1, Self.shOffset))
        b[names + 11] = UInt8(ascii: "X")
        try expectRejected(b, "no .note.Xen section")
        // Section-name string offsets outside the table.
        b = good; b.putLE(0xffff, at: Self.sh(2, 0), size: 4)
        try expectRejected(b, "sh_name: string offset 65535")
        // Neither frame table.
        b = good; b[names + Int(good[Self.sh(4, 0)]) + 5] = UInt8(ascii: "q")
        try expectRejected(b, "neither .xen_pfn nor .xen_p2m")
    }
}

/// Seeded random corruption of valid dumps: every variant must open or fail with a `WireError`,
/// and whatever opens must survive the walk, the locator and the measurement (errors allowed,
/// traps not). The fuzz target (Fuzz/MemoryDumps.swift) does the same without a budget.
@Suite struct MutatedDumpTests {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    func survive(_ original: [UInt8], open: (MappedFile) throws -> any GuestMemorySource, seed: UInt64) {
        var rng = SplitMix(state: seed)
        // Mutations land in the headers, notes and tables (the first 16 KiB), where the parsers look.
        let hot = min(original.count, 16 << 10)
        var opened = 0
        for _ in 0..<250 {
            var b = original
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                let at = Int.random(in: 0..<hot, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: b[at] = UInt8.random(in: 0...255, using: &rng)
                case 1: b[at] = [0, 0xff, 0x7f, 0x80][Int.random(in: 0..<4, using: &rng)]
                default: b = Array(b.prefix(Int.random(in: 0..<b.count, using: &rng)))
                }
                if at >= b.count { break }
            }
            do {
                let source = try open(MappedFile(bytes: b, name: "mutant"))
                opened += 1
                _ = try? source.withMappedFrames([0, 1, 0x200, 0x7ff]) { $0.failures.count }
                if let kernel = try? KernelLocator.locate(in: source) {
                    _ = try? KernelMeasurement(kernel: kernel, in: source)
                }
            } catch {
                #expect(error is WireError, "\(type(of: error)): \(error)")
            }
        }
        #expect(opened > 0, "no mutant opened: the mutations never leave a dump readable")
    }

    @Test func qemuDumps() {
        let k = SyntheticKernel()
        let original = DumpWriter.qemuELF(blocks: [k.guest.block], vcpus: [k.guest.registers()])
        survive(original, open: { try QEMUDump(file: $0) }, seed: 1)
    }

    @Test func xenCoreDumps() {
        let k = SyntheticKernel()
        var pages: [(frame: UInt64, bytes: [UInt8])] = []
        for i in 0..<(k.guest.memory.count / 4096) {
            pages.append((UInt64(i), Array(k.guest.memory[(i * 4096)..<((i + 1) * 4096)])))
        }
        let original = DumpWriter.xenCore(pages: pages, pv: false, vcpus: [k.guest.registers()])
        survive(original, open: { try XenCoreDump(file: $0) }, seed: 2)
    }
}
