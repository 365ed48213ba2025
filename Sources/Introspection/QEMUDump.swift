import TPMWire

/// A page of zeros, for the part of a segment that the file does not hold (`p_memsz > p_filesz`).
nonisolated(unsafe) let zeroPage: UnsafeRawPointer = {
    let p = UnsafeMutableRawPointer.allocate(byteCount: MappedFrames.pageSize, alignment: MappedFrames.pageSize)
    p.initializeMemory(as: UInt8.self, repeating: 0, count: MappedFrames.pageSize)
    return UnsafeRawPointer(p)
}()

/// An ELF core of a whole x86-64 guest as QEMU's `dump-guest-memory` writes it (QMP or HMP,
/// without `-z`/`-l`/`-s` compression): PT_LOAD segments whose `p_paddr` is the guest-physical
/// address, one NT_PRSTATUS note ("CORE") per vCPU with the general registers, and one "QEMU"
/// note per vCPU with QEMU's `QEMUCPUState` (segments, CR0–CR4).
///
/// The file is mapped, never read whole. Opening checks every segment against the file and
/// against the others, so that reads later cannot fail for a structural reason.
public final class QEMUDump: GuestMemorySource, @unchecked Sendable {
    struct Segment: Sendable {
        var index: Int
        var physicalStart: UInt64
        var memorySize: UInt64
        var fileOffset: UInt64
        var fileSize: UInt64
        var physicalEnd: UInt64 { physicalStart + memorySize }
    }

    public let elf: ELFFile
    public let domain: DomainIdentity
    public var frameSpace: FrameSpace { .guestPhysical }
    public var maxBatchFrames: Int { 1 << 16 }
    let segments: [Segment]
    private let registers: [VCPURegisters]

    public static let emX86_64: UInt16 = 62
    static let ntPRStatus: UInt32 = 1
    /// `QEMUCPUState` version 1 without `kernel_gs_base`; QEMU 7.2 and later append it (440 bytes).
    static let qemuCPUStateMinimumSize = 432

    public convenience init(path: String) throws {
        try self.init(file: try MappedFile(path: path))
    }

    public init(file: MappedFile) throws(WireError) {
        let what = "QEMU dump \(file.path)"
        elf = try ELFFile(file: file, what: what)
        guard elf.header.type == ELFFile.FileType.core.rawValue else {
            throw WireError(.invalidValue, "\(what): e_type is \(elf.header.type), a memory dump is ET_CORE (4)")
        }
        guard elf.header.machine == Self.emX86_64 else {
            throw WireError(.invalidValue, "\(what): e_machine is \(elf.header.machine), only x86-64 (62) guests are supported")
        }
        segments = try Self.loadSegments(elf, what: what)
        registers = try Self.loadRegisters(elf, what: what)
        domain = DomainIdentity(kind: .qemu, origin: "qemu-elf:\(file.path)")
    }

