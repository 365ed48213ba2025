/// Architectural bits of x86-64 paging (Intel SDM vol. 3A ch. 4, AMD APM vol. 2 ch. 5).
public enum X86 {
    public static let cr0PG: UInt64 = 1 << 31
    public static let cr0WP: UInt64 = 1 << 16
    public static let cr4PSE: UInt64 = 1 << 4
    public static let cr4PAE: UInt64 = 1 << 5
    public static let cr4LA57: UInt64 = 1 << 12
    public static let cr4PCIDE: UInt64 = 1 << 17
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10
    public static let eferNXE: UInt64 = 1 << 11

    public static let present: UInt64 = 1 << 0
    public static let writable: UInt64 = 1 << 1
    public static let user: UInt64 = 1 << 2
    public static let accessed: UInt64 = 1 << 5
    public static let dirty: UInt64 = 1 << 6
    public static let pageSize: UInt64 = 1 << 7
    public static let global: UInt64 = 1 << 8
    public static let executeDisable: UInt64 = 1 << 63
    /// Bits 51:12 of an entry or of CR3: a frame address.
    public static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000

    /// With KPTI, Linux allocates each PGD as two pages and runs user space on the second:
    /// a CR3 with this bit set is the user half of the pair, the kernel's PGD is the first.
    public static let kptiUserPGDBit: UInt64 = 1 << 12
}

/// One level of the page-table hierarchy, named as the SDM names its tables.
public enum PageTableLevel: Int, Sendable, Codable, Hashable, Comparable, CustomStringConvertible {
    case pt = 1, pd = 2, pdpt = 3, pml4 = 4, pml5 = 5

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .pml5: "PML5"
        case .pml4: "PML4"
        case .pdpt: "PDPT"
        case .pd: "PD"
        case .pt: "PT"
        }
    }

    /// Bits of the virtual address that one entry at this level covers.
    var shift: UInt64 { 12 + 9 * UInt64(rawValue - 1) }
    var entrySpan: UInt64 { 1 << shift }
    /// A PS bit is a large page at these levels (1 GiB, 2 MiB) and reserved above them.
    var allowsLargePage: Bool { self == .pdpt || self == .pd }
    var below: PageTableLevel? { PageTableLevel(rawValue: rawValue - 1) }
}

/// How a vCPU translates addresses: the paging mode from CR0/CR4/EFER.
public struct PagingMode: Sendable, Codable, Hashable {
    /// 4 (48-bit virtual addresses) or 5 (57-bit, CR4.LA57).
    public var levels: Int
    /// Whether the XD bit is honoured (EFER.NXE); assumed when EFER is unknown.
    public var noExecute: Bool
    /// MAXPHYADDR: entry address bits at or above it are reserved. 52 when unknown.
    public var physicalAddressBits: Int
    /// Whether CR3's low 12 bits are a PCID (CR4.PCIDE).
    public var pcid: Bool

    public init(levels: Int, noExecute: Bool = true, physicalAddressBits: Int = 52, pcid: Bool = false) {
        self.levels = levels
        self.noExecute = noExecute
        self.physicalAddressBits = physicalAddressBits
        self.pcid = pcid
    }

    /// The mode of a vCPU. Only 64-bit (IA-32e) paging is supported: the vCPU must have paging
    /// and PAE on, and long mode active where EFER is known.
    public init(registers r: VCPURegisters, physicalAddressBits: Int? = nil) throws(TranslationError) {
        guard r.cr0 & X86.cr0PG != 0 else {
            throw TranslationError(virtualAddress: nil, level: nil, reason: .unsupportedMode("CR0.PG is clear (CR0=0x\(String(r.cr0, radix: 16))): the vCPU does not use paging"))
        }
        guard r.cr4 & X86.cr4PAE != 0 else {
            throw TranslationError(virtualAddress: nil, level: nil, reason: .unsupportedMode("CR4.PAE is clear (CR4=0x\(String(r.cr4, radix: 16))): 32-bit paging is not supported"))
        }
        if let efer = r.efer, efer & X86.eferLMA == 0 {
            throw TranslationError(virtualAddress: nil, level: nil, reason: .unsupportedMode("EFER.LMA is clear (EFER=0x\(String(efer, radix: 16))): PAE paging outside long mode is not supported"))
        }
        let bits = physicalAddressBits ?? 52
        self.init(levels: r.cr4 & X86.cr4LA57 != 0 ? 5 : 4,
                  noExecute: r.efer.map { $0 & X86.eferNXE != 0 } ?? true,
                  physicalAddressBits: min(max(bits, 32), 52),
                  pcid: r.cr4 & X86.cr4PCIDE != 0)
    }

