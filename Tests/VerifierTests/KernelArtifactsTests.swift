import Foundation
import Testing
import TestSupport
import TPMWire
@testable import Verifier

/// The release from a bzImage header and the build id from an ELF, against readelf on a real
/// ELF that gcc links here, and hostile inputs.
struct KernelArtifactsTests {
    static func bzImage(version: String, pointer: UInt16 = 0x100) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x400)
        b[0x1FE] = 0x55; b[0x1FF] = 0xAA
        b.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        b[0x206] = 0x0F; b[0x207] = 0x02
        b[0x20E] = UInt8(pointer & 0xff); b[0x20F] = UInt8(pointer >> 8)
        let text = Array(version.utf8) + [0]
        let at = Int(pointer) + 0x200
        if at + text.count <= b.count { b.replaceSubrange(at..<(at + text.count), with: text) }
        return b
    }

    @Test func bzImageVersionAndRelease() throws {
        let v = "6.1.0-26-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.112-1 (2024-09-30)"
        #expect(try KernelArtifacts.bzImageVersion(Self.bzImage(version: v)) == v)
        #expect(KernelArtifacts.release(fromVersion: v) == "6.1.0-26-amd64")
    }

    @Test func hostileBzImagesGetClearErrors() {
        var noMagic = Self.bzImage(version: "6.1")
        noMagic[0x202] = 0
        #expect { _ = try KernelArtifacts.bzImageVersion(noMagic) } throws: { ($0 as? WireError)?.reason.contains("not an x86 bzImage") == true }
        #expect { _ = try KernelArtifacts.bzImageVersion(Self.bzImage(version: "6.1", pointer: 0xFFFF)) } throws: {
            ($0 as? WireError)?.reason.contains("kernel_version: points at byte") == true
        }
        #expect(throws: WireError.self) { _ = try KernelArtifacts.bzImageVersion(Array(Self.bzImage(version: "6.1").prefix(0x203))) }
        #expect(throws: WireError.self) { _ = try KernelArtifacts.bzImageVersion([]) }
    }

    @Test func elfBuildIDMatchesReadelf() throws {
        let dir = try TemporaryDirectory.make(prefix: "vmv-elf")
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("t.c"), binary = dir.appendingPathComponent("t")
        try Data("int main(void) { return 0; }\n".utf8).write(to: source)
        let cc = try Tools.run(try Tools.path("gcc"), ["-Wl,--build-id=sha1", source.path, "-o", binary.path])
        #expect(cc.status == 0, "\(cc.stderr)")
        let readelf = try Tools.run(try Tools.path("readelf"), ["-n", binary.path])
        let line = try #require(readelf.stdout.split(separator: "\n").first { $0.contains("Build ID:") })
        let expected = line.split(separator: " ").last.map(String.init)
        let bytes = Array(try Data(contentsOf: binary))
        #expect(try KernelArtifacts.elfBuildID(bytes) == expected)

        // Truncated section headers, a note pointing past the end: errors, never a trap.
        #expect(throws: WireError.self) { _ = try KernelArtifacts.elfBuildID(Array(bytes.prefix(bytes.count - 100))) }
        var hostile = bytes
        hostile[0x3C] = 0xff; hostile[0x3D] = 0xff   // e_shnum
        #expect(throws: WireError.self) { _ = try KernelArtifacts.elfBuildID(hostile) }
        #expect(throws: WireError.self) { _ = try KernelArtifacts.elfBuildID(Array("not an elf at all".utf8)) }
    }
}
