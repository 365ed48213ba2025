import TPMWire

/// The few link-time symbols of a Linux kernel that the locator uses to confirm and refine what
/// it found in the page tables, from a System.map or from a vmlinux with a symbol table.
///
/// Debian's `/boot/System.map-*` is an 83-byte stub pointing to the `-dbg` package: it has none
/// of these symbols, and loading it says so.
public struct KernelSymbols: Sendable, Codable, Hashable {
    public static let wanted: Set<String> = ["_text", "_stext", "_etext", "__start_rodata", "__end_rodata", "linux_banner"]

    /// Where the symbols came from ("System.map /boot/System.map-6.1.0-56-amd64").
    public var origin: String
    /// Link-time addresses of the wanted symbols that the file has.
    public var addresses: [String: UInt64]
    /// `linux_banner` as the vmlinux file holds it, where the file has it.
    public var banner: String?
    /// The GNU build id of a vmlinux (`.note.gnu.build-id`), hex.
    public var buildID: String?

    public init(origin: String, addresses: [String: UInt64], banner: String? = nil, buildID: String? = nil) {
        self.origin = origin
        self.addresses = addresses
        self.banner = banner
        self.buildID = buildID
    }

    public var stext: UInt64? { addresses["_stext"] ?? addresses["_text"] }

    /// Parses System.map text: lines of `<hex address> <type> <name>`. Lines that do not have
    /// that shape are errors, with their line number; the wanted symbols must include `_stext`
    /// or `_text`.
    public init(systemMap text: String, origin: String) throws(WireError) {
        var found: [String: UInt64] = [:]
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.isEmpty { continue }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, fields[1].count == 1 else {
                throw WireError(.syntax, "\(origin) line \(lineNumber): expected '<address> <type> <name>', found \"\(line.prefix(80))\"")
            }
            guard let address = UInt64(fields[0], radix: 16) else {
                throw WireError(.syntax, "\(origin) line \(lineNumber): address \"\(fields[0].prefix(32))\" is not hexadecimal")
            }
            let name = String(fields[2])
            if Self.wanted.contains(name), found[name] == nil { found[name] = address }
        }
        self.init(origin: origin, addresses: found)
        try requireText(origin: origin, stubHint: text.contains("-dbg package"))
    }

    public init(systemMapPath path: String) throws {
        let file = try MappedFile(path: path)
        let bytes = file.bytes(at: 0, count: UInt64(file.size)) ?? UnsafeRawBufferPointer(start: nil, count: 0)
        try self.init(systemMap: String(decoding: bytes, as: UTF8.self), origin: "System.map \(path)")
    }

    /// Reads the symbol table (`.symtab` and its string table) of a vmlinux ELF, its build id,
    /// and the `linux_banner` bytes from the section that holds them.
    public init(vmlinuxPath path: String) throws {
        try self.init(vmlinux: try MappedFile(path: path))
    }

    public init(vmlinux file: MappedFile) throws(WireError) {
        let what = "vmlinux \(file.path)"
        let elf = try ELFFile(file: file, what: what)
        guard let symtab = elf.sectionHeaders.first(where: { $0.type == ELFFile.SectionHeader.symtab }) else {
            throw WireError(.invalidValue, "\(what): no symbol table (.symtab): a stripped kernel (the image inside vmlinuz is one) has none; use the vmlinux from the -dbg package")
        }
        guard Int(symtab.link) < elf.sectionHeaders.count else {
            throw WireError(.invalidValue, "\(what): .symtab sh_link \(symtab.link) names no section")
        }
        let strings = try elf.contents(of: elf.sectionHeaders[Int(symtab.link)], what: what)
        let symbols = try elf.contents(of: symtab, what: what)
        let entrySize = 24
        guard symtab.size % UInt64(entrySize) == 0 else {
            throw WireError(.invalidValue, "\(what): .symtab size \(symtab.size) is not a multiple of \(entrySize)")
        }
        var found: [String: UInt64] = [:]
        for i in 0..<(symbols.count / entrySize) {
            let nameOffset = Int(symbols.loadUnaligned(fromByteOffset: i * entrySize, as: UInt32.self).littleEndian)
            guard nameOffset != 0 else { continue }
            let name = try ELFFile.string(in: strings, at: nameOffset, field: "\(what): .symtab entry \(i) st_name")
            guard Self.wanted.contains(name), found[name] == nil else { continue }
            found[name] = symbols.loadUnaligned(fromByteOffset: i * entrySize + 8, as: UInt64.self).littleEndian
        }
        var banner: String?
        if let address = found["linux_banner"],
           let section = elf.sectionHeaders.first(where: { $0.type != ELFFile.SectionHeader.nobits && $0.address <= address && address - $0.address < $0.size }) {
            let bytes = try elf.contents(of: section, what: what)
            let start = Int(address - section.address)
            let text = bytes[start..<min(bytes.count, start + LinuxBanner.maxLength)].prefix { $0 != 0 }
            banner = String(decoding: text, as: UTF8.self)
        }
        var buildID: String?
        if let note = elf.sectionHeaders.first(where: { $0.name == ".note.gnu.build-id" }) {
            let notes = try ELFFile.parseNotes(Array(try elf.contents(of: note, what: what)), what: "\(what): .note.gnu.build-id")
            buildID = notes.first { $0.name == "GNU" && $0.type == 3 }.map { Hex.encode($0.descriptor) }
        }
        self.init(origin: what, addresses: found, banner: banner, buildID: buildID)
        try requireText(origin: what, stubHint: false)
    }

    private func requireText(origin: String, stubHint: Bool) throws(WireError) {
        guard stext != nil else {
            let hint = stubHint ? " (this is Debian's stub; the real System.map is in the linux-image-*-dbg package, and none is needed: leave it out)" : ""
            throw WireError(.invalidValue, "\(origin): has no _stext or _text symbol\(hint)")
        }
    }
}