    public var topLevel: PageTableLevel { levels == 5 ? .pml5 : .pml4 }
    /// Bits of a canonical virtual address (48 or 57).
    public var virtualAddressBits: Int { levels == 5 ? 57 : 48 }

    /// Whether `va`'s bits above the implemented width are copies of the top implemented bit.
    public func isCanonical(_ va: UInt64) -> Bool {
        let shift = UInt64(virtualAddressBits - 1)
        let top = va >> shift
        return top == 0 || top == (UInt64.max >> shift)
    }

    /// The first address of the upper (kernel) half.
    public var kernelHalfStart: UInt64 { UInt64.max << UInt64(virtualAddressBits - 1) }

    /// Entry bits that must be zero at `level` for an entry that is present; `large` for a
    /// PS entry at the PDPT/PD level.
    func reservedBits(level: PageTableLevel, large: Bool) -> UInt64 {
        var mask: UInt64 = 0
        if physicalAddressBits < 52 {
            mask |= X86.addressMask & ~((1 << UInt64(physicalAddressBits)) - 1)
        }
        if !noExecute { mask |= X86.executeDisable }
        switch level {
        case .pml5, .pml4: mask |= X86.pageSize
        case .pdpt where large: mask |= 0x3FFF_E000   // bits 29:13 (bit 12 is PAT)
        case .pd where large: mask |= 0x1F_E000       // bits 20:13
        default: break
        }
        return mask
    }
}

/// The page-table root that CR3 names.
public struct PageTableRoot: Sendable, Codable, Hashable, CustomStringConvertible {
    /// CR3 as the vCPU held it.
    public var cr3: UInt64
    /// Address of the top-level table (CR3 bits 51:12).
    public var tableAddress: UInt64
    /// The PCID in CR3's low bits, when CR4.PCIDE is on.
    public var pcid: UInt16?

    public init(cr3: UInt64, mode: PagingMode) {
        self.cr3 = cr3
        self.tableAddress = cr3 & X86.addressMask & ((1 << UInt64(mode.physicalAddressBits)) - 1)
        self.pcid = mode.pcid ? UInt16(cr3 & 0xFFF) : nil
    }

    /// Linux KPTI: a CR3 on the user half of an 8 KiB PGD pair; the kernel half's PGD is the
    /// page below it. Nil when CR3 is not on an odd page.
    public var kptiKernelRoot: PageTableRoot? {
        guard tableAddress & X86.kptiUserPGDBit != 0 else { return nil }
        var r = self
        r.tableAddress &= ~X86.kptiUserPGDBit
        return r
    }

    public var description: String {
        "CR3 0x\(String(cr3, radix: 16)) (table at 0x\(String(tableAddress, radix: 16))\(pcid.map { ", PCID \($0)" } ?? ""))"
    }
}

/// Why a virtual address does not translate; says at which level and why.
public struct TranslationError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        case notPresent
        /// Bits that must be zero at this level are set (the mask of the offending bits).
        case reservedBits(UInt64)
        /// The address is not canonical for the paging mode.
        case nonCanonical(bits: Int)
        /// The table page could not be read from guest memory.
        case tableUnreadable(FrameError)
        case unsupportedMode(String)
    }

    public var virtualAddress: UInt64?
    public var level: PageTableLevel?
    /// Physical (frame-space) address of the entry that failed, and its value.
    public var entryAddress: UInt64?
    public var entry: UInt64?
    public var reason: Reason

    public init(virtualAddress: UInt64?, level: PageTableLevel?, entryAddress: UInt64? = nil, entry: UInt64? = nil, reason: Reason) {
        self.virtualAddress = virtualAddress
        self.level = level
        self.entryAddress = entryAddress
        self.entry = entry
        self.reason = reason
    }

    public var description: String {
        var s = virtualAddress.map { "0x\(hex64($0)): " } ?? ""
        let at = entryAddress.map { " at 0x\(String($0, radix: 16))" } ?? ""
        let value = entry.map { " (0x\(hex64($0)))" } ?? ""
        switch reason {
        case .notPresent:
            s += "\(level.map(\.description) ?? "?") entry\(at)\(value) is not present"
        case .reservedBits(let bits):
            s += "\(level.map(\.description) ?? "?") entry\(at)\(value) has reserved bits set (0x\(String(bits, radix: 16)))"
        case .nonCanonical(let bits):
            s += "not a canonical \(bits)-bit address"
        case .tableUnreadable(let e):
            s += "\(level.map(\.description) ?? "?") table unreadable: \(e)"
        case .unsupportedMode(let why):
            s += why
        }
        return s
    }
}

func hex64(_ v: UInt64) -> String {
    let h = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - h.count)) + h
}

