import Foundation
import Introspection

/// A file in a private temporary directory, removed when the value goes away.
final class TempFile {
    let directory: URL
    let path: String

    init(_ bytes: [UInt8], name: String = "dump.elf") throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-introspection-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

/// Writes a synthetic guest as a QEMU dump and opens it with the real reader.
func openQEMUDump(_ guest: SyntheticGuest, vcpus: [VCPURegisters]? = nil) throws -> (QEMUDump, TempFile) {
    let file = try TempFile(DumpWriter.qemuELF(blocks: [guest.block], vcpus: vcpus ?? [guest.registers()]))
    return (try QEMUDump(path: file.path), file)
}

/// Little-endian helpers for building hostile inputs by hand.
extension Array where Element == UInt8 {
    mutating func putLE(_ value: UInt64, at offset: Int, size: Int) {
        for i in 0..<size { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
