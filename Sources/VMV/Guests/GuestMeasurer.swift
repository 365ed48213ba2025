import Foundation
import Introspection
import Logging
import TPMWire

/// Measures Xen guests into the measurement log (docs/measurement-log.md, "Guest
/// measurements"): per domain incarnation, its load-time facts once (kernel image, initrd,
/// command line and configuration, from libxl's record of the build when dom0 has it), and its
/// kernel text and read-only data as one `memoryRegion` record per region — recorded when first
/// seen and whenever a region's Merkle root changes. An unchanged result only updates the status.
///
/// Every pass locates the kernel again through the guest's page tables (a guest that remaps its
/// text would otherwise be measured at frames it no longer runs) and hashes the regions with
/// the domain paused.
public actor GuestMeasurer {
    private let engine: MeasurementEngine
    private let xen: XenHost?
    private let logger: Logger
    /// Hashing workers per region.
    private let workers: Int
    /// Where libxl keeps its userdata (the libxl-json of each domain).
    private let libxlDirectory: String
    /// How long after a domain started its kernel regions are first measured (ms).
    private let settleMilliseconds: UInt64
    private var incarnations: [UInt32: GuestIncarnation] = [:]
    /// One pass at a time: the actor is reentrant at every await, and two passes over one
    /// domain would pause, map and unpause it at once through one Xen handle.
    private var passRunning = false
    private var passWaiters: [CheckedContinuation<Void, Never>] = []
    /// Domains whose last pass failed before their incarnation was known.
    private var failures: [UInt32: GuestStatus] = [:]
    /// The log epoch `incarnations` describes.
    private var epoch: UInt32?

    /// - Parameter settleSeconds: a domain's kernel regions are first measured this long after it
    ///   started (libxl's start_time, else when first seen here): Linux patches its own text
    ///   while it boots, and a root taken then is never seen again.
    public init(engine: MeasurementEngine, xen: XenHost, logger: Logger, settleSeconds: Int = 0) {
        self.init(engine: engine, xen: Optional(xen), logger: logger, settleSeconds: settleSeconds)
    }

    init(engine: MeasurementEngine, xen: XenHost?, logger: Logger, workers: Int = 1, libxlDirectory: String = "/var/lib/xen",
         settleSeconds: Int = 0) {
        self.settleMilliseconds = UInt64(max(0, settleSeconds)) * 1000
        self.engine = engine
        self.xen = xen
        self.logger = logger
        self.workers = max(1, workers)
        self.libxlDirectory = libxlDirectory
    }

    // MARK: Xen

    /// Measures one domain: its load-time facts once per incarnation (kernel image, initrd,
    /// command line and config from the xl/libxl config when known) and its kernel text and
    /// read-only data (one event per region); records only what is new or changed.
    public func measure(domainID: UInt32) async throws(GuestMeasurementError) -> GuestMeasurementReport {
        await beginPass()
        defer { endPass() }
        return try await measureOne(domainID: domainID)
    }

    private func measureOne(domainID: UInt32) async throws(GuestMeasurementError) -> GuestMeasurementReport {
        do throws(GuestMeasurementError) {
            guard let xen else { throw GuestMeasurementError(.xen, "no Xen host") }
            await followEpoch()
            let info: XenDomainInfo
            do {
                info = try xen.domain(domainID)
            } catch let e as XenError where e.code == .noSuchDomain {
                throw GuestMeasurementError(.noSuchDomain, "domain \(domainID): \(e.reason)")
            } catch {
                throw GuestMeasurementError(.xen, "domain \(domainID): \(error)")
            }
            if domainID == 0 || domainID == selfDomainID(xen) {
                throw GuestMeasurementError(.notAGuest, "domain \(domainID) (\(info.name ?? "-")) is \(domainID == 0 ? "dom0" : "the VMV's own domain"), not a guest")
            }
            let vmPath = (try? xen.store.read("/local/domain/\(domainID)/vm")) ?? nil
            let startTime = vmPath.flatMap { (try? xen.store.read("\($0)/start_time")) ?? nil }
            let identity = GuestIdentity(domainID: domainID, uuid: Self.bytes(info.uuid), name: info.name,
                                         type: info.type.rawValue, startTime: startTime)
            let known = incarnations[domainID].map { $0.identity.sameIncarnation(identity) && $0.loadTimeDone } ?? false
            let config = known ? nil : buildConfig(xen, identity: identity, vmPath: vmPath)
            return try await measure(identity, source: XenGuestMemory(host: xen, domain: info), config: config)
        } catch {
            noteFailure(domainID, error)
            throw error
        }
    }

    /// Every guest (not dom0, not the VMV's own domain); a failure of one is in its report.
    public func measureAll() async -> [GuestMeasurementReport] {
        guard let xen else { return [] }
        await beginPass()
        defer { endPass() }
        let domains: [XenDomainInfo]
        do {
            domains = try xen.domains()
        } catch {
            logger.error("cannot list the domains", metadata: ["error": "\(error)"])
            return []
        }
        let me = selfDomainID(xen)
        let present = Set(domains.map(\.id))
        for id in incarnations.keys where !present.contains(id) { forget(domainID: id) }
        var reports: [GuestMeasurementReport] = []
        for d in domains where d.id != 0 && d.id != me && !d.state.contains(.dying) {
            do throws(GuestMeasurementError) {
                reports.append(try await measureOne(domainID: d.id))
            } catch {
                var r = GuestMeasurementReport(domainID: d.id, time: Self.now(), error: error)
                r.name = d.name
                r.uuid = d.uuid.uuidString.lowercased()
                r.type = d.type.rawValue
                reports.append(r)
            }
        }
        return reports
    }

    private func beginPass() async {
        if !passRunning {
            passRunning = true
            return
        }
        await withCheckedContinuation { passWaiters.append($0) }   // handed the pass by endPass()
    }

    private func endPass() {
        if passWaiters.isEmpty {
            passRunning = false
        } else {
            passWaiters.removeFirst().resume()
        }
    }

    /// A domain went away (xenstore @releaseDomain): forget its incarnation.
    public func forget(domainID: UInt32) {
        incarnations[domainID] = nil
        failures[domainID] = nil
    }

    /// What `GET /v1/domains` shows: per domain, identity, last measured time, roots, last error.
    public func status() -> [GuestStatus] {
        var out = incarnations.values.map { $0.status() }
        out += failures.values.filter { incarnations[$0.domainID] == nil }
        return out.sorted { $0.domainID < $1.domainID }
    }

    private func selfDomainID(_ xen: XenHost) -> UInt32 {
        // A relative xenstore path is the reader's own /local/domain/<id>.
        ((try? xen.store.read("domid")) ?? nil).flatMap { UInt32($0) } ?? 0
    }

    /// libxl's JSON of the build (dom0), else its xenstore image nodes (PV), else nothing.
    private func buildConfig(_ xen: XenHost, identity: GuestIdentity, vmPath: String?) -> Result<DomainBuildConfig, DomainConfigError>? {
        let path = DomainBuildConfig.libxlUserdataPath(domainID: identity.domainID, uuid: identity.uuidString, directory: libxlDirectory)
        if let bytes = try? LogFiles.read(path) {
            do {
                return .success(try DomainBuildConfig(libxlJSON: bytes, origin: path))
            } catch {
                return .failure(error)
            }
        }
        guard let vmPath else { return nil }
        var nodes: [String: String] = [:]
        for key in ["name", "uuid", "image/ostype", "image/kernel", "image/ramdisk", "image/cmdline"] {
            if let value = (try? xen.store.read("\(vmPath)/\(key)")) ?? nil { nodes[key] = value }
        }
        guard nodes["image/kernel"] != nil || nodes["image/cmdline"] != nil else { return nil }
        return .success(DomainBuildConfig(xenstoreVM: nodes, origin: vmPath))
    }

    /// Takes in a change of the log's epoch (the first pass included): what the new epoch's
    /// log already holds for each domain (a VMV restarted on the same epoch), nothing else,
    /// so that every guest's facts and regions are in each epoch's log.
    private func followEpoch() async {
        let now = await engine.status().epoch
        guard now != epoch else { return }
        epoch = now
        var fromLog: [UInt32: GuestIncarnation] = [:]
        do throws(MeasurementLogError) {
            fromLog = GuestIncarnation.fromLog(try LogReader(stateDirectory: engine.layout.stateDirectory).read(epoch: now).records.map(\.record))
        } catch {
            logger.warning("cannot read the log's guest records: every guest is recorded again", metadata: ["error": "\(error)"])
        }
        for (id, var state) in incarnations {
            state.forgetRecords()
            incarnations[id] = state
        }
        for (id, seeded) in fromLog {
            guard var state = incarnations[id], state.identity.sameIncarnation(seeded.identity) else {
                if incarnations[id] == nil { incarnations[id] = seeded }
                continue
            }
            for region in seeded.recordedRegions { state.adopt(region) }
            state.loadTimeDone = seeded.loadTimeDone
            incarnations[id] = state
        }
        if !fromLog.isEmpty { logger.info("guest records found in the log", metadata: ["epoch": "\(now)", "domains": "\(fromLog.count)"]) }
    }

    // MARK: One pass

    /// One pass over one incarnation of a domain whose memory `source` reads. `config` is what
    /// it was built from (nil: unknown, or already recorded for this incarnation).
    func measure(_ identity: GuestIdentity, source: any GuestMemorySource,
                 config: Result<DomainBuildConfig, DomainConfigError>?) async throws(GuestMeasurementError) -> GuestMeasurementReport {
        await followEpoch()
        let known = incarnations[identity.domainID].flatMap { $0.identity.sameIncarnation(identity) ? $0 : nil }
        var state = known ?? GuestIncarnation(identity, firstSeen: Self.now())
        let isNew = state.firstMeasured == nil
        // The name may become readable after the first pass (a VMV domain is granted each
        // guest's xenstore name once dom0 has built it): record the regions again under it, so
        // that the log, and the verifier's evidence, name the domain.
        let named = !isNew && state.identity.name == nil && identity.name != nil
        if named {
            logger.notice("a domain's name became readable: its regions are recorded again under it", metadata: [
                "domain": "\(identity.name ?? "-")", "domid": "\(identity.domainID)", "incarnation": "\(identity.incarnation)"])
            state.forgetRegions()
        }
        if identity.name != nil { state.identity.name = identity.name }
        if known == nil {
            logger.notice("measuring a new domain incarnation", metadata: [
                "domain": "\(identity.name ?? "-")", "domid": "\(identity.domainID)", "uuid": "\(identity.uuidString)",
                "incarnation": "\(identity.incarnation)"])
        }
        var report = GuestMeasurementReport(domainID: identity.domainID, time: Self.now())
        report.name = identity.name
        report.uuid = identity.uuidString
        report.type = identity.type
        report.incarnation = identity.incarnation
        report.newIncarnation = isNew
        let base: [(String, String)] = [("incarnation", identity.incarnation)] + (identity.type.map { [("domain.type", $0)] } ?? [])

        // Load-time facts, once per incarnation.
        if !state.loadTimeDone {
            switch config {
            case .success(let c)?:
                let (measurements, notes) = c.loadTimeMeasurements(domain: identity.logDomain, attributes: base) { path in
                    do throws(MeasurementLogError) {
                        return .success(try BootMeasurements.sha256(ofFile: path))
                    } catch {
                        return .failure(error)
                    }
                }
                report.loadTime += notes
                for m in measurements {
                    let record = try await record(m, &state, &report)
                    report.loadTime.append(.init(kind: m.kind.name, subject: m.subject ?? "",
                                                 sha256: m.contentDigest.map { Hex.encode($0.bytes) }, seq: record, note: nil))
                }
            case .failure(let e)?:
                report.loadTime.append(.init(kind: "domainConfig", subject: e.origin, sha256: nil, seq: nil, note: "not measured: \(e.reason)"))
                logger.warning("the domain's configuration could not be read", metadata: ["domain": "\(identity.incarnation)", "error": "\(e)"])
            case nil:
                report.loadTime.append(.init(kind: "domainConfig", subject: "", sha256: nil, seq: nil,
                                             note: "no libxl record of the build readable here (not dom0, or not built by libxl)"))
            }
            state.loadTimeDone = true
            incarnations[identity.domainID] = state
        }

        // Run time: a kernel still booting is left to settle before its first region measurement.
        if settleMilliseconds > 0, state.recordedRegions.isEmpty {
            let started = identity.startTime.flatMap(Double.init).map { UInt64(max(0, $0 * 1000)) } ?? state.firstSeen
            if Self.now() < started + settleMilliseconds {
                report.settlingUntil = started + settleMilliseconds
                incarnations[identity.domainID] = state
                return report
            }
        }

        // Run time: kernel text and read-only data, located again and hashed with the domain paused.
        let workers = self.workers
        let measured: KernelMeasurement
        do {
            measured = try await Task.detached {
                let kernel: LocatedKernel
                do {
                    kernel = try KernelLocator.locate(in: source)
                } catch {
                    throw GuestMeasurementError(.kernelNotFound, "\(identity.incarnation) (\(identity.name ?? "-")): \(error)")
                }
                do {
                    return try KernelMeasurement(kernel: kernel, in: source, workers: workers)
                } catch {
                    throw GuestMeasurementError(.unreadable, "\(identity.incarnation) (\(identity.name ?? "-")): \(error)")
                }
            }.value
        } catch let e as GuestMeasurementError {
            state.lastError = e
            incarnations[identity.domainID] = state
            throw e
        } catch {
            throw GuestMeasurementError(.unreadable, "\(error)")
        }
        let kernel = measured.kernel
        state.kernelRelease = kernel.banner.release
        report.kernelRelease = kernel.banner.release
        report.slide = Self.hex(kernel.slide)
        let facts = base + [("kernel.release", VMVEventRecord.sanitized(kernel.banner.release, maxBytes: 256)),
                            ("kernel.banner", VMVEventRecord.sanitized(kernel.banner.text)),
                            ("kernel.slide", Self.hex(kernel.slide))]
        // A kernel settles when two passes, a recheck apart, find the same roots: text patched
        // late in boot (static keys, clocksource switches) is never recorded.
        if settleMilliseconds > 0, state.recordedRegions.isEmpty {
            let roots = measured.regions.map { "\($0.subject)=\(Hex.encode($0.root))" }
            if state.unrecordedRoots != roots {
                state.unrecordedRoots = roots
                report.settlingUntil = Self.now() + min(settleMilliseconds, max(5000, settleMilliseconds / 4))
                report.kernelRelease = kernel.banner.release
                incarnations[identity.domainID] = state
                return report
            }
        }
        let changes = state.changes(measured.regions)
        for r in measured.regions {
            report.regions.append(.init(subject: r.subject, virtualStart: "0x" + String(r.virtualStart, radix: 16), pageCount: r.pageCount,
                                        root: Hex.encode(r.root), seq: nil, changedPages: []))
        }
        for (region, pages) in changes {
            var attributes = facts
            if !pages.isEmpty {
                let shown = pages.prefix(64).map(String.init).joined(separator: ",")
                attributes.append(("pages.changed", pages.count > 64 ? "\(shown),… (\(pages.count))" : shown))
            }
            let m = Measurement.memoryRegion(domain: identity.logDomain, subject: region.subject, virtualStart: region.virtualStart,
                                             physicalStart: region.physicalStart, pageSize: UInt32(MappedFrames.pageSize),
                                             pageCount: UInt32(clamping: region.pageCount), merkleRoot: region.root,
                                             attributes: attributes)
            let seq = try await record(m, &state, &report)
            state.didRecord(region, at: Self.now())
            if let i = report.regions.firstIndex(where: { $0.subject == region.subject }) {
                report.regions[i].seq = seq
                report.regions[i].changedPages = pages
            }
            if (!isNew && !named) || !pages.isEmpty {
                logger.warning("a guest kernel region changed", metadata: [
                    "domain": "\(identity.name ?? "-")", "incarnation": "\(identity.incarnation)", "region": "\(region.subject)",
                    "root": "\(Hex.encode(region.root))", "pages": "\(pages.prefix(16))"])
            }
        }
        report.time = Self.now()
        if state.firstMeasured == nil { state.firstMeasured = report.time }
        state.lastMeasured = report.time
        state.lastError = nil
        incarnations[identity.domainID] = state
        failures[identity.domainID] = nil
        return report
    }

    /// Records one measurement; its seq, or nil when it is durable but its extend is pending
    /// (the engine finishes it before the next record: it counts as recorded).
    private func record(_ m: Measurement, _ state: inout GuestIncarnation, _ report: inout GuestMeasurementReport)
        async throws(GuestMeasurementError) -> UInt64?
    {
        do {
            let r = try await engine.measure(m)
            report.recorded.append(r.seq)
            report.epoch = r.epoch
            if m.kind != .memoryRegion { state.records += 1 }
            return r.seq
        } catch let e as MeasurementLogError where e.code == .tpm {
            logger.error("guest measurement logged, its PCR extend pending", metadata: ["error": "\(e.reason)"])
            if m.kind != .memoryRegion { state.records += 1 }
            return nil
        } catch {
            let e = GuestMeasurementError(.log, "\(state.identity.incarnation) \(m.subject ?? m.kind.name): \(error)")
            state.lastError = e
            incarnations[state.identity.domainID] = state
            throw e
        }
    }

    private func noteFailure(_ domainID: UInt32, _ error: GuestMeasurementError) {
        if var state = incarnations[domainID] {
            state.lastError = error
            incarnations[domainID] = state
        } else {
            var s = failures[domainID] ?? GuestStatus(domainID: domainID, roots: [:], records: 0)
            s.lastError = error
            failures[domainID] = s
        }
    }

    // MARK: Helpers

    static func now() -> UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }

    static func hex(_ v: Int64) -> String { v < 0 ? "-0x" + String(v.magnitude, radix: 16) : "0x" + String(v, radix: 16) }

    static func bytes(_ uuid: UUID) -> [UInt8] {
        withUnsafeBytes(of: uuid.uuid) { Array($0) }
    }
}
