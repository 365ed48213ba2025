import ArgumentParser
import Foundation
import Introspection
import TPMWire

/// Options shared by the commands that read guest memory: a dump, or (kernel) a live Xen domain.
struct DumpOptions: ParsableArguments {
    @Option(name: .long, help: "Memory dump: QEMU dump-guest-memory ELF or xl dump-core file.")
    var dump: String?

    @Option(name: .long, help: "A running Xen domain, by name or id: read through read-only foreign mapping (dom0 or a VMV domain).")
    var domain: String?

    @Option(name: .long, help: "vCPU whose registers to use (default: every online vCPU in turn).")
    var vcpu: Int?

    @Option(name: .long, help: "Page-table root to use instead of the vCPU's CR3 (hex).", transform: parseAddress)
    var cr3: UInt64?

    func validate() throws {
        guard (dump == nil) != (domain == nil) else { throw ValidationError("give --dump FILE or --domain NAME (one of them)") }
    }

    func open() throws -> any GuestMemorySource {
        if let domain {
            let host = try XenHost()
            let info = try UInt32(domain).map { try host.domain($0) } ?? host.domain(named: domain)
            return XenGuestMemory(host: host, domain: info)
        }
        return try MemoryDump.open(path: dump ?? "")
    }
}

func parseAddress(_ text: String) throws -> UInt64 {
    var t = text.lowercased()
    if t.hasPrefix("0x") { t.removeFirst(2) }
    t = t.replacingOccurrences(of: "_", with: "").replacingOccurrences(of: "`", with: "")
    guard !t.isEmpty, t.count <= 16, let v = UInt64(t, radix: 16) else {
        throw ValidationError("\"\(text)\" is not a 64-bit hexadecimal address")
    }
    return v
}

struct IntrospectKernel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel",
        abstract: "Locate the Linux kernel in a dump or a running Xen domain (no symbols needed) and measure its text and read-only data.",
        discussion: """
        Prints the release, the KASLR slide, the virtual and physical ranges of kernel text and \
        read-only data, and the Merkle root (RFC 6962, SHA-256, one leaf per page) of each. \
        --system-map or --vmlinux confirms the ranges against the kernel's symbols; a map that \
        does not match is an error.
        """
    )

    @OptionGroup var source: DumpOptions

    @Option(name: .long, help: "System.map of the kernel (link-time addresses), to confirm and refine.")
    var systemMap: String?

    @Option(name: .long, help: "vmlinux with a symbol table, to confirm and refine.")
    var vmlinux: String?

    @Flag(name: .long, help: "Also print every page's digest.")
    var pages = false

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    @Option(name: .long, help: "Hashing workers.")
    var workers: Int = 1

    func validate() throws {
        if systemMap != nil && vmlinux != nil { throw ValidationError("give --system-map or --vmlinux, not both") }
        guard workers >= 1 && workers <= 64 else { throw ValidationError("--workers must be 1…64") }
    }

    func run() throws {
        do {
            let memory = try source.open()
            var symbols: KernelSymbols?
            if let systemMap { symbols = try KernelSymbols(systemMapPath: systemMap) }
            if let vmlinux { symbols = try KernelSymbols(vmlinuxPath: vmlinux) }
            let kernel = try KernelLocator.locate(in: memory, vcpu: source.vcpu, cr3: source.cr3, symbols: symbols)
            let measurement = try KernelMeasurement(kernel: kernel, in: memory, workers: workers)
            let report = KernelReport(measurement, frameSpace: memory.frameSpace, includePages: pages)
            if json { try printJSON(report) } else { printText(report) }
        } catch let e as ValidationError {
            throw e
        } catch {
            throw ValidationErrorLine(message: "\(error)")
        }
    }

    func printText(_ r: KernelReport) {
        func row(_ k: String, _ v: String) { print(k.padding(toLength: 10, withPad: " ", startingAt: 0) + v) }
        row("kernel", "Linux \(r.release)")
        row("banner", r.banner)
        row("source", "\(r.domain) (\(r.frameSpace.rawValue) frames)")
        let kpti = r.viaKPTIKernelRoot ? " (vCPU on a KPTI user page table; kernel PGD used)" : ""
        row("paging", "\(r.pagingLevels)-level, vCPU \(r.vcpu.map(String.init) ?? "-"), CR3 \(r.cr3), root \(r.pageTableRoot)\(kpti)")
        row("slide", "\(r.slide) virtual, \(r.physicalSlide) physical")
        if let s = r.symbols { row("symbols", "confirmed by \(s.origin)\(s.buildID.map { ", build id \($0)" } ?? "")") }
        for region in r.regions {
            let phys = region.physicalRuns.map { "\($0.physicalStart)+\(String($0.size, radix: 16))" }.joined(separator: " ")
            row(region.name.rawValue, "\(region.virtualStart)-\(region.virtualEnd) \(region.pageCount) pages, physical \(phys)")
            if let s = region.symbolStart, let e = region.symbolEnd { row("", "symbols \(s)-\(e)") }
            row("", "merkle root \(Hex.encode(region.measurement.root)) (sha256, rfc6962)")
            if pages {
                for i in 0..<region.pageCount {
                    guard let d = region.measurement.pageDigest(i) else { continue }
                    print("  \(region.name.rawValue) \(String(i).padding(toLength: 6, withPad: " ", startingAt: 0)) 0x\(String((UInt64(region.virtualStart.dropFirst(2), radix: 16) ?? 0) + UInt64(i) * 4096, radix: 16)) \(Hex.encode(d))")
                }
            }
        }
    }
}