/// A successful translation: where the byte is, on what size of page, with what rights.
public struct Translation: Sendable, Codable, Hashable {
    public var virtualAddress: UInt64
    /// Address in the source's frame space (guest-physical, or machine for a PV guest).
    public var physicalAddress: UInt64
    public var pageSize: UInt64
    /// The level whose entry mapped the page (PT for 4 KiB, PD for 2 MiB, PDPT for 1 GiB).
    public var level: PageTableLevel
    public var permissions: PagePermissions
}

/// The rights a mapping grants, combined over every level of the walk.
public struct PagePermissions: Sendable, Codable, Hashable, CustomStringConvertible {
    public var writable: Bool
    public var user: Bool
    public var executable: Bool
    public var global: Bool

    public init(writable: Bool, user: Bool, executable: Bool, global: Bool = false) {
        self.writable = writable
        self.user = user
        self.executable = executable
        self.global = global
    }

    public var description: String { (user ? "u" : "-") + "r" + (writable ? "w" : "-") + (executable ? "x" : "-") }
}

/// A run of virtual pages mapped onto contiguous physical memory with the same rights.
public struct Mapping: Sendable, Codable, Hashable {
    public var virtualStart: UInt64
    public var physicalStart: UInt64
    public var size: UInt64
    public var permissions: PagePermissions
    /// The largest page size inside the run (for people: 4 KiB, 2 MiB, 1 GiB).
    public var largestPage: UInt64

    public var virtualEnd: UInt64 { virtualStart &+ size }
}

/// Walks a guest's x86-64 page tables through a `GuestMemorySource`.
///
/// Table pages are read whole and kept for the walker's life, so walking a range reads each
/// table once (a Xen source maps each table page once). Not thread-safe: one walker per task.
public final class PageWalker {
    public let source: any GuestMemorySource
    public let mode: PagingMode
    public let root: PageTableRoot
    private var tables: [UInt64: [UInt64]] = [:]

    public init(source: any GuestMemorySource, mode: PagingMode, root: PageTableRoot) {
        self.source = source
        self.mode = mode
        self.root = root
    }

    /// A walker for `registers`' CR3 (the raw register, PCID and all).
    public convenience init(source: any GuestMemorySource, registers: VCPURegisters, cr3: UInt64? = nil) throws(TranslationError) {
        let mode = try PagingMode(registers: registers, physicalAddressBits: source.physicalAddressBits)
        self.init(source: source, mode: mode, root: PageTableRoot(cr3: cr3 ?? registers.cr3, mode: mode))
    }

    /// A walker on another root, same source and mode (shares nothing mutable).
    public func with(root: PageTableRoot) -> PageWalker { PageWalker(source: source, mode: mode, root: root) }

