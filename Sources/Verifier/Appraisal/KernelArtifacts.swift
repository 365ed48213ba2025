import TPMWire

/// What a kernel's files say about it, for `refs add-kernel`: the release from a bzImage's setup
/// header, and the GNU build id from a vmlinux's `.note.gnu.build-id`. Both files are inputs an
/// operator names, but they are parsed like any untrusted bytes: every offset and size checked.
public enum KernelArtifacts {
    /// The x86 boot protocol's `kernel_version` string (bzImage setup header): "6.1.0-26-amd64
    /// (debian-kernel@…) #1 SMP PREEMPT_DYNAMIC Debian 6.1.112-1 (2024-09-30)".
    public static func bzImageVersion(_ image: [UInt8]) throws(WireError) -> String {
        let s = "bzImage setup header"
        var r = ByteReader(image)
        try r.skip(0x1FE, s)
        let bootFlag = try r.readUInt16LE("\(s).boot_flag")
        try r.skip(2, "\(s).jump")
        let magic = try r.readBytes(4, "\(s).header")   // at 0x202
        guard bootFlag == 0xAA55, magic == Array("HdrS".utf8) else {
            throw WireError(.invalidValue, "\(s): no 'HdrS' setup header with boot flag 0xAA55 (not an x86 bzImage)")
        }
        let version = try r.readUInt16LE("\(s).version")   // 0x206
        guard version >= 0x0200 else { throw WireError(.invalidValue, "\(s).version: 0x\(String(version, radix: 16)), too old to name its kernel") }
        try r.skip(0x20E - 0x208, s)
        let pointer = Int(try r.readUInt16LE("\(s).kernel_version"))
        guard pointer != 0 else { throw WireError(.invalidValue, "\(s).kernel_version: 0, the image does not name its version") }
        let start = pointer + 0x200
        guard start < image.count else {
            throw WireError(.sizeTooLarge, "\(s).kernel_version: points at byte \(start), the image has \(image.count)")
        }
        let text = image[start..<min(image.count, start + 512)].prefix { $0 != 0 }
        guard !text.isEmpty, text.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else {
            throw WireError(.invalidValue, "\(s).kernel_version: not a printable NUL-terminated string")
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// `uname -r`: the first word of the version string.
    public static func release(fromVersion version: String) -> String {
        String(version.prefix { $0 != " " })
    }

    /// The GNU build id (hex) of a little-endian ELF64 file, from its SHT_NOTE sections; nil
    /// when it has none.
    public static func elfBuildID(_ file: [UInt8]) throws(WireError) -> String? {
        let s = "ELF"
        var r = ByteReader(file)
        let ident = try r.readBytes(16, "\(s).e_ident")
        guard ident.starts(with: [0x7f, 0x45, 0x4c, 0x46]) else { throw WireError(.invalidValue, "\(s): no ELF magic") }
        guard ident[4] == 2, ident[5] == 1 else {
            throw WireError(.invalidValue, "\(s): class \(ident[4]), data \(ident[5]); a vmlinux is ELF64 little-endian (2, 1)")
        }
        var h = ByteReader(file)
        try h.skip(0x28, s)
        let shoff = try h.readUInt64LE("\(s).e_shoff")
        try h.skip(0x3A - 0x30, s)
        let shentsize = Int(try h.readUInt16LE("\(s).e_shentsize"))
        let shnum = Int(try h.readUInt16LE("\(s).e_shnum"))
        guard shoff > 0, shnum > 0 else { return nil }
        guard shentsize >= 0x40 else { throw WireError(.invalidValue, "\(s).e_shentsize: \(shentsize), an ELF64 section header has 64 bytes") }
        guard shoff <= UInt64(file.count), UInt64(shnum * shentsize) <= UInt64(file.count) - shoff else {
            throw WireError(.sizeTooLarge, "\(s): \(shnum) section headers at \(shoff) run past the file's \(file.count) bytes")
        }
        for i in 0..<shnum {
            var sh = ByteReader(file[(Int(shoff) + i * shentsize)...])
            let f = "\(s).section[\(i)]"
            try sh.skip(4, f)
            let type = try sh.readUInt32LE("\(f).sh_type")
            guard type == 7 else { continue }   // SHT_NOTE
            try sh.skip(16, f)
            let offset = try sh.readUInt64LE("\(f).sh_offset")
            let size = try sh.readUInt64LE("\(f).sh_size")
            guard offset <= UInt64(file.count), size <= UInt64(file.count) - offset else {
                throw WireError(.sizeTooLarge, "\(f): notes at \(offset), \(size) bytes, past the file's end")
            }
            var notes = ByteReader(file[Int(offset)..<Int(offset + size)])
            while notes.remaining >= 12 {
                let namesz = Int(try notes.readUInt32LE("\(f).note.namesz"))
                let descsz = Int(try notes.readUInt32LE("\(f).note.descsz"))
                let noteType = try notes.readUInt32LE("\(f).note.type")
                guard namesz <= notes.remaining, descsz <= notes.remaining else {
                    throw WireError(.sizeTooLarge, "\(f).note: name \(namesz) and descriptor \(descsz) bytes, \(notes.remaining) left")
                }
                let name = try notes.readBytes(namesz, "\(f).note.name")
                try notes.skip(min(notes.remaining, (4 - namesz % 4) % 4), "\(f).note.name padding")
                let desc = try notes.readBytes(descsz, "\(f).note.desc")
                try notes.skip(min(notes.remaining, (4 - descsz % 4) % 4), "\(f).note.desc padding")
                if noteType == 3, name == Array("GNU\0".utf8) { return Hex.encode(desc) }   // NT_GNU_BUILD_ID
            }
        }
        return nil
    }
}
