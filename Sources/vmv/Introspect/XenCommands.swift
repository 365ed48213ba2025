import ArgumentParser
import Crypto
import Foundation
import Introspection
import TPMWire

/// Options naming one domain, by name or id.
struct DomainSelection: ParsableArguments {
    @Option(name: .long, help: "The domain's name (xenstore) or numeric id.")
    var domain: String

    func resolve(on host: XenHost) throws -> XenDomainInfo {
        if let id = UInt32(domain) { return try host.domain(id) }
        return try host.domain(named: domain)
    }
}

/// Prints Xen failures as one clear line and exits non-zero, instead of a trace.
func withXen<R>(_ body: (XenHost) async throws -> R) async throws -> R {
    do {
        let host = try XenHost()
        return try await body(host)
    } catch let error as XenError {
        throw ValidationErrorLine(message: error.description)
    }
}

struct ValidationErrorLine: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

struct IntrospectDomainsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "domains",
        abstract: "List the running domains (xc_domain_getinfolist, names from xenstore).")

    @Flag(help: "Print JSON for machines.")
    var json = false

    @Flag(help: "Keep running and print one line per domain as it appears or goes away (xenstore watch on @introduceDomain/@releaseDomain); the domains present come first.")
    var watch = false

    struct WatchLine: Encodable { let event: String; let id: UInt32; let name: String?; let domain: XenDomainInfo? }

    func run() async throws {
        if watch { return try await runWatch() }
        let domains = try await withXen { try $0.domains() }
        if json { return try printJSON(domains) }
        print("ID    NAME                 UUID                                  TYPE  STATE   MEM(MiB)  VCPUS  SSIDREF")
        for d in domains {
            let name = (d.name ?? "-").padding(toLength: 20, withPad: " ", startingAt: 0)
            let type = d.type.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0)
            let mem = String(d.totalPages * 4 / 1024)
            print(String(d.id).padding(toLength: 5, withPad: " ", startingAt: 0), name,
                  d.uuid.uuidString.lowercased(), type, d.state.xlLetters, "",
                  mem.padding(toLength: 9, withPad: " ", startingAt: 0),
                  String(d.onlineVCPUs).padding(toLength: 6, withPad: " ", startingAt: 0), d.ssidref)
        }
    }
}

extension IntrospectDomainsCommand {
    func runWatch() async throws {
        try await withXen { host in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for try await event in try host.domainEvents() {
                let line: WatchLine
                switch event {
                case .introduced(let d): line = WatchLine(event: "introduced", id: d.id, name: d.name, domain: d)
                case .released(let id, let name): line = WatchLine(event: "released", id: id, name: name, domain: nil)
                }
                let text = json ? String(decoding: try encoder.encode(line), as: UTF8.self)
                    : [line.event, String(line.id), line.name ?? "-", line.domain.map { $0.uuid.uuidString.lowercased() } ?? ""].joined(separator: " ")
                // Unbuffered: a consumer reading a pipe sees each event as it happens.
                FileHandle.standardOutput.write(Data((text + "\n").utf8))
            }
        }
    }
}

struct IntrospectVCPUCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vcpu",
        abstract: "Show a vCPU's registers (PV: xc_vcpu_getcontext; PVH/HVM: the HVM CPU save record).")

    @OptionGroup var selection: DomainSelection
    @Option(help: "The vCPU.") var vcpu: UInt32 = 0
    @Flag(help: "Pause the domain while reading.") var pause = false
    @Flag(help: "Print JSON for machines.") var json = false

    func run() async throws {
        let (domain, regs) = try await withXen { host in
            let d = try selection.resolve(on: host)
            let r = pause ? try await host.withPaused(d.id) { try host.registers(of: d, vcpu: vcpu) }
                          : try host.registers(of: d, vcpu: vcpu)
            return (d, r)
        }
        if json { return try printJSON(regs) }
        print("domain \(domain.id) (\(domain.name ?? "-"), \(domain.type.rawValue)) vCPU \(regs.vcpu)\(regs.online ? "" : " offline")")
        print("rip \(hex(regs.rip))  rsp \(hex(regs.rsp))  rflags \(hex(regs.rflags))")
        print("cr0 \(hex(regs.cr0))  cr3 \(hex(regs.cr3))  cr4 \(hex(regs.cr4))  efer \(hex(regs.efer))")
        let space = domain.type == .pv ? "machine frame (MFN)" : "guest frame (GFN)"
        print("page table root: \(space) \(hex(regs.pageTableFrame))")
        if let u = regs.userPageTableFrame { print("user page table root (KPTI): \(space) \(hex(u))") }
    }
}