    static func loadSegments(_ elf: ELFFile, what: String) throws(WireError) -> [Segment] {
        var segments: [Segment] = []
        for ph in elf.programHeaders where ph.type == ELFFile.ProgramHeader.load {
            let f = "\(what): PT_LOAD segment (program header \(ph.index))"
            guard ph.fileSize <= ph.memorySize else {
                throw WireError(.invalidValue, "\(f): p_filesz \(ph.fileSize) exceeds p_memsz \(ph.memorySize)")
            }
            guard elf.file.bytes(at: ph.offset, count: ph.fileSize) != nil else {
                throw WireError(.truncated, "\(f): p_offset 0x\(String(ph.offset, radix: 16)) + p_filesz \(ph.fileSize) runs beyond the end of the \(elf.file.size)-byte file (truncated dump?)")
            }
            let (_, overflow) = ph.physicalAddress.addingReportingOverflow(ph.memorySize)
            guard !overflow, ph.physicalAddress + ph.memorySize <= 1 << 52 else {
                throw WireError(.sizeTooLarge, "\(f): p_paddr 0x\(String(ph.physicalAddress, radix: 16)) + p_memsz \(ph.memorySize) is beyond the 52-bit physical address space")
            }
            guard ph.memorySize > 0 else { continue }
            segments.append(Segment(index: ph.index, physicalStart: ph.physicalAddress, memorySize: ph.memorySize,
                                    fileOffset: ph.offset, fileSize: ph.fileSize))
        }
        guard !segments.isEmpty else {
            throw WireError(.invalidValue, "\(what): no PT_LOAD segment with memory: nothing of the guest is in this file")
        }
        segments.sort { $0.physicalStart < $1.physicalStart }
        for (a, b) in zip(segments, segments.dropFirst()) where b.physicalStart < a.physicalEnd {
            throw WireError(.invalidValue, "\(what): PT_LOAD segments \(a.index) [0x\(String(a.physicalStart, radix: 16)), 0x\(String(a.physicalEnd, radix: 16))) and \(b.index) [0x\(String(b.physicalStart, radix: 16)), 0x\(String(b.physicalEnd, radix: 16))) overlap in guest-physical memory")
        }
        return segments
    }

