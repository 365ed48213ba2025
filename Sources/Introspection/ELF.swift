import TPMWire

/// ELF64 little-endian, as far as memory dumps and vmlinux need it: the file header, program
/// headers, section headers and notes. Every count and offset comes from the file, so every one
/// is checked against the file's size before anything is read; errors name the table, the entry
/// and the field.
public struct ELFFile: Sendable {
    public static let headerSize = 64
    public static let programHeaderSize = 56
    public static let sectionHeaderSize = 64
    /// `e_phnum == PN_XNUM` means the real count is in section header 0's `sh_info`.
    static let pnXNum: UInt16 = 0xffff
    /// More table entries than any dump or kernel has; beyond this a count is hostile.
    static let maxTableEntries = 1 << 20

    public enum FileType: UInt16, Sendable { case relocatable = 1, executable = 2, shared = 3, core = 4 }

    public struct Header: Sendable, Hashable {
        public var type: UInt16
        public var machine: UInt16
        public var programHeaderOffset: UInt64
        public var sectionHeaderOffset: UInt64
        public var programHeaderEntrySize: UInt16
        public var programHeaderCount: UInt16
        public var sectionHeaderEntrySize: UInt16
        public var sectionHeaderCount: UInt16
        public var sectionNameTableIndex: UInt16
    }

    public struct ProgramHeader: Sendable, Hashable {
        public static let load: UInt32 = 1
        public static let note: UInt32 = 4
        public var index: Int
        public var type: UInt32
        public var flags: UInt32
        public var offset: UInt64
        public var virtualAddress: UInt64
        public var physicalAddress: UInt64
        public var fileSize: UInt64
        public var memorySize: UInt64
    }

    public struct SectionHeader: Sendable, Hashable {
        public static let symtab: UInt32 = 2
        public static let strtab: UInt32 = 3
        public static let note: UInt32 = 7
        public static let nobits: UInt32 = 8
        public var index: Int
        public var name: String
        public var nameOffset: UInt32
        public var type: UInt32
        public var flags: UInt64
        public var address: UInt64
        public var offset: UInt64
        public var size: UInt64
        public var link: UInt32
        public var info: UInt32
        public var entrySize: UInt64
    }

    public struct Note: Sendable, Hashable {
        public var name: String
        public var type: UInt32
        public var descriptor: [UInt8]
    }

    public let file: MappedFile
    public let header: Header
    public let programHeaders: [ProgramHeader]
    public let sectionHeaders: [SectionHeader]

