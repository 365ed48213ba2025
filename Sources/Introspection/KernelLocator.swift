/// A part of the kernel image found in the page tables: a page-aligned virtual range and the
/// physical (frame-space) runs behind it.
public struct KernelRegion: Sendable, Hashable {
    public enum Name: String, Sendable, Codable, Hashable {
        /// Kernel text: mapped executable and read-only.
        case text
        /// Read-only data, `__start_rodata` to `__end_rodata`: read-only and not executable.
        case rodata
    }

    public var name: Name
    public var virtualStart: UInt64
    public var virtualEnd: UInt64
    /// Virtual→physical runs covering the range, in address order.
    public var runs: [Mapping]
    /// The exact symbol range (`_stext`…`_etext`, `__start_rodata`…`__end_rodata`) when symbols
    /// were given; the measured pages are always whole pages.
    public var symbolRange: Range<UInt64>?

    public var pageCount: Int { Int((virtualEnd - virtualStart) / UInt64(MappedFrames.pageSize)) }

    /// The frame of each page, in virtual order.
    public var frames: [UInt64] {
        var out: [UInt64] = []
        out.reserveCapacity(pageCount)
        for run in runs {
            let first = run.physicalStart >> 12
            for k in 0..<(run.size >> 12) { out.append(first + k) }
        }
        return out
    }
}

/// What the locator found.
public struct LocatedKernel: Sendable, Hashable {
    public var banner: LinuxBanner
    public var bannerAddress: UInt64
    /// KASLR slide: how far the kernel's text is from its link address
    /// (`_stext` from the symbols, else x86-64's default `__START_KERNEL`, 0xffffffff81000000).
    public var slide: Int64
    /// Where the text starts physically, minus the default physical start (16 MiB): the
    /// physical part of KASLR. In machine addresses for a PV guest.
    public var physicalSlide: Int64
    public var text: KernelRegion
    public var rodata: KernelRegion
    public var mode: PagingMode
    /// The vCPU whose registers led to the kernel, and the root that mapped it.
    public var vcpu: Int?
    public var root: PageTableRoot
    /// True when the vCPU was on a KPTI user page table and the kernel was found through the
    /// kernel half of its PGD pair.
    public var viaKPTIKernelRoot: Bool
    /// The symbols that confirmed the ranges, when given.
    public var symbols: KernelSymbols?

    public var regions: [KernelRegion] { [text, rodata] }
}

/// Why the kernel could not be located; the reason says what was looked at.
public struct LocatorError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        case noRegisters, noImage, noBanner, symbolMismatch, unreadable
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}

/// Finds a Linux x86-64 kernel in guest memory without symbols.
///
/// What it relies on (see docs/introspection.md):
/// - the kernel image is mapped in `[__START_KERNEL_map, +1 GiB)` = `[0xffffffff80000000,
///   0xffffffffc0000000)`, the same in every process's page tables, whatever KASLR chose;
/// - strict kernel RWX (`CONFIG_STRICT_KERNEL_RWX`, on in every distribution kernel): after boot,
///   text is the run mapped read-only and executable, read-only data the next run mapped
///   read-only and not executable (the gaps between are freed: writable or not present);
/// - `linux_banner` ("Linux version …\n") lies in read-only data.
/// With KPTI, a vCPU caught in user space holds the user PGD, which does not map the kernel:
/// the kernel PGD is the page below it (Linux allocates the pair as 8 KiB).
public enum KernelLocator {
    public static let imageWindow: Range<UInt64> = 0xffff_ffff_8000_0000..<0xffff_ffff_c000_0000
    /// `__START_KERNEL`: `__START_KERNEL_map` + `CONFIG_PHYSICAL_START` (16 MiB).
    public static let defaultTextStart: UInt64 = 0xffff_ffff_8100_0000
    public static let defaultPhysicalStart: UInt64 = 0x100_0000

