import CXen
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The hypervisor as seen from a privileged domain (dom0 or a VMV domP): domains, their vCPU
/// registers, pause/unpause, read-only foreign mapping of their frames, and xenstore.
///
/// libxenctrl, libxenforeignmemory and libxenstore handles are reentrant (vmv never opens them
/// with `XC_OPENFLAG_NON_REENTRANT`), so one `XenHost` may be used from several tasks at once.
public final class XenHost: Sendable {
    nonisolated(unsafe) private let logger: UnsafeMutablePointer<xentoollog_logger>?
    nonisolated(unsafe) let xch: OpaquePointer
    nonisolated(unsafe) let foreignMemory: OpaquePointer
    public let store: XenStore

    /// Opens the hypervisor interfaces. Fails with `.notOnXen` and a reason an operator can act
    /// on when this machine is not a privileged Xen domain.
    public init() throws {
        try XenHost.checkPrivcmd()
        logger = vmv_xen_quiet_logger()
        guard let xch = xc_interface_open(logger, logger, 0) else {
            let err = errno
            xtl_logger_destroy(logger)
            throw XenHost.openError("xc_interface_open", errno: err)
        }
        guard let fmem = xenforeignmemory_open(logger, 0) else {
            let err = errno
            xc_interface_close(xch)
            xtl_logger_destroy(logger)
            throw XenHost.openError("xenforeignmemory_open", errno: err)
        }
        do {
            store = try XenStore()
        } catch {
            xenforeignmemory_close(fmem)
            xc_interface_close(xch)
            xtl_logger_destroy(logger)
            throw error
        }
        self.xch = xch
        self.foreignMemory = fmem
    }

    deinit {
        xenforeignmemory_close(foreignMemory)
        xc_interface_close(xch)
        xtl_logger_destroy(logger)
    }

    /// The page size of foreign mappings (4 KiB on x86).
    public static let pageSize = 1 << Int(vmv_xen_page_shift())

    /// DOMID_FIRST_RESERVED (xen/xen.h, a macro Swift cannot import): ids from here on are not domains.
    static let firstReservedDomainID: UInt32 = 0x7FF0

    static let privcmdPaths = ["/dev/xen/privcmd", "/proc/xen/privcmd"]

    static func checkPrivcmd() throws {
        if !privcmdPaths.contains(where: { FileManager.default.fileExists(atPath: $0) }) {
            let inXen = FileManager.default.fileExists(atPath: "/sys/hypervisor/type")
                && ((try? String(contentsOfFile: "/sys/hypervisor/type", encoding: .utf8))?.hasPrefix("xen") ?? false)
            throw XenError(.notOnXen, operation: "open /dev/xen/privcmd", reason: inXen
                ? "this is a Xen domain but /dev/xen/privcmd is missing: load the driver (modprobe xen-privcmd; in a VMV domP: unrestricted=1)"
                : "this machine is not running on Xen (no /dev/xen/privcmd, no Xen in /sys/hypervisor/type): Xen introspection needs dom0 or a privileged VMV domain")
        }
    }

    static func openError(_ operation: String, errno err: Int32) -> XenError {
        switch err {
        case EACCES, EPERM:
            return XenError(.permissionDenied, operation: operation, errno: err,
                            reason: "not allowed to open the Xen interfaces: run as root in a privileged domain")
        default:
            return XenError(.notOnXen, operation: operation, errno: err,
                            reason: "cannot open the Xen interfaces: \(String(cString: strerror(err)))")
        }
    }

    // MARK: Domains

    /// Every domain the hypervisor lets this domain see (XSM may hide some), in domid order,
    /// with names from xenstore.
    public func domains() throws -> [XenDomainInfo] {
        var result: [XenDomainInfo] = []
        var next: UInt32 = 0
        let batch = 64
        var buffer = [xc_domaininfo_t](repeating: xc_domaininfo_t(), count: batch)
        while true {
            let n = buffer.withUnsafeMutableBufferPointer {
                xc_domain_getinfolist(xch, next, UInt32(batch), $0.baseAddress)
            }
            if n < 0 { throw XenError.call("xc_domain_getinfolist", errno: errno, "listing domains from \(next)") }
            for raw in buffer.prefix(Int(n)) { result.append(info(from: raw)) }
            guard n == batch, let last = result.last, last.id < XenHost.firstReservedDomainID - 1 else { break }
            next = last.id + 1
        }
        return result
    }

    /// One domain's information; throws `.noSuchDomain` when it does not exist (or XSM hides it).
    public func domain(_ id: UInt32) throws -> XenDomainInfo {
        var raw = xc_domaininfo_t()
        let n = xc_domain_getinfolist(xch, id, 1, &raw)
        if n < 0 { throw XenError.call("xc_domain_getinfolist", domain: id, errno: errno, "reading domain info") }
        guard n == 1, UInt32(raw.domain) == id else {
            throw XenError(.noSuchDomain, operation: "xc_domain_getinfolist", domain: id,
                           reason: "no domain \(id) (or this domain may not see it)")
        }
        return info(from: raw)
    }

