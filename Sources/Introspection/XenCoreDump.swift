import TPMWire

/// A domain's memory as `xl dump-core` writes it (Xen's docs/misc/dump-core-format.txt,
/// tools/libs/guest/xg_core.h): an ELF64 ET_CORE file with sections and no program headers.
///
/// - `.note.Xen`: notes named "Xen" — DUMPCORE_NONE, DUMPCORE_HEADER (magic, vCPU count,
///   page count, page size), DUMPCORE_XEN_VERSION, DUMPCORE_FORMAT_VERSION;
/// - `.xen_prstatus`: one `vcpu_guest_context` per vCPU (x86-64 layout, 5168 bytes);
/// - `.xen_pages`: the pages, in no particular order;
/// - `.xen_pfn` (auto-translated guests: HVM, PVH): the guest frame of each page, or
///   `.xen_p2m` (PV guests): a (pfn, gmfn) pair per page.
///
/// A PV guest's page tables hold machine frames, so a PV dump is addressed by gmfn
/// (`FrameSpace.machine`); an HVM/PVH dump by pfn.
public final class XenCoreDump: GuestMemorySource, @unchecked Sendable {
    static let noteNone: UInt32 = 0x200_0000
    static let noteHeader: UInt32 = 0x200_0001
    static let noteXenVersion: UInt32 = 0x200_0002
    static let noteFormatVersion: UInt32 = 0x200_0003
    static let magicPV: UInt64 = 0xF00F_EBED
    static let magicHVM: UInt64 = 0xF00F_EBEE
    static let invalidFrame: UInt64 = ~0
    /// `sizeof(vcpu_guest_context_x86_64_t)` and the offsets of the fields read from it.
    static let vcpuContextSize = 5168
    static let contextFlagsOffset = 512
    static let contextRIPOffset = 648
    static let contextCSOffset = 656
    static let contextRSPOffset = 672
    static let contextCtrlRegOffset = 4984
    static let vgcfOnline: UInt64 = 1 << 5
    /// Xen's own limit on vCPUs per domain is below this.
    static let maxVCPUs: UInt64 = 16384

    public let elf: ELFFile
    public let domain: DomainIdentity
    public let frameSpace: FrameSpace
    public var maxBatchFrames: Int { 1 << 16 }
    /// Xen's version as the dump recorded it ("4.17.5-pre"), where present.
    public let xenVersion: String?
    public let pageCount: Int
    private let pagesOffset: UInt64
    /// (frame, page index) sorted by frame: frame numbers in `frameSpace`.
    private let index: [(frame: UInt64, page: Int)]
    /// For PV dumps: machine frame → pseudo-physical frame, as the dump's p2m table says.
    private let pseudoPhysical: [UInt64: UInt64]
    private let registers: [VCPURegisters]

    public convenience init(path: String) throws {
        try self.init(file: try MappedFile(path: path))
    }

