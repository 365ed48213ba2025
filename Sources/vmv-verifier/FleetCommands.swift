import ArgumentParser
import ConfigFile
import FoundationEssentials
import Logging
import Verifier
import VerifierClient
import VerifierService

/// `vmv-verifier serve --config FILE`
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Attest a fleet of VMV hosts continuously; serve the management API, events, metrics and the operator's page over mutual TLS.",
        discussion: """
            Every host registered (`vmv-verifier hosts add`) is attested on its interval, with \
            jitter, and with exponential backoff while it fails, by the same checks as \
            `vmv-verifier attest`. Verdicts, their reasons and the log records behind each change \
            are stored (SQLite by default, PostgreSQL for several verifiers sharing a fleet); \
            each change is posted to the webhooks (HMAC-SHA256 signed) and streamed on \
            GET /v1/events. docs/fleet.md describes the configuration and the API.

            Exit status: 0 after a graceful stop (SIGTERM/SIGINT); 2 the configuration or a file \
            it names is unusable.
            """
    )

    @Option(help: ArgumentHelp("The configuration file (TOML; see vmv-verifier.example.toml).", valueName: "file"))
    var config: String

    @Flag(help: "Check the configuration, open and migrate the store, print the effective settings, and exit.")
    var check = false

    func run() async throws {
        let c: ServiceConfiguration
        do { c = try ServiceConfiguration.load(file: config) } catch { throw malformedInput(error.description) }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = Logger.Level(rawValue: c.logLevel) ?? .info
            return h
        }
        let logger = Logger(label: "vmv-verifier")
        if check {
            do {
                _ = try FleetService.referenceSets(c)
                _ = try FleetService.akCA(c)
                _ = try c.webhookSecret()
                _ = try FleetAPI.tlsConfiguration(certificate: c.certificate, key: c.privateKey, clientCA: c.clientCA)
                let db = try FleetService.openDatabase(c, logger: logger)
                let applied = try await FleetStore(db).migrate()
                await db.close()
                print("configuration \(config): usable; store \(c.backend.rawValue) at schema \(FleetSchema.latest)"
                      + (applied.isEmpty ? "" : " (migrations \(applied.map(String.init).joined(separator: ", ")) applied)"))
                print("owner \(c.owner); listen \(c.address):\(c.port); interval \(c.intervalSeconds) s ± \(c.jitterPercent) %; timeout \(c.timeoutSeconds) s; lease \(c.leaseSeconds) s; max \(c.maxConcurrent) at once; stale after \(Int(c.staleAfter)) s")
                print("reference sets: " + c.references.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
                print("webhooks: \(c.webhookURLs.isEmpty ? "none" : c.webhookURLs.joined(separator: ", "))")
            } catch {
                throw malformedInput("\(error)")
            }
            return
        }
        do {
            try await FleetService(configuration: c, logger: logger).run()
        } catch let e as ConfigurationError {
            throw malformedInput(e.description)
        } catch let e as ConfigurationProblem {
            throw malformedInput(e.description)
        } catch let e as StorageError {
            throw malformedInput(e.description)
        } catch {
            throw malformedInput("\(error)")
        }
    }
}

/// Where the running service is, and the operator's TLS identity.
struct ServiceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The running service: https://HOST:PORT.", valueName: "url"))
    var service: String = ProcessInfo.processInfo.environment["VMV_VERIFIER_SERVICE"] ?? "https://127.0.0.1:9443"

    @OptionGroup var tls: HostTLSOptions

    func with<T: Sendable>(_ body: (FleetClient) async throws -> T) async throws -> T {
        do {
            return try await FleetClient.with(url: service, tls: tls.files, body)
        } catch let e as FleetAPIError {
            if e.status == 0 { throw malformedInput(e.message) }
            throw malformedInput("\(e.status) \(e.code): \(e.message)")
        }
    }
}

