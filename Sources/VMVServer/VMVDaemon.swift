import FoundationEssentials
import Hummingbird
import Introspection
import Logging
import NIOCore
import ServiceLifecycle
import TPM
import TPMWire
import VMV

/// What `vmv serve` runs on, opened in its order: the AK, the measurement log recovered
/// against the TPM, the VMV's own boot measurements (its binary, its configuration, the
/// platform), then the host the API speaks for. The tests open the same thing.
public struct VMVRuntime: Sendable {
    public let engine: MeasurementEngine
    public let host: VMVHost
    public let metrics: ServerMetrics
    /// The guests' measurer, when there is Xen.
    public let measurer: GuestMeasurer?
    /// The records of the boot measurements just made.
    public let bootRecords: [LogRecord]

    /// Opens the runtime on `tpm` (which the caller opened and closes, after `close()`).
    public static func open(tpm: TPM, configuration: ServerConfiguration, xen: XenHost?, xenNote: String?,
                            logger: Logger) async throws -> VMVRuntime {
        let metrics = ServerMetrics()
        let log = configuration.measurementLog
        let engine = try await MeasurementEngine.open(stateDirectory: configuration.stateDirectory, tpm: tpm,
                                                      configuration: log.engine, logger: logger.with(label: "vmv.log"))
        do {
            // On Xen this includes the XSM/FLASK facts and the launch events dom0's builder published.
            let boot = try await engine.measureBoot(configurationFile: configuration.source, configuration: log, xen: xen)
            for _ in boot { metrics.recordMeasurement() }
            let status = await engine.status()
            let recovery = await engine.recovery.map { "\($0)" } ?? "none"
            metrics.setLog(epoch: status.epoch, records: status.records)
            logger.notice("measured the VMV and the platform", metadata: [
                "epoch": "\(status.epoch)", "records": "\(status.records)", "pcr": "\(status.pcr)",
                "recovery": "\(recovery)",
            ])
            let measurer = xen.map {
                GuestMeasurer(engine: engine, xen: $0, logger: logger.with(label: "vmv.guests"), settleSeconds: configuration.settleSeconds)
            }
            let host = try await VMVHost(tpm: tpm, engine: engine, configuration: configuration, xen: xen, xenNote: xenNote,
                                         measurer: measurer, metrics: metrics, logger: logger)
            return VMVRuntime(engine: engine, host: host, metrics: metrics, measurer: measurer, bootRecords: boot)
        } catch {
            await engine.close()
            throw error
        }
    }

    /// Waits for the measurements in progress and releases the log.
    public func close() async {
        await engine.close()
    }
}

/// `vmv serve`: the VMV domain's daemon, from its configuration to a graceful stop.
///
/// Sequence: open the TPM (device, swtpm, or a simulator it starts), open the AK, recover the
/// log and measure the platform and itself (`VMVRuntime`), find Xen, and serve the API while
/// the guests are measured. SIGTERM or SIGINT stops it gracefully: in-flight requests finish,
/// the measurement loop stops, the log is closed after its last commit, then the TPM (stopping
/// a simulator it started).
public enum VMVDaemon {
    /// Runs until SIGTERM/SIGINT. `onListening` gets the port actually bound (config port 0
    /// picks a free one).
    public static func run(configuration: ServerConfiguration, logger: Logger,
                           onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let tls = try TLSMaterial(certificate: configuration.certificate, privateKey: configuration.privateKey,
                                  clientCA: configuration.clientCA)
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        let (xen, xenNote) = try openXen(configuration.xen, logger: logger)

        var tcti = configuration.tcti
        if case .simulator(nil) = tcti { tcti = .simulator(stateDirectory: configuration.stateDirectory + "/swtpm") }
        logger.info("opening the TPM", metadata: ["tcti": "\(tcti)"])
        let tpm = try await TPM.open(tcti, logger: logger.with(label: "vmv.tpm"))
        let runtime: VMVRuntime
        do {
            runtime = try await VMVRuntime.open(tpm: tpm, configuration: configuration, xen: xen, xenNote: xenNote, logger: logger)
        } catch {
            await tpm.close()
            throw error
        }
        do {
            let address = configuration.address
            let app = try APIServer.application(
                configuration: configuration, tls: tls, backend: runtime.host, metrics: runtime.metrics, logger: logger,
                onServerRunning: { channel in
                    let port = channel.localAddress?.port ?? configuration.port
                    logger.notice("serving the VMV API over mutual TLS", metadata: [
                        "url": "https://\(address):\(port)", "tlsKeyHash": "\(Hex.encode(tls.tlsKeyHash))",
                        "batching": "\(configuration.batching)",
                    ])
                    await onListening(port)
                })
            let measuring = GuestMeasurementService(measurer: runtime.measurer, xen: xen, interval: configuration.intervalSeconds,
                                                    metrics: runtime.metrics, logger: logger)
            let group = ServiceGroup(
                services: [app, measuring],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger)
            try await group.run()
            logger.notice("stopped serving; closing the log and the TPM")
        } catch {
            await runtime.close()
            await tpm.close()
            throw error
        }
        await runtime.close()
        await tpm.close()
    }

