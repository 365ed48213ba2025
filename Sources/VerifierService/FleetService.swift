import FoundationEssentials
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SwiftASN1
import Verifier
import VerifierClient
import X509

/// `vmv-verifier serve`: the store, the scheduler, notifications and the API, started from a
/// configuration and stopped gracefully (SIGTERM/SIGINT: attempts in flight finish and are
/// written, leases are given back).
public struct FleetService: Sendable {
    public let configuration: ServiceConfiguration
    public let logger: Logger

    public init(configuration: ServiceConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Opens the configured database (not migrated).
    public static func openDatabase(_ c: ServiceConfiguration, logger: Logger) throws -> any SQLDatabase {
        switch c.backend {
        case .sqlite: try SQLiteDatabase(path: c.sqlitePath)
        case .postgresql: try PostgresDatabase(url: c.postgresURL ?? "", logger: logger)
        }
    }

    /// Loads every configured reference set (a set that does not load stops the start: better
    /// than every host judged against nothing).
    public static func referenceSets(_ c: ServiceConfiguration) throws -> [String: ReferenceSet] {
        var out: [String: ReferenceSet] = [:]
        for (name, directory) in c.references {
            do { out[name] = try ReferenceSet(directory: directory) } catch {
                throw ConfigurationProblem("[references] \(name) = \(directory): \(error.reason)")
            }
        }
        return out
    }

    public static func akCA(_ c: ServiceConfiguration) throws -> [Certificate] {
        guard let path = c.akCA else { return [] }
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigurationProblem("[trust] ak_ca \(path): cannot read") }
        do {
            let roots = try PEMDocument.parseMultiple(pemString: String(decoding: data, as: UTF8.self))
                .filter { $0.discriminator == "CERTIFICATE" }.map { try Certificate(derEncoded: $0.derBytes) }
            guard !roots.isEmpty else { throw ConfigurationProblem("[trust] ak_ca \(path): no certificate in it") }
            return roots
        } catch let e as ConfigurationProblem { throw e } catch {
            throw ConfigurationProblem("[trust] ak_ca \(path): not PEM certificates (\(error))")
        }
    }

    /// Runs until SIGTERM/SIGINT. `onListening` receives the bound port (0 in the file picks one).
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let c = configuration
        let database = try Self.openDatabase(c, logger: logger)
        let store = FleetStore(database)
        let applied = try await store.migrate()
        logger.info("store ready", metadata: ["backend": "\(c.backend.rawValue)", "schema": "\(FleetSchema.latest)",
                                              "migrated": "\(applied.map(String.init).joined(separator: ","))"])
        let references = try Self.referenceSets(c)
        let metrics = ServiceMetrics()
        let webhooks = try WebhookDispatcher(
            settings: WebhookSettings(urls: c.webhookURLs, secret: try c.webhookSecret(), maxAttempts: c.webhookMaxAttempts,
                                      firstDelay: .seconds(c.webhookFirstRetrySeconds), caFile: c.webhookCA),
            metrics: metrics, logger: logger)
        let attestor = Attestor(
            tls: ClientTLSFiles(ca: c.hostsCA, certificate: c.hostsCertificate, key: c.hostsKey,
                                skipHostnameVerification: c.skipHostnameVerification),
            references: references, akCA: try Self.akCA(c), timeout: .seconds(c.timeoutSeconds))
        let scheduler = Scheduler(
            store: store,
            settings: .init(owner: c.owner,
                            cadence: Cadence(interval: Double(c.intervalSeconds), jitter: Double(c.jitterPercent) / 100,
                                             maxBackoff: Double(c.maxBackoffSeconds)),
                            leaseSeconds: Double(c.leaseSeconds), maxConcurrent: c.maxConcurrent,
                            retentionSeconds: Double(c.attestationsHours) * 3600),
            metrics: metrics, logger: logger,
            attest: { await attestor.attest($0) },
            onChanges: { host, changes in webhooks.send(host: host, changes: changes) })
        let feed = ChangeFeed(store: store, logger: logger)
        let api = FleetAPI(view: FleetView(store: store, staleAfter: c.staleAfter), feed: feed, metrics: metrics,
                           referenceSets: Set(references.keys), defaultInterval: c.intervalSeconds, logger: logger)
        let tls = try FleetAPI.tlsConfiguration(certificate: c.certificate, key: c.privateKey, clientCA: c.clientCA)
        let logger = self.logger
        let app = try api.application(address: c.address, port: c.port, tls: tls) { channel in
            let port = channel.localAddress?.port ?? c.port
            logger.notice("vmv-verifier serving", metadata: ["address": "\(c.address)", "port": "\(port)", "owner": "\(c.owner)"])
            await onListening(port)
        }
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: app), .init(service: SchedulerService(scheduler: scheduler))],
                                 gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await finish(feed: feed, webhooks: webhooks, database: database)
            throw error
        }
        await finish(feed: feed, webhooks: webhooks, database: database)
    }

    func finish(feed: ChangeFeed, webhooks: WebhookDispatcher, database: any SQLDatabase) async {
        await feed.stop()
        await webhooks.shutdown()
        await database.close()
    }
}

/// The scheduler as a lifecycle service: stops claiming on graceful shutdown.
struct SchedulerService: Service {
    let scheduler: Scheduler

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await scheduler.run()
        }
    }
}

/// A configuration that names something unusable (a reference set, the AK CA).
public struct ConfigurationProblem: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
