/// A guest made in memory: flat guest-physical memory from address 0 and x86-64 page tables
/// built in it. Tests, fuzz seeds and the benchmark use it to get guests whose every mapping is
/// known; `DumpWriter` turns it into a dump file.
public struct SyntheticGuest: Sendable {
    public private(set) var memory: [UInt8]
    public let levels: Int
    /// Physical address of the top-level table.
    public let root: UInt64
    /// Next free page for page tables, growing down from the top of memory.
    private var nextTable: UInt64

    public struct Rights: Sendable, Hashable {
        public var writable: Bool
        public var user: Bool
        public var executable: Bool
        public var global: Bool
        public init(writable: Bool = false, user: Bool = false, executable: Bool = false, global: Bool = false) {
            self.writable = writable
            self.user = user
            self.executable = executable
            self.global = global
        }
        public static let text = Rights(executable: true, global: true)
        public static let rodata = Rights(global: true)
        public static let data = Rights(writable: true, global: true)
    }

    /// `memoryBytes` of zeroed guest memory; page tables are taken from its top.
    public init(levels: Int = 4, memoryBytes: Int) {
        precondition(levels == 4 || levels == 5, "4- or 5-level paging")
        precondition(memoryBytes % MappedFrames.pageSize == 0 && memoryBytes >= 64 * MappedFrames.pageSize)
        memory = [UInt8](repeating: 0, count: memoryBytes)
        self.levels = levels
        nextTable = UInt64(memoryBytes - MappedFrames.pageSize)
        root = nextTable
        nextTable -= UInt64(MappedFrames.pageSize)
    }

    /// The lowest address taken by page tables: data must stay below it.
    public var tableFloor: UInt64 { nextTable + UInt64(MappedFrames.pageSize) }

    mutating func allocateTable() -> UInt64 {
        let t = nextTable
        precondition(t > 0, "synthetic guest out of memory for page tables")
        nextTable -= UInt64(MappedFrames.pageSize)
        return t
    }

    public func entry(at address: UInt64) -> UInt64 {
        var v: UInt64 = 0
        for i in (0..<8).reversed() { v = v << 8 | UInt64(memory[Int(address) + i]) }
        return v
    }

    public mutating func setEntry(at address: UInt64, _ value: UInt64) {
        for i in 0..<8 { memory[Int(address) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    public mutating func write(_ bytes: [UInt8], at address: UInt64) {
        memory.replaceSubrange(Int(address)..<(Int(address) + bytes.count), with: bytes)
    }

    /// Address of the entry for `va` at `level`, creating the tables above it as needed.
    public mutating func entryAddress(for va: UInt64, level: PageTableLevel) -> UInt64 {
        var table = root
        var l = levels == 5 ? PageTableLevel.pml5 : .pml4
        while true {
            let address = table + ((va >> l.shift) & 511) * 8
            if l == level { return address }
            var e = entry(at: address)
            if e & X86.present == 0 {
                let t = allocateTable()
                // Intermediate entries grant everything; the leaf decides.
                e = t | X86.present | X86.writable | X86.user
                setEntry(at: address, e)
            }
            precondition(e & X86.pageSize == 0, "mapping under a large page")
            table = e & X86.addressMask
            guard let next = l.below else { return address }
            l = next
        }
    }

    /// Maps `[va, va+size)` onto `[pa, pa+size)` with pages of `pageSize` (4 KiB, 2 MiB or 1 GiB).
    public mutating func map(_ va: UInt64, to pa: UInt64, size: UInt64, pageSize: UInt64 = 4096, rights: Rights) {
        let level: PageTableLevel = pageSize == 1 << 30 ? .pdpt : pageSize == 2 << 20 ? .pd : .pt
        precondition(va % pageSize == 0 && pa % pageSize == 0 && size % pageSize == 0, "aligned mapping")
        var offset: UInt64 = 0
        while offset < size {
            let address = entryAddress(for: va &+ offset, level: level)
            var e = (pa + offset) | X86.present | X86.accessed
            if level != .pt { e |= X86.pageSize }
            if rights.writable { e |= X86.writable | X86.dirty }
            if rights.user { e |= X86.user }
            if !rights.executable { e |= X86.executeDisable }
            if rights.global { e |= X86.global }
            setEntry(at: address, e)
            offset += pageSize
        }
    }

    /// Registers of a 64-bit vCPU in kernel mode on this guest's page tables.
    public func registers(index: Int = 0, cr3LowBits: UInt64 = 0, pcid: Bool = false, rootOverride: UInt64? = nil) -> VCPURegisters {
        var cr4 = X86.cr4PAE | X86.cr4PSE
        if levels == 5 { cr4 |= X86.cr4LA57 }
        if pcid { cr4 |= X86.cr4PCIDE }
        return VCPURegisters(index: index, cr0: X86.cr0PG | X86.cr0WP | 1, cr3: (rootOverride ?? root) | cr3LowBits, cr4: cr4,
                             efer: X86.eferLME | X86.eferLMA | X86.eferNXE, rip: 0xffff_ffff_8100_0000, rsp: 0, cs: 0x10)
    }

    /// The whole memory as one QEMU dump block.
    public var block: DumpWriter.Block { DumpWriter.Block(physicalStart: 0, bytes: memory) }
}
