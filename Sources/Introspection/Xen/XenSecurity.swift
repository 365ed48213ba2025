import CXen
import Foundation
import TPMWire
#if canImport(Glibc)
import Glibc
#endif

/// The XSM module Xen runs and its mode, as the hypervisor reports it to the caller.
public struct XSMStatus: Sendable, Hashable, Codable {
    public enum Mode: String, Sendable, Hashable, Codable {
        /// FLASK enforces its policy.
        case enforcing
        /// FLASK only logs what its policy would deny.
        case permissive
        /// No FLASK (Debian's hypervisor, or XSM off): dom0 may do anything to any domain.
        case none
    }

    public var mode: Mode
    /// This domain's own FLASK label (`system_u:system_r:vmv_t` for the VMV domP), when FLASK
    /// runs and the policy lets this domain convert SIDs to labels; nil otherwise.
    public var label: String?

    public init(mode: Mode, label: String?) {
        self.mode = mode
        self.label = label
    }
}

extension XenHost {
    /// FLASK's mode (FLASK_GETENFORCE, which every domain may ask) and this domain's own label.
    ///
    /// The loaded policy itself cannot be asked for: no FLASK operation returns it (Xen 4.17's
    /// `do_flask_op`), so the policy is measured by whoever loads it (docs/domp.md).
    public func xsmStatus() throws -> XSMStatus {
        let rc = xc_flask_getenforce(xch)
        if rc < 0 {
            let err = errno
            // xsm_op answers ENOSYS when Xen has no FLASK (the dummy module, or SILO).
            guard err == ENOSYS else { throw XenError.call("xc_flask_getenforce", errno: err, "asking Xen for FLASK's mode") }
            return XSMStatus(mode: .none, label: nil)
        }
        let mode: XSMStatus.Mode = rc == 0 ? .permissive : .enforcing
        // The label is extra evidence, not required: a policy may not grant check_context.
        var label: String?
        if let id = try? ownDomainID(), let me = try? domain(id) { label = try? securityLabel(ssidref: me.ssidref) }
        return XSMStatus(mode: mode, label: label)
    }

    /// The FLASK label of a security id (a domain's `ssidref`), e.g. `system_u:system_r:vmv_guest_t`.
    /// Needs `security check_context` in the caller's policy.
    public func securityLabel(ssidref: UInt32) throws -> String {
        guard ssidref <= UInt32(Int32.max) else {
            throw XenError(.invalidArgument, operation: "xc_flask_sid_to_context", reason: "SID \(ssidref) is out of range")
        }
        var buffer = [CChar](repeating: 0, count: 256)
        let rc = buffer.withUnsafeMutableBufferPointer {
            xc_flask_sid_to_context(xch, Int32(ssidref), $0.baseAddress, UInt32($0.count))
        }
        if rc < 0 { throw XenError.call("xc_flask_sid_to_context", errno: errno, "reading the label of SID \(ssidref)") }
        buffer[buffer.count - 1] = 0
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// This domain's id, from xenstore's relative node `domid` (which every domain may read).
    public func ownDomainID() throws -> UInt32? {
        guard let text = try store.read("domid") else { return nil }
        guard let id = UInt32(text.trimmingCharacters(in: .whitespaces)), id < XenHost.firstReservedDomainID else {
            throw XenError(.callFailed, operation: "xs_read domid", reason: "xenstore says this domain's id is '\(text.prefix(32))'")
        }
        return id
    }
}

/// The launch events dom0's builder extended into the launch PCR before it created the VMV
/// domain (scripts/xen/dom0-domp.sh), as it published them in xenstore: `/vmv/launch/pcr` and
/// `/vmv/launch/0` … `/vmv/launch/<n-1>`, one event text each, in extend order.
public struct LaunchLog: Sendable, Hashable {
    public var pcr: Int
    public var events: [LaunchEvent]

    public init(pcr: Int, events: [LaunchEvent]) {
        self.pcr = pcr
        self.events = events
    }

    /// The policy's event (`xsm-policy`), if dom0's builder loaded one.
    public var policy: LaunchEvent? { events.first { $0.kind == .xsmPolicy } }
}

extension XenHost {
    /// The launch log from xenstore; nil when there is none (no VMV builder ran: the VMV runs in
    /// dom0, or off the harness). xenstore is dom0's: a wrong node is reported with its path,
    /// never skipped, since the verifier replays every event against the quoted PCR.
    public func launchLog(root: String = "/vmv/launch") throws -> LaunchLog? {
        guard let pcrText = try store.read(root + "/pcr") else { return nil }
        guard let pcr = Int(pcrText), (0..<PCRSelection.pcClientPCRCount).contains(pcr) else {
            throw XenError(.invalidArgument, operation: "xs_read \(root)/pcr", reason: "'\(pcrText.prefix(16))' is not a PCR index 0-23")
        }
        let names = try store.directory(root).filter { $0 != "pcr" }
        var events: [LaunchEvent] = []
        for index in 0..<names.count {
            let path = "\(root)/\(index)"
            guard let text = try store.read(path) else {
                throw XenError(.invalidArgument, operation: "xs_read \(path)",
                               reason: "missing: \(root) has \(names.count) events but not number \(index)")
            }
            do {
                events.append(try LaunchEvent(parsing: text))
            } catch {
                throw XenError(.invalidArgument, operation: "xs_read \(path)", reason: error.reason)
            }
        }
        return LaunchLog(pcr: pcr, events: events)
    }
}