    /// Parses the headers of `file`. `what` names the file in errors ("QEMU dump", "vmlinux").
    public init(file: MappedFile, what: String) throws(WireError) {
        self.file = file
        guard let identBytes = file.copy(at: 0, count: 16) else {
            throw WireError.truncated("\(what): ELF e_ident", needed: 16, available: file.size)
        }
        guard identBytes[0..<4].elementsEqual([0x7f, 0x45, 0x4c, 0x46]) else {
            throw WireError(.invalidValue, "\(what): e_ident magic is not \\x7fELF")
        }
        guard identBytes[4] == 2 else {
            throw WireError(.invalidValue, "\(what): e_ident[EI_CLASS] is \(identBytes[4]), only ELFCLASS64 (2) is supported")
        }
        guard identBytes[5] == 1 else {
            throw WireError(.invalidValue, "\(what): e_ident[EI_DATA] is \(identBytes[5]), only little-endian (1) is supported")
        }
        guard let headerBytes = file.copy(at: 0, count: UInt64(Self.headerSize)) else {
            throw WireError.truncated("\(what): ELF header", needed: Self.headerSize, available: file.size)
        }
        var r = ByteReader(headerBytes)
        try r.skip(16, "e_ident")
        let type = try r.readUInt16LE("e_type")
        let machine = try r.readUInt16LE("e_machine")
        _ = try r.readUInt32LE("e_version")
        _ = try r.readUInt64LE("e_entry")
        let phoff = try r.readUInt64LE("e_phoff")
        let shoff = try r.readUInt64LE("e_shoff")
        _ = try r.readUInt32LE("e_flags")
        // e_ehsize is not checked: QEMU's dump-guest-memory writes 8 there.
        _ = try r.readUInt16LE("e_ehsize")
        let phentsize = try r.readUInt16LE("e_phentsize")
        let phnum = try r.readUInt16LE("e_phnum")
        let shentsize = try r.readUInt16LE("e_shentsize")
        let shnum = try r.readUInt16LE("e_shnum")
        let shstrndx = try r.readUInt16LE("e_shstrndx")
        header = Header(type: type, machine: machine, programHeaderOffset: phoff, sectionHeaderOffset: shoff,
                        programHeaderEntrySize: phentsize, programHeaderCount: phnum,
                        sectionHeaderEntrySize: shentsize, sectionHeaderCount: shnum, sectionNameTableIndex: shstrndx)

        // Section header 0 carries the extended counts (PN_XNUM, SHN_UNDEF count, SHN_XINDEX).
        var section0: (size: UInt64, link: UInt32, info: UInt32)?
        if shoff != 0 {
            guard shentsize == UInt16(Self.sectionHeaderSize) else {
                throw WireError(.invalidValue, "\(what): e_shentsize is \(shentsize), ELF64 section headers are \(Self.sectionHeaderSize) bytes")
            }
            guard let s0 = file.copy(at: shoff, count: UInt64(Self.sectionHeaderSize)) else {
                throw WireError(.sizeTooLarge, "\(what): e_shoff 0x\(String(shoff, radix: 16)) puts section header 0 beyond the end of the \(file.size)-byte file")
            }
            var r0 = ByteReader(s0)
            try r0.skip(32, "section header 0")
            let size = try r0.readUInt64LE("section header 0 sh_size")
            let link = try r0.readUInt32LE("section header 0 sh_link")
            let info = try r0.readUInt32LE("section header 0 sh_info")
            section0 = (size, link, info)
        }

        var programCount = Int(phnum)
        if phnum == Self.pnXNum {
            guard let s0 = section0 else {
                throw WireError(.invalidValue, "\(what): e_phnum is PN_XNUM but the file has no section header 0 to hold the real count")
            }
            programCount = Int(s0.info)
        }
        var programs: [ProgramHeader] = []
        if programCount > 0 {
            guard phentsize == UInt16(Self.programHeaderSize) else {
                throw WireError(.invalidValue, "\(what): e_phentsize is \(phentsize), ELF64 program headers are \(Self.programHeaderSize) bytes")
            }
            let table = try Self.table(file, what: what, name: "program header table", offset: phoff,
                                       count: programCount, entrySize: Self.programHeaderSize)
            var pr = ByteReader(table)
            programs.reserveCapacity(programCount)
            for i in 0..<programCount {
                let f = "\(what): program header \(i)"
                programs.append(ProgramHeader(
                    index: i,
                    type: try pr.readUInt32LE("\(f) p_type"),
                    flags: try pr.readUInt32LE("\(f) p_flags"),
                    offset: try pr.readUInt64LE("\(f) p_offset"),
                    virtualAddress: try pr.readUInt64LE("\(f) p_vaddr"),
                    physicalAddress: try pr.readUInt64LE("\(f) p_paddr"),
                    fileSize: try pr.readUInt64LE("\(f) p_filesz"),
                    memorySize: try pr.readUInt64LE("\(f) p_memsz")))
                try pr.skip(8, "\(f) p_align")
            }
        }
        programHeaders = programs

        var sections: [SectionHeader] = []
        if let s0 = section0 {
            let sectionCount = shnum == 0 ? Int(clamping: s0.size) : Int(shnum)
            let table = try Self.table(file, what: what, name: "section header table", offset: shoff,
                                       count: sectionCount, entrySize: Self.sectionHeaderSize)
            var sr = ByteReader(table)
            sections.reserveCapacity(sectionCount)
            for i in 0..<sectionCount {
                let f = "\(what): section header \(i)"
                let nameOffset = try sr.readUInt32LE("\(f) sh_name")
                let type = try sr.readUInt32LE("\(f) sh_type")
                let flags = try sr.readUInt64LE("\(f) sh_flags")
                let address = try sr.readUInt64LE("\(f) sh_addr")
                let offset = try sr.readUInt64LE("\(f) sh_offset")
                let size = try sr.readUInt64LE("\(f) sh_size")
                let link = try sr.readUInt32LE("\(f) sh_link")
                let info = try sr.readUInt32LE("\(f) sh_info")
                _ = try sr.readUInt64LE("\(f) sh_addralign")
                let entrySize = try sr.readUInt64LE("\(f) sh_entsize")
                sections.append(SectionHeader(index: i, name: "", nameOffset: nameOffset, type: type, flags: flags,
                                              address: address, offset: offset, size: size, link: link, info: info,
                                              entrySize: entrySize))
            }
            // Names come from the section-name string table (SHN_XINDEX: its index is in sh_link of 0).
            var nameIndex = Int(shstrndx)
            if shstrndx == 0xffff { nameIndex = Int(s0.link) }
            if nameIndex != 0 {
                guard nameIndex < sections.count else {
                    throw WireError(.invalidValue, "\(what): e_shstrndx \(nameIndex) is not one of the \(sections.count) sections")
                }
                let strtab = sections[nameIndex]
                guard strtab.type != SectionHeader.nobits, let names = file.bytes(at: strtab.offset, count: strtab.size) else {
                    throw WireError(.sizeTooLarge, "\(what): section-name table (section \(nameIndex)) at offset 0x\(String(strtab.offset, radix: 16)) size \(strtab.size) lies beyond the end of the \(file.size)-byte file")
                }
                for i in sections.indices {
                    sections[i].name = try Self.string(in: names, at: Int(sections[i].nameOffset),
                                                       field: "\(what): section header \(i) sh_name")
                }
            }
        }
        sectionHeaders = sections
    }