    /// The 512 entries of the table at `address`.
    func table(at address: UInt64, level: PageTableLevel, for va: UInt64?) throws(TranslationError) -> [UInt64] {
        if let t = tables[address] { return t }
        let frame = address >> 12
        var result: Result<[UInt64], FrameError> = .failure(FrameError(frame: frame, code: .notPresent, reason: "not read"))
        do {
            try source.withMappedFrames([frame]) { mapped in
                do throws(FrameError) {
                    let page = try mapped.page(0)
                    result = .success((0..<512).map { page.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self).littleEndian })
                } catch {
                    result = .failure(error)
                }
            }
        } catch let e as FrameError {
            result = .failure(e)
        } catch {
            result = .failure(FrameError(frame: frame, code: .mappingFailed, reason: "\(error)"))
        }
        switch result {
        case .success(let t):
            tables[address] = t
            return t
        case .failure(let e):
            throw TranslationError(virtualAddress: va, level: level, entryAddress: address, reason: .tableUnreadable(e))
        }
    }

    private func index(_ va: UInt64, _ level: PageTableLevel) -> Int { Int((va >> level.shift) & 511) }

    /// Translates one virtual address, or says which level failed and why.
    public func translate(_ va: UInt64) throws(TranslationError) -> Translation {
        guard mode.isCanonical(va) else {
            throw TranslationError(virtualAddress: va, level: nil, reason: .nonCanonical(bits: mode.virtualAddressBits))
        }
        var tableAddress = root.tableAddress
        var level = mode.topLevel
        var writable = true, user = true, executable = true
        while true {
            let entries = try table(at: tableAddress, level: level, for: va)
            let i = index(va, level)
            let entry = entries[i]
            let entryAddress = tableAddress + UInt64(i * 8)
            guard entry & X86.present != 0 else {
                throw TranslationError(virtualAddress: va, level: level, entryAddress: entryAddress, entry: entry, reason: .notPresent)
            }
            let large = level.allowsLargePage && entry & X86.pageSize != 0
            let reserved = entry & mode.reservedBits(level: level, large: large)
            guard reserved == 0 else {
                throw TranslationError(virtualAddress: va, level: level, entryAddress: entryAddress, entry: entry, reason: .reservedBits(reserved))
            }
            writable = writable && entry & X86.writable != 0
            user = user && entry & X86.user != 0
            if mode.noExecute && entry & X86.executeDisable != 0 { executable = false }
            if large || level == .pt {
                let size = level.entrySpan
                let base = entry & X86.addressMask & ~(size - 1)
                return Translation(virtualAddress: va, physicalAddress: base | (va & (size - 1)), pageSize: size, level: level,
                                   permissions: PagePermissions(writable: writable, user: user, executable: executable,
                                                                global: entry & X86.global != 0))
            }
            guard let next = level.below else {
                throw TranslationError(virtualAddress: va, level: level, reason: .notPresent)
            }
            tableAddress = entry & X86.addressMask
            level = next
        }
    }

    /// Problems met while enumerating: subtrees skipped because an entry was malformed or a
    /// table could not be read.
    public struct Enumeration: Sendable {
        public var mappings: [Mapping]
        public var skipped: [TranslationError]
    }

    /// Every present mapping in `[start, end)` (canonical addresses, end exclusive; `end == 0`
    /// means "to the top of the address space"), merged into runs of contiguous virtual and
    /// physical pages with the same rights.
    public func mappings(from start: UInt64, to end: UInt64) throws(TranslationError) -> Enumeration {
        var out = Enumeration(mappings: [], skipped: [])
        // The walk works on the address with its sign-extension stripped.
        let width = UInt64(mode.virtualAddressBits)
        let mask: UInt64 = (1 << width) - 1
        let lo = start & mask
        let hi = end == 0 ? (1 << width) : ((end &- 1) & mask) + 1
        guard lo < hi else { return out }
        try walk(tableAddress: root.tableAddress, level: mode.topLevel, base: 0, lo: lo, hi: hi,
                 rights: PagePermissions(writable: true, user: true, executable: true), into: &out)
        return out
    }

    private func signExtend(_ va: UInt64) -> UInt64 {
        let shift = UInt64(64 - mode.virtualAddressBits)
        return UInt64(bitPattern: Int64(bitPattern: va << shift) >> Int64(shift))
    }

    private func walk(tableAddress: UInt64, level: PageTableLevel, base: UInt64, lo: UInt64, hi: UInt64,
                      rights: PagePermissions, into out: inout Enumeration) throws(TranslationError) {
        let span = level.entrySpan
        let first = lo > base ? Int((lo - base) / span) : 0
        let last = min(511, Int((hi - 1 - base) / span))
        guard first <= last else { return }
        let entries: [UInt64]
        do {
            entries = try table(at: tableAddress, level: level, for: signExtend(base + UInt64(first) * span))
        } catch {
            // The top-level table is the walk itself: if CR3 is unreadable, say so.
            if level == mode.topLevel { throw error }
            out.skipped.append(error)
            return
        }
        for i in first...last {
            let entry = entries[i]
            guard entry & X86.present != 0 else { continue }
            let va = base + UInt64(i) * span
            let large = level.allowsLargePage && entry & X86.pageSize != 0
            let reserved = entry & mode.reservedBits(level: level, large: large)
            guard reserved == 0 else {
                out.skipped.append(TranslationError(virtualAddress: signExtend(va), level: level,
                                                    entryAddress: tableAddress + UInt64(i * 8), entry: entry,
                                                    reason: .reservedBits(reserved)))
                continue
            }
            var r = rights
            r.writable = r.writable && entry & X86.writable != 0
            r.user = r.user && entry & X86.user != 0
            if mode.noExecute && entry & X86.executeDisable != 0 { r.executable = false }
            if large || level == .pt {
                r.global = entry & X86.global != 0
                // A large page may reach outside the range asked for: keep only the part inside.
                let from = max(va, lo), to = min(va + span, hi)
                let phys = (entry & X86.addressMask & ~(span - 1)) + (from - va)
                append(Mapping(virtualStart: signExtend(from), physicalStart: phys, size: to - from, permissions: r, largestPage: span),
                       to: &out.mappings)
            } else if let next = level.below {
                try walk(tableAddress: entry & X86.addressMask, level: next, base: va, lo: max(lo, va), hi: min(hi, va + span),
                         rights: r, into: &out)
            }
        }
    }

    private func append(_ m: Mapping, to list: inout [Mapping]) {
        if var last = list.last, last.virtualEnd == m.virtualStart, last.physicalStart &+ last.size == m.physicalStart,
           last.permissions.writable == m.permissions.writable, last.permissions.user == m.permissions.user,
           last.permissions.executable == m.permissions.executable {
            last.size += m.size
            last.largestPage = max(last.largestPage, m.largestPage)
            list[list.count - 1] = last
        } else {
            list.append(m)
        }
    }
}