    /// Finds a running domain by its xenstore name.
    public func domain(named name: String) throws -> XenDomainInfo {
        let all = try domains()
        guard let d = all.first(where: { $0.name == name }) else {
            let known = all.compactMap(\.name).joined(separator: ", ")
            throw XenError(.noSuchDomain, operation: "find domain", reason: "no domain named '\(name)' (domains: \(known))")
        }
        return d
    }

    private func info(from raw: xc_domaininfo_t) -> XenDomainInfo {
        let id = UInt32(raw.domain)
        let flags = raw.flags
        let type: XenGuestType
        if flags & UInt32(XEN_DOMINF_hvm_guest) == 0 {
            type = .pv
        } else if raw.arch_config.emulation_flags & UInt32(XEN_X86_EMU_IOAPIC) != 0 {
            type = .hvm  // libxl gives HVM guests every emulated device, PVH only the local APIC
        } else {
            type = .pvh
        }
        let h = raw.handle
        let uuid = UUID(uuid: (h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7, h.8, h.9, h.10, h.11, h.12, h.13, h.14, h.15))
        return XenDomainInfo(
            id: id,
            name: try? store.read("/local/domain/\(id)/name"),
            uuid: uuid,
            type: type,
            state: XenDomainInfo.State(rawValue: flags & 0x7D),  // bit 1 is hvm_guest, kept in `type`
            totalPages: raw.tot_pages,
            maxPages: raw.max_pages,
            sharedInfoFrame: raw.shared_info_frame,
            onlineVCPUs: raw.nr_online_vcpus,
            maxVCPUID: raw.max_vcpu_id,
            ssidref: raw.ssidref,
            cpuTime: raw.cpu_time,
            guestPhysicalAddressBits: raw.gpaddr_bits == 0 ? nil : Int(raw.gpaddr_bits))
    }

    // MARK: vCPU registers

    /// The registers of one vCPU: `xc_vcpu_getcontext` for PV, the HVM CPU save record
    /// (`xc_domain_hvm_getcontext_partial`) for PVH/HVM.
    public func registers(of domain: XenDomainInfo, vcpu: UInt32 = 0) throws -> XenVCPURegisters {
        guard vcpu <= domain.maxVCPUID else {
            throw XenError(.invalidArgument, operation: "vcpu registers", domain: domain.id,
                           reason: "vCPU \(vcpu) does not exist (highest is \(domain.maxVCPUID))")
        }
        var r = vmv_xen_vcpu_registers()
        switch domain.type {
        case .pv:
            guard vmv_xen_pv_vcpu_registers(xch, domain.id, vcpu, &r) == 0 else {
                throw XenError.call("xc_vcpu_getcontext", domain: domain.id, errno: errno, "vCPU \(vcpu) context")
            }
        case .pvh, .hvm:
            guard vmv_xen_hvm_vcpu_registers(xch, domain.id, vcpu, &r) == 0 else {
                throw XenError.call("xc_domain_hvm_getcontext_partial", domain: domain.id, errno: errno,
                                    "HVM CPU save record of vCPU \(vcpu)")
            }
        }
        return XenVCPURegisters(
            vcpu: vcpu, rip: r.rip, rsp: r.rsp, rflags: r.rflags, cr0: r.cr0, cr2: r.cr2, cr3: r.cr3,
            cr4: r.cr4, efer: r.efer, pageTableFrame: r.page_table_frame,
            userPageTableFrame: domain.type == .pv && r.user_cr3 != 0 ? r.user_page_table_frame : nil,
            fsBase: r.fs_base, gsBaseKernel: r.gs_base_kernel, gsBaseUser: r.gs_base_user, online: r.online != 0, cs: r.cs)
    }

    // MARK: Pause

    public func pause(_ domain: UInt32) throws {
        guard xc_domain_pause(xch, domain) == 0 else {
            throw XenError.call("xc_domain_pause", domain: domain, errno: errno, "pausing")
        }
    }

    public func unpause(_ domain: UInt32) throws {
        guard xc_domain_unpause(xch, domain) == 0 else {
            throw XenError.call("xc_domain_unpause", domain: domain, errno: errno, "unpausing")
        }
    }

    /// Runs `body` with the domain paused, for a consistent read; unpauses even when it throws.
    /// Pauses nest in Xen (a pause count), so a domain paused by someone else stays paused.
    public func withPaused<R>(_ domain: UInt32, _ body: () async throws -> R) async throws -> R {
        try pause(domain)
        do {
            let r = try await body()
            try unpause(domain)
            return r
        } catch {
            try? unpause(domain)
            throw error
        }
    }
}