struct IntrospectTranslate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "translate",
        abstract: "Translate guest virtual addresses through the vCPU's page tables.",
        discussion: """
        Walks from CR3 exactly; when that fails for a kernel-half address and CR3 is a Linux KPTI \
        user page table, walks again from the kernel half of the PGD pair and says so \
        (--raw-cr3 turns that off, to see what the CPU itself would do at that moment).
        """
    )

    @Argument(help: "Virtual addresses (hex).", transform: parseAddress)
    var addresses: [UInt64]

    @OptionGroup var source: DumpOptions

    @Flag(name: .long, help: "Walk from CR3 only, without the KPTI kernel-PGD retry.")
    var rawCR3 = false

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    struct Result: Codable {
        var virtualAddress: String
        var physicalAddress: String?
        var pageSize: Int?
        var level: String?
        var permissions: String?
        var viaKPTIKernelRoot: Bool?
        var error: String?
        var failedLevel: String?
    }

    func run() throws {
        do {
            let memory = try source.open()
            var registers: VCPURegisters
            do {
                let all = try memory.vcpus()
                let wanted = source.vcpu ?? all.first(where: \.online)?.index ?? 0
                guard let r = all.first(where: { $0.index == wanted }) else {
                    throw ValidationError("no vCPU \(wanted) in the dump (it has \(all.map(\.index)))")
                }
                registers = r
            } catch let e as GuestMemoryError {
                guard let cr3 = source.cr3 else { throw e }
                registers = VCPURegisters(index: 0, cr0: X86.cr0PG, cr3: cr3, cr4: X86.cr4PAE)
            }
            if let cr3 = source.cr3 { registers.cr3 = cr3 }
            let walker = try PageWalker(source: memory, registers: registers)
            let kernelWalker = rawCR3 ? nil : walker.root.kptiKernelRoot.map { walker.with(root: $0) }
            var results: [Result] = []
            var failed = false
            for va in addresses {
                var result = Result(virtualAddress: KernelReport.hex(va))
                do throws(TranslationError) {
                    var t: Translation
                    do {
                        t = try walker.translate(va)
                    } catch let first {
                        guard let kw = kernelWalker, va >= walker.mode.kernelHalfStart, let retry = try? kw.translate(va) else { throw first }
                        t = retry
                        result.viaKPTIKernelRoot = true
                    }
                    result.physicalAddress = KernelReport.hex(t.physicalAddress)
                    result.pageSize = Int(t.pageSize)
                    result.level = t.level.description
                    result.permissions = t.permissions.description
                } catch {
                    failed = true
                    result.error = error.description
                    result.failedLevel = error.level?.description
                }
                results.append(result)
            }
            if json {
                try printJSON(results)
            } else {
                for r in results {
                    if let pa = r.physicalAddress {
                        let via = r.viaKPTIKernelRoot == true ? " (via the KPTI kernel PGD)" : ""
                        print("\(r.virtualAddress) -> \(pa) (\(sizeName(r.pageSize ?? 0)) page, \(r.level ?? "?"), \(r.permissions ?? "?"))\(via)")
                    } else {
                        print("\(r.virtualAddress): \(r.error ?? "?")")
                    }
                }
            }
            if failed { throw ExitCode(1) }
        } catch let e as ValidationError {
            throw e
        } catch let e as ExitCode {
            throw e
        } catch {
            throw ValidationErrorLine(message: "\(error)")
        }
    }

    func sizeName(_ size: Int) -> String {
        switch size {
        case 1 << 30: "1 GiB"
        case 2 << 20: "2 MiB"
        default: "4 KiB"
        }
    }
}

struct IntrospectDiff: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Name the pages that differ between two `kernel --pages --json` measurements."
    )

    @Argument(help: "Earlier measurement (JSON from `vmv introspect kernel --pages --json`).")
    var before: String

    @Argument(help: "Later measurement.")
    var after: String

    func run() throws {
        do {
            let decoder = JSONDecoder()
            let a = try decoder.decode(KernelReport.self, from: try Data(contentsOf: URL(fileURLWithPath: before)))
            let b = try decoder.decode(KernelReport.self, from: try Data(contentsOf: URL(fileURLWithPath: after)))
            var changed = false
            for ra in a.regions {
                guard let rb = b.regions.first(where: { $0.name == ra.name }) else {
                    print("\(ra.name.rawValue): only in \(before)")
                    changed = true
                    continue
                }
                switch RegionDiff.between(ra.measurement, rb.measurement) {
                case .same:
                    print("\(ra.name.rawValue): same (\(ra.pageCount) pages, root \(Hex.encode(ra.measurement.root)))")
                case .pages(let pages):
                    changed = true
                    print("\(ra.name.rawValue): \(pages.count) of \(max(ra.pageCount, rb.pageCount)) pages changed")
                    for p in pages { print("  \(p)") }
                case .rootOnly(let x, let y):
                    changed = true
                    print("\(ra.name.rawValue): root \(Hex.encode(x)) -> \(Hex.encode(y)); measure with --pages to name the pages")
                case .moved(let x, let y):
                    changed = true
                    print("\(ra.name.rawValue): moved from \(KernelReport.hex(x)) to \(KernelReport.hex(y)) (another boot or kernel); pages do not pair")
                }
            }
            if changed { throw ExitCode(1) }
        } catch let e as ExitCode {
            throw e
        } catch {
            throw ValidationErrorLine(message: "\(error)")
        }
    }
}
