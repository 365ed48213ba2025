import Crypto
import Foundation
import Testing
import TPMWire
@testable import Introspection

@Suite struct KernelMeasurementTests {
    func measure(_ k: SyntheticKernel, workers: Int = 1) throws -> KernelMeasurement {
        let (dump, file) = try openQEMUDump(k.guest)
        _ = file
        return try KernelMeasurement(kernel: try KernelLocator.locate(in: dump), in: dump, workers: workers)
    }

    @Test func leavesAreTheHashOfEachPageAsTheFileHoldsIt() throws {
        let k = SyntheticKernel()
        let m = try measure(k)
        let text = try #require(m.regions.first)
        #expect(text.region == .text && text.pageCount == 515 && text.virtualStart == k.text)
        #expect(text.subject == "kernel.text" && text.physicalStart == SyntheticKernel.textPhysical)
        // Leaf 513 is the second page of the 4 KiB tail; compute it from the guest's bytes.
        let physical = Int(SyntheticKernel.tailPhysical) + 0x1000
        let expected = Array(SHA256.hash(data: [0] + k.guest.memory[physical..<(physical + 4096)]))
        #expect(text.pageDigest(513) == expected)
        #expect(text.root == MerkleTree.root(leaves: try #require(text.pageDigests)))
        #expect(m.regions[1].region == .rodata && m.regions[1].pageCount == 4)
    }

    @Test(arguments: [2, 3, 8]) func workersAgreeWithOne(workers: Int) throws {
        let k = SyntheticKernel()
        let one = try measure(k, workers: 1)
        let many = try measure(k, workers: workers)
        #expect(one.regions == many.regions)
    }

    @Test func aChangedByteNamesItsPage() throws {
        var k = SyntheticKernel()
        let before = try measure(k)
        // Patch one byte of text page 300 (inside the 2 MiB page), as a static key flip would.
        k.guest.write([0xe9], at: SyntheticKernel.textPhysical + 300 * 0x1000 + 0x10)
        let after = try measure(k)
        #expect(before.regions[0].root != after.regions[0].root)
        #expect(before.regions[1].root == after.regions[1].root)
        guard case .pages(let changes) = RegionDiff.between(before.regions[0], after.regions[0]) else {
            Issue.record("expected page changes")
            return
        }
        #expect(changes.map(\.index) == [300])
        #expect(changes.first?.virtualAddress == k.text + 300 * 0x1000)
        #expect(RegionDiff.between(before.regions[1], after.regions[1]) == .same)
        #expect(RegionDiff.between(before.regions[0].withoutPages, after.regions[0]) == .rootOnly(before: before.regions[0].root, after: after.regions[0].root))
        // Another boot (another slide) moves the region: pages do not pair.
        let moved = try measure(SyntheticKernel(slide: 0x1000_0000))
        #expect(RegionDiff.between(before.regions[0], moved.regions[0]) == .moved(before: k.text, after: 0xffff_ffff_9100_0000))
    }

    @Test func anUnreadablePageFailsTheMeasurementNamingIt() throws {
        let k = SyntheticKernel()
        // Cut the dump short of the rodata pages: a second PT_LOAD holds only the page tables.
        let low = DumpWriter.Block(physicalStart: 0, bytes: Array(k.guest.memory[0..<0x41_0000]))
        let top = DumpWriter.Block(physicalStart: 0x60_0000, bytes: Array(k.guest.memory[0x60_0000...]))
        let file = try TempFile(DumpWriter.qemuELF(blocks: [low, top], vcpus: [k.guest.registers()]))
        let dump = try QEMUDump(path: file.path)
        // The locator cannot read the rodata to find the banner.
        let e = #expect(throws: LocatorError.self) { try KernelLocator.locate(in: dump) }
        #expect(e?.reason.contains("frame 0x410") == true)
        // Measuring a located kernel whose pages vanished names the frame.
        let (full, fullFile) = try openQEMUDump(k.guest)
        _ = fullFile
        let kernel = try KernelLocator.locate(in: full)
        let m = #expect(throws: FrameError.self) { try KernelMeasurement(kernel: kernel, in: dump) }
        #expect(m?.frame == 0x410)
    }

    @Test func reportRoundTripsThroughJSONAndRejectsTampering() throws {
        let k = SyntheticKernel()
        let (dump, file) = try openQEMUDump(k.guest)
        _ = file
        let m = try KernelMeasurement(kernel: try KernelLocator.locate(in: dump), in: dump)
        let report = KernelReport(m, frameSpace: dump.frameSpace, includePages: true)
        #expect(report.slide == "0x2a00000" && report.physicalSlide == "-0xe00000")
        #expect(report.regions[0].virtualStart == "0xffffffff83a00000")
        let data = try JSONEncoder().encode(report)
        let decoded = try JSONDecoder().decode(KernelReport.self, from: data)
        #expect(decoded == report)
        // Root-only reports (no --pages) decode too.
        let slim = try JSONDecoder().decode(KernelReport.self, from: try JSONEncoder().encode(KernelReport(m, frameSpace: .guestPhysical, includePages: false)))
        #expect(slim.regions[0].measurement.pageDigests == nil && slim.regions[0].measurement.root == m.regions[0].root)

        // A page digest edited in the JSON no longer hashes to the root.
        var text = String(decoding: data, as: UTF8.self)
        let digest = Hex.encode(try #require(m.regions[0].pageDigest(7)))
        text = text.replacingOccurrences(of: digest, with: String(digest.reversed()))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(KernelReport.self, from: Data(text.utf8)) }
    }
}
