import Foundation

/// A running Xen domain as a guest memory source: its vCPU registers and its frames through
/// read-only foreign mapping. For a PV domain the frames are machine frames, which is what its
/// page tables hold; for PVH/HVM they are guest frames.
public final class XenGuestMemory: GuestMemorySource {
    public let host: XenHost
    public let info: XenDomainInfo

    /// The source for `domain` (as `XenHost.domain(_:)` or `domain(named:)` found it).
    public init(host: XenHost, domain: XenDomainInfo) {
        self.host = host
        self.info = domain
    }

    public var domain: DomainIdentity {
        let kind: DomainIdentity.Kind
        switch info.type {
        case .pv: kind = .pv
        case .pvh: kind = .pvh
        case .hvm: kind = .hvm
        }
        return DomainIdentity(domid: info.id, name: info.name, uuid: info.uuid.uuidString.lowercased(),
                              kind: kind, origin: "xen")
    }

    public var frameSpace: FrameSpace { info.type == .pv ? .machine : .guestPhysical }
    /// For PVH/HVM the guest-physical width Xen reports; PV page tables hold machine frames,
    /// whose width is the host's, which a domain is not told.
    public var physicalAddressBits: Int? { info.type == .pv ? nil : info.guestPhysicalAddressBits }
    public var isLive: Bool { true }
    public var maxBatchFrames: Int { XenHost.maximumMappingBatch }

    public func vcpus() throws(GuestMemoryError) -> [VCPURegisters] {
        guard info.maxVCPUID != UInt32.max else { return [] }  // XEN_INVALID_MAX_VCPU_ID: no vCPUs
        var result: [VCPURegisters] = []
        for vcpu in 0...info.maxVCPUID {
            let r: XenVCPURegisters
            do {
                r = try host.registers(of: info, vcpu: vcpu)
            } catch {
                throw GuestMemoryError(.unavailable, "\(error)")
            }
            // A 64-bit PV guest's CR3 is Xen's xen_pfn_to_cr3(mfn) = mfn << 12: a machine
            // address, as the walker wants it. PV page tables are 4-level, and Xen's PV context
            // has no EFER.
            result.append(VCPURegisters(
                index: Int(vcpu), online: r.online, cr0: r.cr0, cr2: r.cr2, cr3: r.cr3,
                cr4: info.type == .pv ? r.cr4 & ~(1 << 12) : r.cr4,
                efer: info.type == .pv ? nil : r.efer,
                userCR3: info.type == .pv && r.userPageTableFrame != nil ? r.userCR3Address : nil,
                rip: r.rip, rsp: r.rsp, cs: r.cs))
        }
        return result
    }

    public func withMappedFrames<R>(_ frames: [UInt64], _ body: (MappedFrames) throws -> R) throws -> R {
        do {
            return try host.withMappedFrames(domain: info.id, frames: frames, body)
        } catch let e as XenError {
            throw GuestMemoryError(e.code == .invalidArgument ? .unsupported : .unavailable, e.description)
        }
    }

    public func pause() throws(GuestMemoryError) {
        do { try host.pause(info.id) } catch { throw GuestMemoryError(.unavailable, "\(error)") }
    }

    public func unpause() throws(GuestMemoryError) {
        do { try host.unpause(info.id) } catch { throw GuestMemoryError(.unavailable, "\(error)") }
    }
}