    /// Locates the kernel. `vcpu` picks the vCPU whose registers to use (default: every online
    /// vCPU in turn, kernel-mode ones first); `cr3` overrides that vCPU's CR3; `symbols`
    /// confirms and refines the ranges.
    public static func locate(in source: any GuestMemorySource, vcpu: Int? = nil, cr3: UInt64? = nil,
                              symbols: KernelSymbols? = nil) throws -> LocatedKernel {
        var candidates: [VCPURegisters]
        do {
            candidates = try source.vcpus()
        } catch {
            guard let cr3 else { throw LocatorError(.noRegisters, "\(error)") }
            // No register state: assume 4-level long mode with the given root.
            candidates = [VCPURegisters(index: 0, cr0: X86.cr0PG, cr3: cr3, cr4: X86.cr4PAE)]
        }
        if let vcpu {
            guard let r = candidates.first(where: { $0.index == vcpu }) else {
                throw LocatorError(.noRegisters, "no vCPU \(vcpu): the source has \(candidates.map(\.index))")
            }
            candidates = [r]
        } else {
            candidates = candidates.filter(\.online).sorted { ($0.privilegeLevel ?? 0, $0.index) < ($1.privilegeLevel ?? 0, $1.index) }
        }
        if let cr3 { candidates = candidates.map { var r = $0; r.cr3 = cr3; return r } }
        guard !candidates.isEmpty else { throw LocatorError(.noRegisters, "no online vCPU to take a page-table root from") }

        var failures: [String] = []
        for registers in candidates {
            let walker: PageWalker
            do {
                walker = try PageWalker(source: source, registers: registers)
            } catch {
                failures.append("vCPU \(registers.index): \(error)")
                continue
            }
            var roots: [(PageTableRoot, Bool)] = []
            if let kernelRoot = walker.root.kptiKernelRoot { roots.append((kernelRoot, true)) }
            roots.append((walker.root, false))
            for (root, viaKPTI) in roots {
                do {
                    var found = try findImage(walker.with(root: root))
                    found.vcpu = registers.index
                    found.viaKPTIKernelRoot = viaKPTI
                    if let symbols { try refine(&found, with: symbols, source: source) }
                    return found
                } catch let e as LocatorError where e.code == .symbolMismatch {
                    throw e
                } catch {
                    failures.append("vCPU \(registers.index), \(root): \(error)")
                }
            }
        }
        throw LocatorError(.noImage, "no Linux kernel found: " + failures.joined(separator: "; "))
    }

    private enum Class { case text, rodata, other }

    /// `pvKernel`: the page tables of a 64-bit Xen PV guest (machine frames). Its kernel runs in
    /// ring 3, so Xen has every kernel mapping carry the user bit (guest user space is kept out
    /// by its separate user page table, ctrlreg[1]); there the bit says nothing.
    private static func classify(_ p: PagePermissions, pvKernel: Bool) -> Class {
        if p.writable || (p.user && !pvKernel) { return .other }
        return p.executable ? .text : .rodata
    }

    /// A stretch of the image window of one class, possibly over several physical runs.
    private struct Run {
        var cls: Class
        var start: UInt64
        var end: UInt64
        var mappings: [Mapping]
    }