struct HostsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hosts",
        abstract: "Register, remove and list the hosts of a running `vmv-verifier serve`.",
        subcommands: [Add.self, Remove.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register a VMV host: its URL, its AK (a pin from `vmv-verifier enroll`), its reference set.",
            discussion: "Exit status: 0 registered; 2 refused (the reason is printed) or the service could not be asked.")

        @Argument(help: "The host's name in the fleet (letters, digits, '.', '-', '_').")
        var name: String

        @Argument(help: "The VMV host: https://HOST:PORT.")
        var url: String

        @Option(help: ArgumentHelp("The AK pin written by `vmv-verifier enroll` (omit to trust the service's AK CA).", valueName: "file"))
        var ak: String?

        @Option(name: .customLong("reference-set"), help: ArgumentHelp("A reference set named in the service's [references].", valueName: "name"))
        var referenceSet = "default"

        @Option(help: ArgumentHelp("Seconds between attestations of this host (default: the service's).", valueName: "seconds"))
        var interval: Int?

        @OptionGroup var options: ServiceOptions

        func run() async throws {
            var pin: AKPin?
            if let ak {
                do { pin = try AKPin.load(ak) } catch { throw malformedInput(error.reason) }
            }
            let registration = HostRegistration(name: name, url: url, akPin: pin, referenceSet: referenceSet, intervalSeconds: interval)
            if let problem = registration.problem { throw malformedInput(problem) }
            let body = Array(try JSONEncoder().encode(registration))
            let host = try await options.with { try await $0.decode(HostStatus.self, .POST, "/v1/hosts", body: body) }
            print("registered \(host.name) \(host.url) (reference set \(host.referenceSet), AK \(host.akName.map { String($0.prefix(16)) + "…" } ?? "via AK CA")); first attestation now")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a host (its verdict history stays, for audit).")

        @Argument(help: "The host's name.")
        var name: String

        @OptionGroup var options: ServiceOptions

        func run() async throws {
            _ = try await options.with { try await $0.call(.DELETE, "/v1/hosts/" + name.queryEscaped) }
            print("removed \(name)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the registered hosts and their verdicts.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var options: ServiceOptions

        func run() async throws {
            let bytes = try await options.with { try await $0.call(.GET, "/v1/hosts") }
            if json { print(String(decoding: bytes, as: UTF8.self)); return }
            let hosts = try JSONDecoder().decode([HostStatus].self, from: Data(bytes))
            print(FleetFormat.hostTable(hosts), terminator: "")
        }
    }
}

/// `vmv-verifier status [HOST]`
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "The verdicts of a running service: every host, or one host and its VMs.",
        discussion: "Exit status: 0 every host shown is trusted; 1 some host is not; 2 the service could not be asked.")

    @Argument(help: "A host's name (default: the whole fleet).")
    var host: String?

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let hosts: [HostStatus]
        if let host {
            let bytes = try await options.with { try await $0.call(.GET, "/v1/hosts/" + host.queryEscaped) }
            if json { print(String(decoding: bytes, as: UTF8.self)) }
            hosts = [try JSONDecoder().decode(HostStatus.self, from: Data(bytes))]
        } else {
            let bytes = try await options.with { try await $0.call(.GET, "/v1/status") }
            if json { print(String(decoding: bytes, as: UTF8.self)) }
            hosts = try JSONDecoder().decode(FleetStatus.self, from: Data(bytes)).hosts
        }
        if !json {
            print(FleetFormat.hostTable(hosts), terminator: "")
            if host != nil { print(FleetFormat.vmTable(hosts.first?.vms ?? []), terminator: "") }
        }
        if !hosts.allSatisfy({ $0.verdict == .trusted }) { throw ExitCode(1) }
    }
}

