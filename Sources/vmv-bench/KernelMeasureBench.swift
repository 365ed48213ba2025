import ArgumentParser
import Crypto
import Foundation
import Introspection
import TPMWire

/// Measurement throughput: page walk + read + per-page SHA-256 + Merkle tree over a region of a
/// dump, with one and with two workers, beside `openssl dgst -sha256` over the same bytes in the
/// same run, with the ratios.
///
/// By default the dump is made here: a synthetic guest whose region is mapped with 4 KiB pages
/// (the most walking per byte) onto random bytes, written as a QEMU dump-guest-memory ELF.
/// `--dump FILE --start VA` measures a region of a real dump instead.
struct KernelMeasureBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel-measure",
        abstract: "Kernel measurement throughput (walk + read + hash) beside openssl dgst -sha256."
    )

    @Option(help: "Size of the region in MiB.")
    var mib = 256

    @Option(help: "Timed runs of each; the fastest counts.")
    var runs = 3

    @Option(help: "A QEMU or xl dump-core file to measure instead of the generated one.")
    var dump: String?

    @Option(help: "With --dump: first virtual address of the region (hex), walked from vCPU 0's CR3.")
    var start: String?

    @Option(help: "Workers of the parallel run.")
    var workers = 2

    func run() throws {
        let openssl = try Bench.tool("openssl")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-bench-measure-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let size = UInt64(mib) << 20

        let dumpPath: String
        let regionStart: UInt64
        if let dump {
            guard let start, let va = UInt64(start.hasPrefix("0x") ? String(start.dropFirst(2)) : start, radix: 16) else {
                throw ValidationError("--dump needs --start with the region's first virtual address in hex")
            }
            dumpPath = dump
            regionStart = va
        } else {
            dumpPath = dir.appendingPathComponent("guest.elf").path
            regionStart = 0xffff_8880_0000_0000
            try makeGuest(size: size, at: regionStart, path: dumpPath)
        }

        let source = try MemoryDump.open(path: dumpPath)
        let registers = try source.vcpus()[0]

        // The region's frames, by a walk of its page tables.
        func walk() throws -> [UInt64] {
            let walker = try PageWalker(source: source, registers: registers)
            let found = try walker.mappings(from: regionStart, to: regionStart + size)
            guard found.mappings.reduce(0, { $0 + $1.size }) == size else {
                throw ValidationError("the region [0x\(String(regionStart, radix: 16)), +\(mib) MiB) is not fully mapped in the dump")
            }
            var frames: [UInt64] = []
            frames.reserveCapacity(Int(size >> 12))
            for m in found.mappings { for k in 0..<(m.size >> 12) { frames.append((m.physicalStart >> 12) + k) } }
            return frames
        }
        // One measurement: walk, then hash every page into the tree.
        func measure(workers: Int) throws -> [UInt8] {
            let leaves = try PageHasher.leafDigests(of: try walk(), in: source, workers: workers)
            return MerkleTree.root(leaves: leaves)
        }

        // The same bytes, in virtual order, for openssl; and their flat SHA-256 through the walk,
        // to check that both hash the same bytes.
        let regionFile = dir.appendingPathComponent("region.bin")
        let walker = try PageWalker(source: source, registers: registers)
        var flat = SHA256()
        guard FileManager.default.createFile(atPath: regionFile.path, contents: nil) else {
            throw ValidationError("cannot create \(regionFile.path)")
        }
        let out = try FileHandle(forWritingTo: regionFile)
        for m in try walker.mappings(from: regionStart, to: regionStart + size).mappings {
            var offset: UInt64 = 0
            while offset < m.size {
                let n = min(UInt64(64 << 20), m.size - offset)
                let bytes = try source.read(physical: m.physicalStart + offset, count: Int(n))
                flat.update(data: bytes)
                out.write(Data(bytes))
                offset += n
            }
        }
        try out.close()
        let ourFlat = Hex.encode(Array(flat.finalize()))

        print("kernel-measure: \(mib) MiB region at 0x\(String(regionStart, radix: 16)) of \(dump == nil ? "a generated QEMU dump (4 KiB pages)" : dumpPath)")
        _ = try measure(workers: 1)   // warm the page cache and the mapping
        let one = try Bench.best(of: runs) { try measure(workers: 1) }
        let many = try Bench.best(of: runs) { try measure(workers: workers) }
        var toolOut = ""
        let tool = try Bench.best(of: runs) { () throws -> Int32 in
            let r = try Bench.run(openssl, ["dgst", "-sha256", "-r", regionFile.path])
            toolOut = r.stdout
            return r.status
        }
        guard tool.result == 0 else { throw ValidationError("openssl dgst failed") }

        let mb = Double(size) / 1e6
        func line(_ what: String, _ s: Double) {
            print("  \(what.padding(toLength: 46, withPad: " ", startingAt: 0)) \(Bench.format(s * 1e3, 1)) ms  \(Bench.format(mb / s, 0)) MB/s")
        }
        line("vmv measure, 1 worker (walk+read+hash+tree)", one.seconds)
        line("vmv measure, \(workers) workers", many.seconds)
        line("openssl dgst -sha256 (process, same bytes)", tool.seconds)
        let walkOnly = try Bench.best(of: runs) { try walk() }
        print("  (of which the page walk alone: \(Bench.format(walkOnly.seconds * 1e3, 1)) ms)")
        let r1 = tool.seconds / one.seconds, r2 = tool.seconds / many.seconds
        print("ratio: 1 worker \(Bench.format(r1))x openssl (target 0.90x: \(r1 >= 0.9 ? "met" : "NOT met")), "
              + "\(workers) workers \(Bench.format(r2))x (target 1.80x: \(r2 >= 1.8 ? "met" : "NOT met"))")
        print("merkle root \(Hex.encode(one.result)) (\(size >> 12) pages)")
        let same = toolOut.hasPrefix(ourFlat) && one.result == many.result
        print("check: openssl's SHA-256 of the bytes equals the walk's (\(ourFlat.prefix(16))…), 1 and \(workers) workers agree: \(same ? "yes" : "NO")")
        if !same { throw ExitCode(1) }
    }

    /// A guest with `size` bytes of random memory mapped at `va` with 4 KiB pages, as a QEMU dump.
    private func makeGuest(size: UInt64, at va: UInt64, path: String) throws {
        // Page tables: one PT per 2 MiB, plus a few above; 1/512 of the region and some room.
        var guest = SyntheticGuest(memoryBytes: Int(size + size / 256 + (1 << 20)))
        var rng = SystemRandomNumberGenerator()
        var random = [UInt8](repeating: 0, count: Int(size))
        random.withUnsafeMutableBytes { b in
            let words = b.bindMemory(to: UInt64.self)
            for i in words.indices { words[i] = rng.next() }
        }
        guest.write(random, at: 0)
        guest.map(va, to: 0, size: size, rights: .data)
        try Data(DumpWriter.qemuELF(blocks: [guest.block], vcpus: [guest.registers()])).write(to: URL(fileURLWithPath: path))
    }
}