    public init(file: MappedFile) throws(WireError) {
        let what = "Xen dump-core \(file.path)"
        elf = try ELFFile(file: file, what: what)
        guard elf.header.type == ELFFile.FileType.core.rawValue else {
            throw WireError(.invalidValue, "\(what): e_type is \(elf.header.type), a dump-core file is ET_CORE (4)")
        }
        guard let noteSection = elf.section(named: ".note.Xen") else {
            throw WireError(.invalidValue, "\(what): no .note.Xen section: not an xl dump-core file")
        }
        let notes = try ELFFile.parseNotes(Array(try elf.contents(of: noteSection, what: what)), what: "\(what): .note.Xen")
        guard let header = notes.first(where: { $0.name == "Xen" && $0.type == Self.noteHeader }) else {
            throw WireError(.invalidValue, "\(what): .note.Xen has no DUMPCORE_HEADER (type 0x2000001) note")
        }
        var hr = ByteReader(header.descriptor)
        let magic = try hr.readUInt64LE("\(what): DUMPCORE_HEADER xch_magic")
        let vcpuCount = try hr.readUInt64LE("\(what): DUMPCORE_HEADER xch_nr_vcpus")
        let pages = try hr.readUInt64LE("\(what): DUMPCORE_HEADER xch_nr_pages")
        let pageSize = try hr.readUInt64LE("\(what): DUMPCORE_HEADER xch_page_size")
        guard magic == Self.magicPV || magic == Self.magicHVM else {
            throw WireError(.invalidValue, "\(what): DUMPCORE_HEADER xch_magic is 0x\(String(magic, radix: 16)), expected 0xf00febed (PV) or 0xf00febee (HVM)")
        }
        guard pageSize == UInt64(MappedFrames.pageSize) else {
            throw WireError(.invalidValue, "\(what): DUMPCORE_HEADER xch_page_size is \(pageSize), only 4096 is supported")
        }
        guard vcpuCount <= Self.maxVCPUs else {
            throw WireError(.countTooLarge, "\(what): DUMPCORE_HEADER xch_nr_vcpus \(vcpuCount) exceeds the limit of \(Self.maxVCPUs)")
        }
        if let format = notes.first(where: { $0.name == "Xen" && $0.type == Self.noteFormatVersion }) {
            var fr = ByteReader(format.descriptor)
            let version = try fr.readUInt64LE("\(what): DUMPCORE_FORMAT_VERSION version")
            guard version >> 32 == 0 else {
                throw WireError(.invalidValue, "\(what): dump-core format major version \(version >> 32), only major version 0 is known")
            }
        }
        xenVersion = try notes.first(where: { $0.name == "Xen" && $0.type == Self.noteXenVersion }).map { note throws(WireError) in
            var vr = ByteReader(note.descriptor)
            let major = try vr.readUInt64LE("\(what): DUMPCORE_XEN_VERSION major_version")
            let minor = try vr.readUInt64LE("\(what): DUMPCORE_XEN_VERSION minor_version")
            let extra = try vr.readBytes(16, "\(what): DUMPCORE_XEN_VERSION extra_version")
            return "\(major).\(minor)" + String(decoding: extra.prefix { $0 != 0 }, as: UTF8.self)
        }

        // The page array must be exactly the header's page count.
        guard let pagesSection = elf.section(named: ".xen_pages") else {
            throw WireError(.invalidValue, "\(what): no .xen_pages section")
        }
        let (pagesBytes, o1) = pages.multipliedReportingOverflow(by: pageSize)
        guard !o1, pagesSection.size == pagesBytes else {
            throw WireError(.sizeTooLarge, "\(what): .xen_pages is \(pagesSection.size) bytes, but xch_nr_pages \(pages) pages of \(pageSize) bytes need \(o1 ? "more than 2^64" : String(pagesBytes))")
        }
        _ = try elf.contents(of: pagesSection, what: what)
        guard pages <= UInt64(ELFFile.maxTableEntries) * 64 else {
            throw WireError(.countTooLarge, "\(what): xch_nr_pages \(pages) is beyond any guest this reads (limit \(ELFFile.maxTableEntries * 64) pages)")
        }
        pageCount = Int(pages)
        pagesOffset = pagesSection.offset

        var entries: [(frame: UInt64, page: Int)] = []
        entries.reserveCapacity(pageCount)
        var p2m: [UInt64: UInt64] = [:]
        if let pfnSection = elf.section(named: ".xen_pfn") {
            guard pfnSection.size == pages * 8 else {
                throw WireError(.sizeTooLarge, "\(what): .xen_pfn is \(pfnSection.size) bytes, xch_nr_pages \(pages) needs \(pages * 8)")
            }
            let table = try elf.contents(of: pfnSection, what: what)
            for i in 0..<pageCount {
                let pfn = table.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self).littleEndian
                if pfn != Self.invalidFrame { entries.append((pfn, i)) }
            }
            frameSpace = .guestPhysical
        } else if let p2mSection = elf.section(named: ".xen_p2m") {
            guard p2mSection.size == pages * 16 else {
                throw WireError(.sizeTooLarge, "\(what): .xen_p2m is \(p2mSection.size) bytes, xch_nr_pages \(pages) needs \(pages * 16)")
            }
            let table = try elf.contents(of: p2mSection, what: what)
            for i in 0..<pageCount {
                let pfn = table.loadUnaligned(fromByteOffset: i * 16, as: UInt64.self).littleEndian
                let gmfn = table.loadUnaligned(fromByteOffset: i * 16 + 8, as: UInt64.self).littleEndian
                if gmfn != Self.invalidFrame {
                    entries.append((gmfn, i))
                    if pfn != Self.invalidFrame { p2m[gmfn] = pfn }
                }
            }
            frameSpace = .machine
        } else {
            throw WireError(.invalidValue, "\(what): neither .xen_pfn nor .xen_p2m: the pages have no frame numbers")
        }
        entries.sort { $0.frame < $1.frame }
        for (a, b) in zip(entries, entries.dropFirst()) where a.frame == b.frame {
            throw WireError(.invalidValue, "\(what): frame 0x\(String(a.frame, radix: 16)) is given to pages \(a.page) and \(b.page)")
        }
        index = entries
        pseudoPhysical = p2m

