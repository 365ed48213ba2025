// Guest memory: the one interface through which introspection reads a guest, whether the guest
// is a live Xen domain (foreign mapping) or a memory dump (ELF core from QEMU or `xl dump-core`).

/// What the frame numbers of a source mean: the numbers the guest's own page tables hold.
///
/// The page walker never converts between the two: it reads a table entry, takes the frame
/// number out of it and asks the same source for that frame. So a source must be addressed in
/// the numbering its guest's page tables use.
public enum FrameSpace: String, Sendable, Codable, Hashable {
    /// Guest-physical (pseudo-physical) frames: HVM and PVH domains, QEMU guests.
    case guestPhysical = "guest-physical"
    /// Machine frames: Xen PV domains, whose page-table entries hold machine frame numbers (MFNs).
    case machine
}

/// Which guest a source reads, as far as the source knows it.
public struct DomainIdentity: Sendable, Codable, Hashable, CustomStringConvertible {
    /// How the guest is virtualised, where known.
    public enum Kind: String, Sendable, Codable, Hashable {
        case pv, pvh, hvm
        /// A QEMU/KVM virtual machine (full virtualisation outside Xen).
        case qemu
    }

    /// Xen domain id; nil outside Xen or where unknown (a dump file does not record it).
    public var domid: UInt32?
    /// Domain name (xenstore `/local/domain/<domid>/name`), where known.
    public var name: String?
    /// Domain UUID in its canonical lower-case 8-4-4-4-12 form (xenstore `/vm` path or
    /// `xc_domain_getinfo` handle), where known.
    public var uuid: String?
    public var kind: Kind?
    /// Where the memory comes from, for people: `xen`, `qemu-elf:/path`, `xen-core:/path`.
    public var origin: String

    public init(domid: UInt32? = nil, name: String? = nil, uuid: String? = nil, kind: Kind? = nil, origin: String) {
        self.domid = domid
        self.name = name
        self.uuid = uuid
        self.kind = kind
        self.origin = origin
    }

    public var description: String {
        var parts: [String] = []
        if let name { parts.append(name) }
        if let domid { parts.append("domid \(domid)") }
        if let uuid { parts.append(uuid) }
        if let kind { parts.append(kind.rawValue) }
        parts.append(origin)
        return parts.joined(separator: ", ")
    }
}

/// The control registers and the few general registers that address translation and the
/// kernel locator need, for one vCPU.
public struct VCPURegisters: Sendable, Codable, Hashable {
    public var index: Int
    /// False for a vCPU that is down (Xen `VGCF_online` clear): its registers say nothing.
    public var online: Bool
    public var cr0: UInt64
    public var cr2: UInt64?
    /// The page-table root as the vCPU holds it, with its PCID or PWT/PCD bits. For a PV
    /// guest it holds a machine address (Xen's `xen_pfn_to_cr3(mfn)` on x86-64 is `mfn << 12`).
    public var cr3: UInt64
    /// CR4 as it governs this guest's page tables: a PV guest's tables are 4-level, so its
    /// source reports LA57 clear whatever the host uses.
    public var cr4: UInt64
    /// EFER where the source has it (QEMU's dump notes and Xen's PV context do not); nil means
    /// "unknown", and the page walker then assumes long mode with NX enabled.
    public var efer: UInt64?
    /// A 64-bit PV guest's separate user page table (Xen `ctrlreg[1]`), where the source has one.
    public var userCR3: UInt64?
    public var rip: UInt64?
    public var rsp: UInt64?
    /// The CS selector; its low two bits are the privilege level the vCPU was running at.
    public var cs: UInt16?

    public init(index: Int, online: Bool = true, cr0: UInt64, cr2: UInt64? = nil, cr3: UInt64, cr4: UInt64,
                efer: UInt64? = nil, userCR3: UInt64? = nil, rip: UInt64? = nil, rsp: UInt64? = nil, cs: UInt16? = nil) {
        self.index = index
        self.online = online
        self.cr0 = cr0
        self.cr2 = cr2
        self.cr3 = cr3
        self.cr4 = cr4
        self.efer = efer
        self.userCR3 = userCR3
        self.rip = rip
        self.rsp = rsp
        self.cs = cs
    }

    /// The privilege level the vCPU was running at, from CS's low bits, where known.
    public var privilegeLevel: Int? { cs.map { Int($0 & 3) } }
}

/// Why one frame could not be read. A batch read reports one of these per failed page; the
/// other pages of the batch are still delivered.
public struct FrameError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, Codable {
        /// The frame is not part of the guest's memory (outside every dump segment, or not
        /// populated in the domain).
        case notPresent
        /// The hypervisor refused the mapping (the per-page error of `xenforeignmemory_map`).
        case mappingFailed
        /// The frame number cannot be an address at all (beyond 52 bits).
        case invalidFrame
    }

    public let frame: UInt64
    public let code: Code
    public let reason: String

    public init(frame: UInt64, code: Code, reason: String) {
        self.frame = frame
        self.code = code
        self.reason = reason
    }

    public var description: String { "frame 0x\(String(frame, radix: 16)): \(reason)" }
}

/// Why a source as a whole failed (as opposed to one of its pages).
public struct GuestMemoryError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// The file or the hypervisor interface could not be opened or read.
        case unavailable
        /// The source has no register state for the vCPU asked for.
        case noRegisters
        /// The request is not something this source can do (pause a dump, a batch too large).
        case unsupported
        /// A page that the operation needs could not be read.
        case frameUnreadable
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}

/// Frames mapped read-only for the duration of one `withMappedFrames` call.
///
/// The pointers are valid only inside the closure that received the batch: a Xen source unmaps
/// them when the closure returns, a dump source may hand out pages assembled in scratch memory.
public struct MappedFrames: @unchecked Sendable {
    public static let pageSize = 4096