struct IntrospectFrameCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "frame",
        abstract: "Map frames of a guest read-only and print their SHA-256 (PV: MFNs, PVH/HVM: GFNs).")

    @OptionGroup var selection: DomainSelection
    @Argument(help: "Frame numbers (decimal or 0x hex).") var frames: [String]
    @Flag(help: "Print JSON for machines.") var json = false

    struct Row: Encodable { let frame: String; let sha256: String?; let error: String? }

    func run() async throws {
        let numbers = try frames.map { s -> UInt64 in
            let v = s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : UInt64(s)
            guard let v else { throw ValidationError("'\(s)' is not a frame number") }
            return v
        }
        guard !numbers.isEmpty, numbers.count <= XenHost.maximumMappingBatch else {
            throw ValidationError("give 1 to \(XenHost.maximumMappingBatch) frames")
        }
        let rows = try await withXen { host in
            let d = try selection.resolve(on: host)
            return try host.withMappedFrames(domain: d.id, frames: numbers) { m in
                (0..<m.count).map { i -> Row in
                    do {
                        let bytes = try m.page(i)
                        return Row(frame: hex(numbers[i]), sha256: Hex.encode(Array(SHA256.hash(data: bytes))), error: nil)
                    } catch {
                        return Row(frame: hex(numbers[i]), sha256: nil, error: "\(error)")
                    }
                }
            }
        }
        if json { return try printJSON(rows) }
        for r in rows { print(r.frame, r.sha256 ?? "error: \(r.error ?? "")") }
        if rows.contains(where: { $0.error != nil }) { throw ExitCode(1) }
    }
}

struct IntrospectXSMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xsm",
        abstract: "FLASK's mode as Xen reports it, this domain's label, and the labels of the domains it sees.")

    @Flag(help: "Print JSON for machines.")
    var json = false

    struct Report: Encodable {
        let status: XSMStatus
        let domains: [Labelled]
        /// What dom0's VMV builder extended into the launch PCR (nil without a builder).
        let launch: Launch?
        struct Labelled: Encodable { let id: UInt32; let name: String?; let ssidref: UInt32; let label: String? }
        struct Launch: Encodable { let pcr: Int; let events: [String] }
    }

    func run() async throws {
        let report = try await withXen { host in
            let status = try host.xsmStatus()
            let domains = try host.domains().map {
                Report.Labelled(id: $0.id, name: $0.name, ssidref: $0.ssidref,
                                label: status.mode == .none ? nil : try? host.securityLabel(ssidref: $0.ssidref))
            }
            let launch = try host.launchLog().map {
                Report.Launch(pcr: $0.pcr, events: $0.events.map { String(decoding: $0.text, as: UTF8.self) })
            }
            return Report(status: status, domains: domains, launch: launch)
        }
        if json { return try printJSON(report) }
        print("xsm: \(report.status.mode == .none ? "none (no FLASK)" : "flask, \(report.status.mode.rawValue)")")
        print("label: \(report.status.label ?? "-")")
        for d in report.domains { print("d\(d.id) \(d.name ?? "-") ssidref=\(d.ssidref) \(d.label ?? "-")") }
        if let launch = report.launch {
            for (i, e) in launch.events.enumerated() { print("launch PCR \(launch.pcr) #\(i): \(e)") }
        } else {
            print("launch: none (no VMV builder published /vmv/launch)")
        }
    }
}