        // vCPU contexts.
        guard let prstatus = elf.section(named: ".xen_prstatus") else {
            throw WireError(.invalidValue, "\(what): no .xen_prstatus section (vCPU contexts)")
        }
        let contexts = try elf.contents(of: prstatus, what: what)
        let expected = Int(vcpuCount) * Self.vcpuContextSize
        guard contexts.count == expected else {
            throw WireError(.sizeTooLarge, "\(what): .xen_prstatus is \(contexts.count) bytes, \(vcpuCount) x86-64 vcpu_guest_context of \(Self.vcpuContextSize) bytes need \(expected) (a 32-bit guest?)")
        }
        var regs: [VCPURegisters] = []
        let isPV = magic == Self.magicPV
        for v in 0..<Int(vcpuCount) {
            let base = v * Self.vcpuContextSize
            func u64(_ offset: Int) -> UInt64 {
                contexts.loadUnaligned(fromByteOffset: base + offset, as: UInt64.self).littleEndian
            }
            let ctrl = (0..<8).map { u64(Self.contextCtrlRegOffset + 8 * $0) }
            let cs = contexts.loadUnaligned(fromByteOffset: base + Self.contextCSOffset, as: UInt16.self).littleEndian
            // PV page tables are 4-level whatever Xen itself uses.
            let cr4 = isPV ? ctrl[4] & ~X86.cr4LA57 : ctrl[4]
            regs.append(VCPURegisters(index: v, online: u64(Self.contextFlagsOffset) & Self.vgcfOnline != 0,
                                      cr0: ctrl[0], cr2: ctrl[2], cr3: ctrl[3], cr4: cr4,
                                      userCR3: isPV && ctrl[1] != 0 ? ctrl[1] : nil,
                                      rip: u64(Self.contextRIPOffset), rsp: u64(Self.contextRSPOffset), cs: cs))
        }
        registers = regs
        domain = DomainIdentity(kind: isPV ? .pv : .hvm, origin: "xen-core:\(file.path)")
    }

    public func vcpus() throws(GuestMemoryError) -> [VCPURegisters] {
        guard !registers.isEmpty else {
            throw GuestMemoryError(.noRegisters, "\(elf.file.path): the dump has no vCPU context; give the page-table root with --cr3")
        }
        return registers
    }

    /// For a PV dump, the pseudo-physical frame of a machine frame, as the dump's p2m says.
    public func pseudoPhysicalFrame(ofMachineFrame mfn: UInt64) -> UInt64? { pseudoPhysical[mfn] }

    func pageIndex(of frame: UInt64) -> Int? {
        var lo = 0, hi = index.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if index[mid].frame < frame { lo = mid + 1 } else { hi = mid }
        }
        guard lo < index.count, index[lo].frame == frame else { return nil }
        return index[lo].page
    }

    public func withMappedFrames<R>(_ frames: [UInt64], _ body: (MappedFrames) throws -> R) throws -> R {
        guard frames.count <= maxBatchFrames else {
            throw GuestMemoryError(.unsupported, "batch of \(frames.count) frames exceeds the limit of \(maxBatchFrames)")
        }
        let page = UInt64(MappedFrames.pageSize)
        var pointers = [UnsafeRawPointer?](repeating: nil, count: frames.count)
        var errors: [Int: FrameError] = [:]
        for (i, frame) in frames.enumerated() {
            if let p = pageIndex(of: frame), let bytes = elf.file.bytes(at: pagesOffset + UInt64(p) * page, count: page) {
                pointers[i] = bytes.baseAddress
            } else {
                errors[i] = FrameError(frame: frame, code: .notPresent,
                                       reason: "\(frameSpace == .machine ? "machine" : "guest") frame is not among the dump's \(pageCount) pages")
            }
        }
        return try body(MappedFrames(frames: frames, pointers: pointers, errors: errors))
    }
}