    /// The frames asked for, in the order asked.
    public let frames: [UInt64]
    @usableFromInline let pointers: [UnsafeRawPointer?]
    @usableFromInline let errors: [Int: FrameError]

    /// `pointers[i]` is nil exactly when `errors[i]` says why.
    public init(frames: [UInt64], pointers: [UnsafeRawPointer?], errors: [Int: FrameError]) {
        precondition(frames.count == pointers.count, "one pointer per frame")
        self.frames = frames
        self.pointers = pointers
        self.errors = errors
    }

    public var count: Int { frames.count }

    /// Indices of the frames that failed, with why.
    public var failures: [Int: FrameError] { errors }

    /// Page `i` of the batch (4096 bytes), or why it could not be read.
    @inlinable
    public func page(_ i: Int) throws(FrameError) -> UnsafeRawBufferPointer {
        if let p = pointers[i] { return UnsafeRawBufferPointer(start: p, count: Self.pageSize) }
        throw errors[i] ?? FrameError(frame: frames[i], code: .notPresent, reason: "not mapped")
    }
}

/// A guest's memory and vCPU state, read-only.
///
/// Contract (for implementers — the Xen foreign-mapping source and the dump sources):
///
/// - **Frames.** `withMappedFrames` takes frame numbers in `frameSpace` — the numbering the
///   guest's own page tables hold (machine frames for a Xen PV guest, guest frames for PVH/HVM
///   and QEMU) — maps them read-only, calls `body` once with all of them, and releases them when
///   `body` returns. A frame that cannot be read fails alone: its slot in `MappedFrames` carries a
///   `FrameError` (for Xen, the per-page entry of `xenforeignmemory_map`'s error array), the rest
///   of the batch is still delivered. The call itself throws only when nothing can be mapped
///   (the domain is gone, the mapping interface failed as a whole, the batch exceeds
///   `maxBatchFrames`). It never writes guest memory.
/// - **Batches.** Callers keep batches at or below `maxBatchFrames`; sources choose it from what
///   one mapping call can do (a dump: any size; Xen: what one `xenforeignmemory_map` call maps).
/// - **Concurrency.** A source is shared by concurrent workers (the measurement hashes with
///   several): `withMappedFrames` and `vcpus` must be safe to call from several threads at once.
/// - **Registers.** `vcpus()` returns one entry per vCPU the source knows, offline ones with
///   `online == false`. `cr3` is the raw register (PCID bits and all); a PV source reports the
///   guest's kernel `ctrlreg[3]` as a machine address and its `ctrlreg[1]` as `userCR3`; a PV
///   source reports CR4 with LA57 clear (PV page tables are 4-level). A source that does not know
///   EFER leaves it nil.
/// - **Consistency.** `pause()` stops the guest's vCPUs so that a sequence of reads sees one
///   state; `unpause()` lets it run again. Each `pause()` is matched by one `unpause()`. A source
///   whose memory cannot change (a dump) does nothing, and says so with `isLive == false`.
/// - **Errors.** Whole-source failures are `GuestMemoryError`s with a reason an operator can act
///   on (which file, which domain, which call failed and its errno).
public protocol GuestMemorySource: AnyObject, Sendable {
    var domain: DomainIdentity { get }
    var frameSpace: FrameSpace { get }
    /// MAXPHYADDR of the guest's CPU, where known: entry bits above it are reserved.
    var physicalAddressBits: Int? { get }
    /// True when the memory can change between reads (a running domain).
    var isLive: Bool { get }
    /// The largest batch `withMappedFrames` accepts.
    var maxBatchFrames: Int { get }

    func vcpus() throws(GuestMemoryError) -> [VCPURegisters]
    func withMappedFrames<R>(_ frames: [UInt64], _ body: (MappedFrames) throws -> R) throws -> R
    func pause() throws(GuestMemoryError)
    func unpause() throws(GuestMemoryError)
}

extension GuestMemorySource {
    public var physicalAddressBits: Int? { nil }
    public var isLive: Bool { false }
    public var maxBatchFrames: Int { 1024 }
    public func pause() throws(GuestMemoryError) {}
    public func unpause() throws(GuestMemoryError) {}

    /// Runs `body` with the guest paused (a no-op for dumps), and always unpauses.
    public func withPaused<R>(_ body: () throws -> R) throws -> R {
        try pause()
        defer { try? unpause() }
        return try body()
    }

    /// Copies `count` bytes starting at `address` in `frameSpace`; fails on the first page that
    /// cannot be read, naming it.
    public func read(physical address: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        let page = UInt64(MappedFrames.pageSize)
        let (end, overflow) = address.addingReportingOverflow(UInt64(count))
        guard !overflow else {
            throw GuestMemoryError(.unsupported, "read of \(count) bytes at 0x\(String(address, radix: 16)) runs past the end of the address space")
        }
        let first = address / page
        let last = (end - 1) / page
        let frames = Array(first...last)
        var out = [UInt8]()
        out.reserveCapacity(count)
        for chunk in stride(from: 0, to: frames.count, by: maxBatchFrames) {
            let batch = Array(frames[chunk..<min(chunk + maxBatchFrames, frames.count)])
            try withMappedFrames(batch) { mapped in
                for i in 0..<mapped.count {
                    let bytes = try mapped.page(i)
                    let pageStart = mapped.frames[i] * page
                    let lo = Int(max(address, pageStart) - pageStart)
                    let hi = Int(min(end, pageStart + page) - pageStart)
                    out.append(contentsOf: bytes[lo..<hi])
                }
            }
        }
        return out
    }
}