    private static func table(_ file: MappedFile, what: String, name: String, offset: UInt64,
                              count: Int, entrySize: Int) throws(WireError) -> [UInt8] {
        guard count <= maxTableEntries else {
            throw WireError(.countTooLarge, "\(what): \(name) has \(count) entries, more than the limit of \(maxTableEntries)")
        }
        let bytes = UInt64(count) * UInt64(entrySize)
        guard let table = file.copy(at: offset, count: bytes) else {
            throw WireError(.sizeTooLarge, "\(what): \(name) (\(count) entries of \(entrySize) bytes at offset 0x\(String(offset, radix: 16))) runs beyond the end of the \(file.size)-byte file")
        }
        return table
    }

    /// A NUL-terminated string at `offset` in a string table.
    static func string(in table: UnsafeRawBufferPointer, at offset: Int, field: String) throws(WireError) -> String {
        guard offset >= 0, offset < table.count else {
            throw WireError(.invalidValue, "\(field): string offset \(offset) is outside the \(table.count)-byte string table")
        }
        var end = offset
        while end < table.count, table[end] != 0 { end += 1 }
        guard end < table.count else {
            throw WireError(.truncated, "\(field): string at offset \(offset) has no terminating NUL")
        }
        return String(decoding: table[offset..<end], as: UTF8.self)
    }

    public func section(named name: String) -> SectionHeader? {
        sectionHeaders.first { $0.name == name }
    }

    /// The bytes of a section, checked against the file.
    public func contents(of section: SectionHeader, what: String) throws(WireError) -> UnsafeRawBufferPointer {
        guard section.type != SectionHeader.nobits else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        guard let b = file.bytes(at: section.offset, count: section.size) else {
            throw WireError(.sizeTooLarge, "\(what): section \(section.index) \(section.name) (offset 0x\(String(section.offset, radix: 16)), size \(section.size)) runs beyond the end of the \(file.size)-byte file")
        }
        return b
    }

    /// Notes are metadata (a few hundred bytes per vCPU); a note area larger than this is hostile.
    public static let maxNoteBytes: UInt64 = 16 << 20

    /// Parses the notes in `[offset, offset+size)` of the file.
    public func notes(offset: UInt64, size: UInt64, what: String) throws(WireError) -> [Note] {
        guard size <= Self.maxNoteBytes else {
            throw WireError(.sizeTooLarge, "\(what): note area of \(size) bytes exceeds the limit of \(Self.maxNoteBytes)")
        }
        guard let bytes = file.copy(at: offset, count: size) else {
            throw WireError(.sizeTooLarge, "\(what): note area at offset 0x\(String(offset, radix: 16)) size \(size) runs beyond the end of the \(file.size)-byte file")
        }
        return try Self.parseNotes(bytes, what: what)
    }

    /// Parses an ELF note area: `namesz`, `descsz`, `type`, then name and descriptor each padded
    /// to 4 bytes.
    public static func parseNotes(_ bytes: [UInt8], what: String) throws(WireError) -> [Note] {
        var r = ByteReader(bytes)
        var notes: [Note] = []
        while r.remaining > 0 {
            let f = "\(what): note \(notes.count)"
            // Trailing zero padding after the last note is not a note.
            if r.remaining < 12 {
                let rest = try r.readBytes(r.remaining, "\(f) padding")
                guard rest.allSatisfy({ $0 == 0 }) else {
                    throw WireError.truncated("\(f) header", needed: 12, available: rest.count)
                }
                break
            }
            let nameSize = Int(try r.readUInt32LE("\(f) n_namesz"))
            let descSize = Int(try r.readUInt32LE("\(f) n_descsz"))
            let type = try r.readUInt32LE("\(f) n_type")
            guard nameSize <= r.remaining else {
                throw WireError(.sizeTooLarge, "\(f) n_namesz \(nameSize) exceeds the \(r.remaining) bytes left in the note area")
            }
            let nameBytes = try r.readBytes(nameSize, "\(f) name")
            try r.skip(min(padding4(nameSize), r.remaining), "\(f) name padding")
            guard descSize <= r.remaining else {
                throw WireError(.sizeTooLarge, "\(f) (\(printableName(nameBytes)), type \(type)) n_descsz \(descSize) exceeds the \(r.remaining) bytes left in the note area")
            }
            let desc = try r.readBytes(descSize, "\(f) descriptor")
            try r.skip(min(padding4(descSize), r.remaining), "\(f) descriptor padding")
            notes.append(Note(name: printableName(nameBytes), type: type, descriptor: desc))
        }
        return notes
    }

    private static func padding4(_ n: Int) -> Int { (4 - n % 4) % 4 }

    private static func printableName(_ bytes: [UInt8]) -> String {
        let trimmed = bytes.prefix { $0 != 0 }
        return String(decoding: trimmed, as: UTF8.self)
    }
}