    static func loadRegisters(_ elf: ELFFile, what: String) throws(WireError) -> [VCPURegisters] {
        var prstatus: [[UInt8]] = []
        var qemu: [[UInt8]] = []
        for ph in elf.programHeaders where ph.type == ELFFile.ProgramHeader.note {
            for note in try elf.notes(offset: ph.offset, size: ph.fileSize, what: "\(what): PT_NOTE (program header \(ph.index))") {
                if note.name == "CORE" && note.type == ntPRStatus { prstatus.append(note.descriptor) }
                if note.name == "QEMU" && note.type == 0 { qemu.append(note.descriptor) }
            }
        }
        var out: [VCPURegisters] = []
        // QEMU writes all NT_PRSTATUS notes, then all QEMU notes, both in vCPU order.
        for (i, state) in qemu.enumerated() {
            let f = "\(what): QEMU CPU state note \(i)"
            var r = ByteReader(state)
            let version = try r.readUInt32LE("\(f) version")
            let size = Int(try r.readUInt32LE("\(f) size"))
            guard version == 1 else {
                throw WireError(.invalidValue, "\(f): QEMUCPUState version \(version), only version 1 is known")
            }
            guard size >= qemuCPUStateMinimumSize, size <= state.count else {
                throw WireError(.sizeTooLarge, "\(f): QEMUCPUState size \(size) is outside \(qemuCPUStateMinimumSize)...\(state.count) (the note's descriptor)")
            }
            var gp: [UInt64] = []
            for name in ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
                         "r12", "r13", "r14", "r15", "rip", "rflags"] {
                gp.append(try r.readUInt64LE("\(f) \(name)"))
            }
            // Ten segment caches of 24 bytes: cs, ds, es, fs, gs, ss, ldt, tr, gdt, idt.
            let cs = try r.readUInt32LE("\(f) cs.selector")
            try r.skip(20, "\(f) cs")
            try r.skip(9 * 24, "\(f) segments")
            var cr: [UInt64] = []
            for n in 0..<5 { cr.append(try r.readUInt64LE("\(f) cr[\(n)]")) }
            out.append(VCPURegisters(index: i, cr0: cr[0], cr2: cr[2], cr3: cr[3], cr4: cr[4],
                                     rip: gp[16], rsp: gp[6], cs: UInt16(truncatingIfNeeded: cs)))
        }
        if out.isEmpty && !prstatus.isEmpty {
            // NT_PRSTATUS alone has no control registers: the caller must name a CR3.
            return []
        }
        return out
    }

    public func vcpus() throws(GuestMemoryError) -> [VCPURegisters] {
        guard !registers.isEmpty else {
            throw GuestMemoryError(.noRegisters, "\(elf.file.path): the dump has no QEMU CPU state note (CR0–CR4); give the page-table root with --cr3")
        }
        return registers
    }

    /// The guest-physical ranges the dump holds, for people and for tests.
    public var physicalRanges: [Range<UInt64>] { segments.map { $0.physicalStart..<$0.physicalEnd } }

    func segment(containing address: UInt64, hint: inout Int) -> Segment? {
        if hint < segments.count, segments[hint].physicalStart <= address, address < segments[hint].physicalEnd {
            return segments[hint]
        }
        var lo = 0, hi = segments.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if segments[mid].physicalEnd <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo < segments.count, segments[lo].physicalStart <= address else { return nil }
        hint = lo
        return segments[lo]
    }

    public func withMappedFrames<R>(_ frames: [UInt64], _ body: (MappedFrames) throws -> R) throws -> R {
        guard frames.count <= maxBatchFrames else {
            throw GuestMemoryError(.unsupported, "batch of \(frames.count) frames exceeds the limit of \(maxBatchFrames)")
        }
        let page = UInt64(MappedFrames.pageSize)
        var pointers = [UnsafeRawPointer?](repeating: nil, count: frames.count)
        var errors: [Int: FrameError] = [:]
        var scratch: [UnsafeMutableRawPointer] = []
        defer { for p in scratch { p.deallocate() } }
        var hint = 0
        for (i, frame) in frames.enumerated() {
            guard frame < 1 << 40 else {
                errors[i] = FrameError(frame: frame, code: .invalidFrame, reason: "frame number beyond the 52-bit physical address space")
                continue
            }
            let address = frame * page
            guard let seg = segment(containing: address, hint: &hint) else {
                errors[i] = FrameError(frame: frame, code: .notPresent, reason: "guest-physical 0x\(String(address, radix: 16)) is in no PT_LOAD segment of the dump")
                continue
            }
            let offsetInSegment = address - seg.physicalStart
            if address + page <= seg.physicalEnd {
                if offsetInSegment + page <= seg.fileSize {
                    pointers[i] = elf.file.bytes(at: seg.fileOffset + offsetInSegment, count: page)?.baseAddress
                    continue
                }
                if offsetInSegment >= seg.fileSize {
                    pointers[i] = zeroPage
                    continue
                }
            }
            // The page straddles a segment boundary or the end of the file's part: assemble it.
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: Int(page), alignment: Int(page))
            scratch.append(buffer)
            if let missing = assemble(address: address, into: buffer) {
                errors[i] = FrameError(frame: frame, code: .notPresent, reason: "guest-physical 0x\(String(missing, radix: 16)) is in no PT_LOAD segment of the dump")
            } else {
                pointers[i] = UnsafeRawPointer(buffer)
            }
        }
        return try body(MappedFrames(frames: frames, pointers: pointers, errors: errors))
    }

    /// Copies the page at `address` from however many segments hold it; returns the first
    /// address that no segment holds, or nil when the page is whole.
    private func assemble(address: UInt64, into buffer: UnsafeMutableRawPointer) -> UInt64? {
        let end = address + UInt64(MappedFrames.pageSize)
        var cursor = address
        var hint = 0
        while cursor < end {
            guard let seg = segment(containing: cursor, hint: &hint) else { return cursor }
            let chunkEnd = min(end, seg.physicalEnd)
            let offsetInSegment = cursor - seg.physicalStart
            let count = chunkEnd - cursor
            let dest = buffer + Int(cursor - address)
            let inFile = offsetInSegment < seg.fileSize ? min(count, seg.fileSize - offsetInSegment) : 0
            if inFile > 0, let src = elf.file.bytes(at: seg.fileOffset + offsetInSegment, count: inFile)?.baseAddress {
                dest.copyMemory(from: src, byteCount: Int(inFile))
            }
            if count > inFile {
                (dest + Int(inFile)).initializeMemory(as: UInt8.self, repeating: 0, count: Int(count - inFile))
            }
            cursor = chunkEnd
        }
        return nil
    }
}