/// `vmv-verifier history --host H [--vm X] [--at T]`
struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "The verdict changes of a host or a VM; with --at, the verdict in force at that time.",
        discussion: """
            With --at T: "was VM X (or the host) trusted at time T?" — prints the change in force \
            at T with its reasons and the log records behind it, and the last attestation \
            attempt before T. Exit status 0 if it was trusted, 1 if not (or nothing was known), \
            2 the service could not be asked.
            """)

    @Option(help: "The host's name.")
    var host: String

    @Option(help: "A VM: its name or UUID (default: the host's own verdict, or every change of the host without --at).")
    var vm: String?

    @Option(help: ArgumentHelp("A time: ISO 8601 (2025-01-31T12:00:00Z) or unix seconds.", valueName: "time"))
    var at: String?

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        var query = "host=" + host.queryEscaped
        if let vm { query += "&vm=" + vm.queryEscaped }
        if let at {
            guard Timestamp.parse(at) != nil else { throw malformedInput("--at '\(at)': an ISO 8601 time or unix seconds") }
            query += "&at=" + at.queryEscaped
            let bytes = try await options.with { try await $0.call(.GET, "/v1/history?" + query) }
            if json { print(String(decoding: bytes, as: UTF8.self)) }
            let answer = try JSONDecoder().decode(VerdictAt.self, from: Data(bytes))
            if !json { print(FleetFormat.verdictAt(answer), terminator: "") }
            if !answer.trusted { throw ExitCode(1) }
            return
        }
        let bytes = try await options.with { try await $0.call(.GET, "/v1/history?" + query + "&limit=100000") }
        if json { print(String(decoding: bytes, as: UTF8.self)); return }
        let changes = try JSONDecoder().decode([VerdictChange].self, from: Data(bytes))
        print(FleetFormat.timeline(changes), terminator: "")
    }
}

enum FleetFormat {
    static func hostTable(_ hosts: [HostStatus]) -> String {
        let width = max(4, hosts.map(\.name.count).max() ?? 0)
        var out = "HOST".padded(width) + "  VERDICT      SINCE                     VMS  REASON\n"
        for h in hosts {
            let since = h.verdictSince.map(Timestamp.iso) ?? "-"
            let vms = h.vms.isEmpty ? "-" : "\(h.vms.filter { $0.verdict == .trusted }.count)/\(h.vms.count)"
            out += h.name.padded(width) + "  " + h.verdict.rawValue.padded(11) + "  " + since.padded(24) + "  " + vms.padded(3) + "  " + (h.reasons.first ?? "") + "\n"
        }
        return out
    }

    static func vmTable(_ vms: [VMStatus]) -> String {
        guard !vms.isEmpty else { return "no VMs known\n" }
        let width = max(2, vms.map { ($0.name ?? $0.uuid).count }.max() ?? 0)
        var out = "VM".padded(width) + "  VERDICT      SINCE                     REASON\n"
        for vm in vms {
            out += (vm.name ?? vm.uuid).padded(width) + "  " + vm.verdict.rawValue.padded(11) + "  " + Timestamp.iso(vm.since).padded(24) + "  " + (vm.reasons.first ?? "") + "\n"
        }
        return out
    }

    static func change(_ c: VerdictChange) -> String {
        let subject = c.subject == .host ? "host \(c.host)" : "VM \(c.vmName ?? "?") (\(c.vmUUID ?? "?")) of \(c.host)"
        var out = "#\(c.id) \(Timestamp.iso(c.at))  \(subject): \(c.previous?.rawValue ?? "-") -> \(c.verdict.rawValue)  [\(c.owner)]\n"
        for r in c.reasons { out += "    reason: \(r)\n" }
        for f in c.evidence.failedChecks { out += "    failed check \(f.rule): \(f.reason)\n" }
        for f in c.evidence.facts {
            out += "    seq \(f.firstSeq)\(f.lastSeq != f.firstSeq ? "-\(f.lastSeq)" : "") \(f.label) \(f.value): \(f.result)"
                + (f.expected.isEmpty ? "" : " (expected \(f.expected.joined(separator: " or ")))") + "\n"
        }
        for r in c.evidence.records { out += "    record \(r)\n" }
        return out
    }

    static func timeline(_ changes: [VerdictChange]) -> String {
        changes.isEmpty ? "no verdict changes recorded\n" : changes.map(change).joined()
    }

    static func verdictAt(_ a: VerdictAt) -> String {
        let subject = a.vm.map { "VM \($0) of \(a.host)" } ?? "host \(a.host)"
        var out = "\(subject) at \(Timestamp.iso(a.at)): "
        guard let c = a.change else { return out + "nothing known (no verdict recorded before that time)\n" }
        out += "\(c.verdict.rawValue.uppercased()) (since \(Timestamp.iso(c.at)))\n" + change(c)
        if let last = a.lastAttempt {
            out += "last attestation before it: \(Timestamp.iso(last.finished)) by \(last.owner): \(last.verdict.rawValue)\n"
        }
        return out
    }
}