    /// Xen, if this machine has it and the configuration wants it; else why not (one line).
    static func openXen(_ mode: ServerConfiguration.XenMode, logger: Logger) throws -> (XenHost?, String?) {
        guard mode != .off else { return (nil, "guest measurement is off ([measure] xen = \"off\")") }
        do {
            let xen = try XenHost()
            return (xen, nil)
        } catch let error as XenError where mode == .auto && error.code == .notOnXen {
            let note = "no Xen on this machine (\(error.reason)): guests are not measured; the platform, the log and the API run"
            logger.notice("\(note)")
            return (nil, note)
        }
    }
}

extension Logger {
    func with(label: String) -> Logger {
        var copy = Logger(label: label)
        copy.logLevel = logLevel
        return copy
    }
}

/// Keeps the guests measured (`GuestMeasurer`): every guest once at start, then every
/// `interval` seconds, and a domain at once when it appears (xenstore @introduceDomain); a
/// domain that goes away (@releaseDomain) is forgotten. Without Xen it waits for the shutdown.
struct GuestMeasurementService: Service {
    let measurer: GuestMeasurer?
    let xen: XenHost?
    let interval: Int
    let metrics: ServerMetrics
    let logger: Logger

    func run() async throws {
        guard let xen, let measurer else {
            try? await gracefulShutdown()
            return
        }
        let events = try xen.domainEvents()
        // Domains whose kernel is still settling, with when to measure them (Unix ms).
        let (settling, settled) = AsyncStream<(UInt32, UInt64)>.makeStream()
        let first = await measurer.measureAll()
        record(first, settling: settled)
        // The watch starts by reporting the domains already there: those were just measured.
        let measuredAtStart = Set(first.map(\.domainID))
        try await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var unseen = measuredAtStart
                    for try await event in events {
                        switch event {
                        case .introduced(let domain):
                            guard domain.id != 0, unseen.remove(domain.id) == nil else { continue }
                            logger.info("domain appeared", metadata: ["domid": "\(domain.id)", "name": "\(domain.name ?? "")"])
                            do {
                                record([try await measurer.measure(domainID: domain.id)], settling: settled)
                            } catch {
                                metrics.recordError(.measurement)
                                logger.warning("cannot measure a new domain", metadata: ["domid": "\(domain.id)", "error": "\(error)"])
                            }
                        case .released(let id, let name):
                            logger.info("domain went away", metadata: ["domid": "\(id)", "name": "\(name ?? "")"])
                            await measurer.forget(domainID: id)
                        }
                    }
                }
                group.addTask {
                    // In the order they appeared, each is due settle_seconds after its start.
                    for await (id, due) in settling {
                        let now = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
                        if due > now { try await Task.sleep(for: .milliseconds(Int64(due - now) + 100)) }
                        do {
                            record([try await measurer.measure(domainID: id)], settling: settled)
                        } catch let e as GuestMeasurementError where e.code == .noSuchDomain {
                            continue
                        } catch {
                            metrics.recordError(.measurement)
                            logger.warning("cannot measure a domain whose kernel settled", metadata: ["domid": "\(id)", "error": "\(error)"])
                        }
                    }
                }
                if interval > 0 {
                    group.addTask {
                        while true {
                            try await Task.sleep(for: .seconds(interval))
                            record(await measurer.measureAll(), settling: nil)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    /// Counts what a pass recorded and logs its failures; a domain whose kernel is still settling
    /// is handed to `settling`, to be measured when it has.
    func record(_ reports: [GuestMeasurementReport], settling: AsyncStream<(UInt32, UInt64)>.Continuation?) {
        for report in reports {
            if let due = report.settlingUntil, let settling {
                logger.info("its kernel is recorded once it has settled", metadata: [
                    "domid": "\(report.domainID)", "name": "\(report.name ?? "")", "next_pass_ms": "\(Int64(due) - Int64(report.time))"])
                settling.yield((report.domainID, due))
            }
            for _ in report.recorded { metrics.recordMeasurement() }
            if let error = report.error {
                metrics.recordError(.measurement)
                logger.warning("guest measurement failed", metadata: ["domid": "\(report.domainID)", "name": "\(report.name ?? "")", "error": "\(error)"])
            }
        }
    }
}
