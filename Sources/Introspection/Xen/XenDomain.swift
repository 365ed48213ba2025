import Foundation

/// How a domain is virtualised; decides which vCPU record holds its registers and which frame
/// numbers its page tables hold.
public enum XenGuestType: String, Sendable, Codable {
    /// Paravirtualised: page tables hold **machine** frames (MFNs), and so does foreign mapping.
    case pv
    /// PVH: hardware-virtualised without emulated devices; page tables hold guest frames.
    case pvh
    /// Fully emulated HVM; page tables hold guest frames.
    case hvm
}

/// One domain as the hypervisor reports it (`xc_domain_getinfolist`), plus its name from xenstore.
public struct XenDomainInfo: Sendable, Equatable, Codable {
    public var id: UInt32
    /// `/local/domain/<id>/name`; nil when xenstore has none or refuses to tell.
    public var name: String?
    /// The domain handle Xen keeps for it (what `xl list -v` shows and what the guest reads in
    /// `/sys/hypervisor/uuid`).
    public var uuid: UUID
    public var type: XenGuestType
    public var state: State
    public var totalPages: UInt64
    public var maxPages: UInt64
    /// Frame of the shared_info page (an MFN for PV, a GFN for PVH/HVM).
    public var sharedInfoFrame: UInt64
    public var onlineVCPUs: UInt32
    public var maxVCPUID: UInt32
    /// The XSM/Flask security identifier of the domain's label (0 without XSM).
    public var ssidref: UInt32
    /// CPU time used, nanoseconds.
    public var cpuTime: UInt64
    /// Width of the guest-physical address space (PVH/HVM); nil when Xen does not say.
    public var guestPhysicalAddressBits: Int?

    public struct State: OptionSet, Sendable, Codable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let dying = State(rawValue: 1 << 0)
        public static let shutdown = State(rawValue: 1 << 2)
        public static let paused = State(rawValue: 1 << 3)
        public static let blocked = State(rawValue: 1 << 4)
        public static let running = State(rawValue: 1 << 5)
        public static let debugged = State(rawValue: 1 << 6)

        /// The letters `xl list` prints: r b p s c d.
        public var xlLetters: String {
            var s = ""
            s += contains(.running) ? "r" : "-"
            s += contains(.blocked) ? "b" : "-"
            s += contains(.paused) ? "p" : "-"
            s += contains(.shutdown) ? "s" : "-"
            s += "-"
            s += contains(.dying) ? "d" : "-"
            return s
        }
    }
}

/// The vCPU registers vmv needs to translate guest virtual addresses.
public struct XenVCPURegisters: Sendable, Equatable, Codable {
    public var vcpu: UInt32
    public var rip: UInt64
    public var rsp: UInt64
    public var rflags: UInt64
    public var cr0: UInt64
    public var cr2: UInt64
    /// CR3 as the vCPU record holds it. For PV this encodes a machine frame
    /// (`xen_cr3_to_pfn`); for PVH/HVM it is the guest's own CR3.
    public var cr3: UInt64
    public var cr4: UInt64
    /// EFER (PVH/HVM); 0 for PV, which is always in long mode.
    public var efer: UInt64
    /// Frame of the top-level page table, in the frame space that foreign mapping takes:
    /// an MFN for PV, a GFN for PVH/HVM.
    public var pageTableFrame: UInt64
    /// PV only: frame of the user-mode page table (ctrlreg[1], set by a KPTI kernel); nil otherwise.
    public var userPageTableFrame: UInt64?
    public var fsBase: UInt64
    public var gsBaseKernel: UInt64
    public var gsBaseUser: UInt64
    public var online: Bool
    /// The code segment selector; its low two bits are the privilege level the vCPU ran at.
    public var cs: UInt16

    /// PV only: the user page table's address (ctrlreg[1]) in machine space.
    public var userCR3Address: UInt64? { userPageTableFrame.map { $0 << 12 } }
    /// The top-level page table's address in the frame space foreign mapping takes.
    public var pageTableAddress: UInt64 { pageTableFrame << 12 }
    /// CR4.LA57: five-level paging.
    public var fiveLevelPaging: Bool { cr4 & (1 << 12) != 0 }
}
