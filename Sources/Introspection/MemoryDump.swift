import TPMWire

/// Opens a memory dump of either kind by looking at it: an `xl dump-core` file has a
/// `.note.Xen` section, a QEMU `dump-guest-memory` file has PT_LOAD segments.
public enum MemoryDump {
    public static func open(path: String) throws -> any GuestMemorySource {
        let file = try MappedFile(path: path)
        let elf = try ELFFile(file: file, what: "dump \(path)")
        if elf.section(named: ".note.Xen") != nil {
            return try XenCoreDump(file: file)
        }
        return try QEMUDump(file: file)
    }
}