/// The kernel's `linux_banner`: "Linux version <release> (<builder>) (<compiler>) <version>\n".
public struct LinuxBanner: Sendable, Codable, Hashable {
    static let prefix = Array("Linux version ".utf8)
    static let maxLength = 512

    /// The whole banner without its trailing newline.
    public var text: String
    /// `uname -r`: the token after "Linux version ".
    public var release: String

    /// Finds `linux_banner` in `bytes`: printable ASCII from "Linux version " and a release
    /// starting with a digit, up to a newline followed by NUL. Since 6.1 the image also holds a
    /// weak placeholder banner whose version reads "# SMP …" (no build number); a banner with
    /// "#<digit>" wins over it, else the first well-formed one. Returns it and its offset.
    public static func find(in bytes: UnsafeRawBufferPointer) -> (banner: LinuxBanner, offset: Int)? {
        guard bytes.count >= prefix.count else { return nil }
        var first: (LinuxBanner, Int)?
        var i = 0
        let last = bytes.count - prefix.count
        while i <= last {
            // Cheap first-byte scan, then the whole prefix.
            guard bytes[i] == 0x4c else { i += 1; continue }   // "L"
            var match = true
            for k in 1..<prefix.count where bytes[i + k] != prefix[k] { match = false; break }
            if match, let banner = parse(bytes, at: i) {
                if banner.hasBuildNumber { return (banner, i) }
                if first == nil { first = (banner, i) }
            }
            i += 1
        }
        return first.map { (banner: $0.0, offset: $0.1) }
    }

    /// Whether the version part has a build number ("#1 SMP"), which the placeholder lacks.
    var hasBuildNumber: Bool {
        guard let hash = text.firstIndex(of: "#") else { return false }
        let next = text.index(after: hash)
        return next < text.endIndex && text[next].isNumber
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, at start: Int) -> LinuxBanner? {
        var end = start + prefix.count
        let limit = min(bytes.count, start + maxLength)
        while end < limit, bytes[end] != 0x0a {
            guard bytes[end] >= 0x20, bytes[end] < 0x7f else { return nil }
            end += 1
        }
        guard end + 1 < bytes.count, bytes[end] == 0x0a, bytes[end + 1] == 0 else { return nil }
        let text = String(decoding: bytes[start..<end], as: UTF8.self)
        let rest = text.dropFirst(prefix.count)
        let release = String(rest.prefix { $0 != " " })
        guard let first = release.first, first.isNumber, release.count < rest.count, text.contains("#") else { return nil }
        return LinuxBanner(text: text, release: release)
    }
}
