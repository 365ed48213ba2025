import Introspection

/// libFuzzer target for the two memory-dump readers (QEMU dump-guest-memory ELF and xl
/// dump-core) and what runs on what they accept. Beyond "never traps", it checks their
/// promises: a dump that opens reads back every frame its segments or page table claim, the
/// page walk and the kernel locator fail only with their own errors, and a batch read reports
/// per-page failures without throwing.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMemoryDumps(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let file = MappedFile(bytes: bytes, name: "fuzz input")
    if let dump = try? QEMUDump(file: file) {
        for range in dump.physicalRanges {
            let frame = range.lowerBound >> 12
            // The first whole page of every segment must be readable, as the reader promised.
            if range.lowerBound % 4096 == 0, range.upperBound - range.lowerBound >= 4096 {
                let ok = (try? dump.withMappedFrames([frame]) { m in (try? m.page(0)) != nil }) ?? false
                precondition(ok, "frame 0x\(String(frame, radix: 16)) of a segment is unreadable")
            }
        }
        exercise(dump)
    }
    if let dump = try? XenCoreDump(file: file) {
        exercise(dump)
    }
    return 0
}

private func exercise(_ source: any GuestMemorySource) {
    // Frames that cannot be in the dump fail alone; the call itself does not throw.
    let threw = (try? source.withMappedFrames([0, 1, 0xfff_ffff_ffff, 1 << 45]) { m in m.count }) == nil
    precondition(!threw, "a batch with missing frames threw instead of reporting per page")
    guard let vcpus = try? source.vcpus() else { return }
    for registers in vcpus.prefix(4) {
        guard let walker = try? PageWalker(source: source, registers: registers) else { continue }
        for va: UInt64 in [0, 0x40_0000, 0xffff_ffff_8100_0000, 0xff11_0000_0000_0000] {
            do { _ = try walker.translate(va) } catch { _ = error.description }
        }
        _ = try? walker.mappings(from: KernelLocator.imageWindow.lowerBound, to: KernelLocator.imageWindow.upperBound)
    }
    do {
        let kernel = try KernelLocator.locate(in: source)
        let m = try KernelMeasurement(kernel: kernel, in: source)
        precondition(m.regions.count == 2, "a measurement has text and rodata")
    } catch {
        precondition(error is LocatorError || error is FrameError || error is GuestMemoryError, "unexpected error type \(type(of: error))")
    }
}