    static func findImage(_ walker: PageWalker) throws -> LocatedKernel {
        let window = imageWindow
        let found = try walker.mappings(from: window.lowerBound, to: window.upperBound)
        var runs: [Run] = []
        let pvKernel = walker.source.frameSpace == .machine
        for m in found.mappings {
            let cls = classify(m.permissions, pvKernel: pvKernel)
            if var last = runs.last, last.cls == cls, last.end == m.virtualStart {
                last.end = m.virtualEnd
                last.mappings.append(m)
                runs[runs.count - 1] = last
            } else {
                runs.append(Run(cls: cls, start: m.virtualStart, end: m.virtualEnd, mappings: [m]))
            }
        }
        let texts = runs.indices.filter { runs[$0].cls == .text }
        guard !texts.isEmpty else {
            let skipped = found.skipped.isEmpty ? "" : "; \(found.skipped.count) subtrees skipped, first: \(found.skipped[0])"
            throw LocatorError(.noImage, "no read-only executable mapping in the kernel image window [0x\(hex64(window.lowerBound)), 0x\(hex64(window.upperBound))) (\(found.mappings.count) mappings there\(skipped)); without strict kernel RWX text and data cannot be told apart")
        }
        var problems: [String] = []
        for t in texts {
            // Read-only data is the next read-only, non-executable run; another text run first
            // means this one was not the kernel's text.
            guard let r = runs[(t + 1)...].first(where: { $0.cls != .other }), r.cls == .rodata else {
                problems.append("text at 0x\(hex64(runs[t].start)) has no read-only data run after it")
                continue
            }
            let bytes: [UInt8]
            do {
                bytes = try read(r.mappings, from: walker.source)
            } catch {
                problems.append("read-only data at 0x\(hex64(r.start)): \(error)")
                continue
            }
            guard let (banner, offset) = bytes.withUnsafeBytes({ LinuxBanner.find(in: $0) }) else {
                problems.append("no \"Linux version\" banner in the read-only data at [0x\(hex64(r.start)), 0x\(hex64(r.end)))")
                continue
            }
            let text = runs[t]
            let physical = text.mappings[0].physicalStart
            return LocatedKernel(
                banner: banner, bannerAddress: r.start + UInt64(offset),
                slide: Int64(bitPattern: text.start &- defaultTextStart),
                physicalSlide: Int64(bitPattern: physical &- defaultPhysicalStart),
                text: KernelRegion(name: .text, virtualStart: text.start, virtualEnd: text.end, runs: text.mappings),
                rodata: KernelRegion(name: .rodata, virtualStart: r.start, virtualEnd: r.end, runs: r.mappings),
                mode: walker.mode, vcpu: nil, root: walker.root, viaKPTIKernelRoot: false, symbols: nil)
        }
        throw LocatorError(.noBanner, problems.joined(separator: "; "))
    }

    /// The bytes behind a list of mappings, in virtual order.
    static func read(_ mappings: [Mapping], from source: any GuestMemorySource) throws -> [UInt8] {
        var out: [UInt8] = []
        for m in mappings { out += try source.read(physical: m.physicalStart, count: Int(m.size)) }
        return out
    }

    /// Checks the page-table ranges against link-time symbols moved by the slide, and records
    /// the exact symbol ranges. A kernel that does not match its symbols is an error, not a
    /// warning: measuring with the wrong map would compare the wrong pages.
    static func refine(_ k: inout LocatedKernel, with symbols: KernelSymbols, source: any GuestMemorySource) throws {
        guard let stext = symbols.stext else {
            throw LocatorError(.symbolMismatch, "\(symbols.origin): no _stext")
        }
        let slide = Int64(bitPattern: k.text.virtualStart &- stext)
        func moved(_ name: String) -> UInt64? { symbols.addresses[name].map { $0 &+ UInt64(bitPattern: slide) } }
        let page = UInt64(MappedFrames.pageSize)
        func pageUp(_ v: UInt64) -> UInt64 { (v + page - 1) / page * page }
        var mismatches: [String] = []
        func expect(_ what: String, _ symbol: UInt64?, _ seen: UInt64) {
            guard let symbol else { return }
            if symbol != seen { mismatches.append("\(what) is 0x\(hex64(symbol)) by the symbols, 0x\(hex64(seen)) in the page tables") }
        }
        expect("end of text (_etext, page-aligned)", moved("_etext").map(pageUp), k.text.virtualEnd)
        expect("start of read-only data (__start_rodata)", moved("__start_rodata"), k.rodata.virtualStart)
        expect("end of read-only data (__end_rodata, page-aligned)", moved("__end_rodata").map(pageUp), k.rodata.virtualEnd)
        expect("linux_banner", moved("linux_banner"), k.bannerAddress)
        if let fileBanner = symbols.banner, fileBanner != k.banner.text + "\n" && fileBanner != k.banner.text {
            mismatches.append("the banner in the file (\"\(fileBanner.prefix(80))\") differs from memory (\"\(k.banner.text.prefix(80))\")")
        }
        guard mismatches.isEmpty else {
            throw LocatorError(.symbolMismatch, "\(symbols.origin) does not match this kernel (slide 0x\(String(slide, radix: 16))): " + mismatches.joined(separator: "; "))
        }
        k.slide = slide
        k.symbols = symbols
        if let s = moved("_stext"), let e = moved("_etext") { k.text.symbolRange = s..<e }
        if let s = moved("__start_rodata"), let e = moved("__end_rodata") { k.rodata.symbolRange = s..<e }
    }
}
