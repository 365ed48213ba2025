import ArgumentParser
import Crypto
import Foundation
import SwiftASN1
import TPMWire
import Verifier
import VerifierClient
import VerifierService
import X509

#if canImport(Glibc)
import Glibc
#endif

/// The fleet benchmark: one `vmv-verifier serve` (a separate process, SQLite store) against a
/// load generator playing thousands of VMV hosts over real TLS on loopback. Prints the hosts
/// it sustains at the interval, the detection delay of tampered hosts, and where the time
/// goes; beside it, the reference: the same attestations by the one-shot `vmv-verifier attest`
/// CLI in a loop (how fleets are attested with cron and tpm2-tools scripts), and the ratio.
struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Hosts one verifier sustains at an interval, and how fast it sees a tampered host.")

    @Option(help: "Simulated VMV hosts.")
    var hosts = 5000

    @Option(help: "Seconds between attestations of each host.")
    var interval = 10

    @Option(help: "Seconds measured after the warm-up (one interval).")
    var duration = 60

    @Option(help: "Hosts tampered during the run (their guest's kernel text changes).")
    var tamper = 5

    @Option(help: "Attestations in flight at once in the verifier.")
    var concurrency = 64

    @Option(help: "Event-loop threads of the load generator.")
    var generatorThreads = 1

    @Option(help: "First port of the simulated hosts (one port each; below the ephemeral range, so no connection of an earlier run in TIME_WAIT holds one).")
    var basePort = 20000

    @Option(help: "The vmv-verifier binary (default: next to vmv-bench).")
    var verifier: String?

    func run() async throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        guard Int(limit.rlim_cur) > hosts + 2 * concurrency + 256 else {
            throw ValidationError("\(hosts) hosts need more than \(limit.rlim_cur) open files (ulimit -n)")
        }
        let verifierPath = verifier ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("vmv-verifier").path
        guard FileManager.default.isExecutableFile(atPath: verifierPath) else {
            throw ValidationError("no vmv-verifier at \(verifierPath) (swift build -c release --product vmv-verifier)")
        }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-bench-fleet-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: work + "/refs", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let pki = try BenchPKI(directory: work)

        print("fleet: \(hosts) simulated VMV hosts (software P-256 AKs, real TLS on loopback), one vmv-verifier serve, interval \(interval) s, \(concurrency) in flight, SQLite")
        let simulated = try (0..<hosts).map { try SimulatedHost(index: $0) }
        try Self.writeReferences(from: simulated[0], to: work + "/refs")
        let generator = try LoadGenerator(hosts: simulated, certificate: pki.serverCertificate, key: pki.serverKey, clientCA: pki.ca,
                                          threads: generatorThreads)
        let ports = try generator.start(basePort: basePort)
        defer { generator.stop() }
        let urls = ports.map { "https://127.0.0.1:\($0)" }

        // The reference: the one-shot CLI, one process per attestation, on the same hosts.
        let pinPath = work + "/pin0.json"
        try Data(simulated[1].pin(url: urls[1]).json()).write(to: URL(fileURLWithPath: pinPath))
        let cliRuns = 20
        let cliStart = ContinuousClock.now
        for _ in 0..<cliRuns {
            let r = try Bench.run(verifierPath, ["attest", urls[1], "--ca", pki.ca, "--cert", pki.clientCertificate, "--key", pki.clientKey,
                                                 "--refs", work + "/refs", "--ak", pinPath])
            guard r.status == 0 else { throw ValidationError("vmv-verifier attest on a simulated host: exit \(r.status): \(r.stdout) \(r.stderr)") }
        }
        let cliSeconds = Self.seconds(ContinuousClock.now - cliStart) / Double(cliRuns)

        // The service.
        let config = """
            [service]
            owner = "bench"
            [listen]
            port = 0
            [tls]
            certificate = "\(pki.serverCertificate)"
            key = "\(pki.serverKey)"
            client_ca = "\(pki.ca)"
            [hosts]
            ca = "\(pki.ca)"
            certificate = "\(pki.clientCertificate)"
            key = "\(pki.clientKey)"
            [storage]
            path = "\(work)/fleet.sqlite"
            [schedule]
            interval_seconds = \(interval)
            timeout_seconds = \(max(5, interval))
            max_concurrent = \(concurrency)
            [references]
            default = "\(work)/refs"
            [log]
            level = "notice"
            """
        try config.write(toFile: work + "/verifier.toml", atomically: true, encoding: .utf8)
        let service = try BackgroundProcess(verifierPath, ["serve", "--config", work + "/verifier.toml"], log: work + "/verifier.log")
        defer { service.stop() }
        let port = try service.waitForLine(containing: "vmv-verifier serving", timeout: 60).flatMap { line in
            line.range(of: "port=").map { Int(line[$0.upperBound...].prefix { $0.isNumber }) ?? 0 }
        } ?? 0
        guard port > 0 else { throw ValidationError("the verifier did not start: \(service.tail())") }
        let serviceURL = "https://127.0.0.1:\(port)"
        let tls = ClientTLSFiles(ca: pki.ca, certificate: pki.clientCertificate, key: pki.clientKey)

        try await FleetClient.with(url: serviceURL, tls: tls) { client in
            let registrations = simulated.indices.map {
                HostRegistration(name: "sim-\($0)", url: urls[$0], akPin: simulated[$0].pin(url: urls[$0]), referenceSet: "default")
            }
            for chunk in stride(from: 0, to: registrations.count, by: 1000) {
                _ = try await client.call(.POST, "/v1/hosts", body: Array(try JSONEncoder().encode(Array(registrations[chunk..<min(chunk + 1000, registrations.count)]))))
            }
            print("registered \(hosts) hosts (first attestations spread over one interval); warming up for \(interval + 5) s")
            try await Task.sleep(for: .seconds(interval + 5))

            let before = try await Self.metrics(client)
            let cpuBefore = (service: service.cpuSeconds(), generator: Self.ownCPUSeconds())
            let servedBefore = generator.served.value
            let t0 = ContinuousClock.now

            // Tamper a few hosts mid-run and time how long each takes to show UNTRUSTED.
            try await Task.sleep(for: .seconds(max(1, duration / 3)))
            let victims = Array(stride(from: 7, to: hosts, by: max(1, hosts / max(1, tamper))).prefix(tamper))
            let tamperedAt = ContinuousClock.now
            for v in victims { try simulated[v].tamper() }
            var detected: [Int: Double] = [:]
            while detected.count < victims.count, ContinuousClock.now - tamperedAt < .seconds(3 * interval) {
                for v in victims where detected[v] == nil {
                    let h = try await client.decode(HostStatus.self, .GET, "/v1/hosts/sim-\(v)")
                    if h.verdict == .untrusted { detected[v] = Self.seconds(ContinuousClock.now - tamperedAt) }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            let remaining = Duration.seconds(duration) - (ContinuousClock.now - t0)
            if remaining > .zero { try await Task.sleep(for: remaining) }
            let elapsed = Self.seconds(ContinuousClock.now - t0)
            let after = try await Self.metrics(client)
            let cpu = (service: service.cpuSeconds() - cpuBefore.service, generator: Self.ownCPUSeconds() - cpuBefore.generator)
            let status = try await client.decode(FleetStatus.self, .GET, "/v1/status")

            let attestations = after.attestations - before.attestations
            let rate = attestations / elapsed
            let sustained = min(Double(hosts), rate * Double(interval))
            let meanLatency = (after.durationSum - before.durationSum) / max(1, after.durationCount - before.durationCount)
            let meanLag = (after.lagSum - before.lagSum) / max(1, after.lagCount - before.lagCount)
            let served = generator.served.value - servedBefore
            print("")
            print("  attestations: \(Int(attestations)) in \(Bench.format(elapsed, 1)) s = \(Bench.format(rate, 1))/s (generator answered \(served) quotes)")
            print("  hosts sustained at \(interval) s: \(Int(sustained)) of \(hosts)  (mean start lag behind schedule \(Bench.format(meanLag, 2)) s)")
            print("  verdicts now: " + status.counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            let delays = victims.compactMap { detected[$0] }.sorted()
            let worst = delays.last ?? .infinity
            print("  detection delay (tamper → UNTRUSTED), \(victims.count) hosts: "
                  + (delays.isEmpty ? "none detected" : "median \(Bench.format(delays[delays.count / 2], 1)) s, max \(Bench.format(worst, 1)) s")
                  + (delays.count < victims.count ? " (\(victims.count - delays.count) not detected within \(3 * interval) s)" : ""))
            print("  where the time goes: verifier \(Bench.format(cpu.service / elapsed * 100, 0)) % of a core (\(Bench.format(cpu.service / max(1, attestations) * 1e3, 2)) ms CPU per attestation, "
                  + "\(Bench.format(meanLatency * 1e3, 1)) ms wall each), load generator \(Bench.format(cpu.generator / elapsed * 100, 0)) % of a core "
                  + "(\(Bench.format(cpu.generator / max(1, Double(served)) * 1e3, 2)) ms per quote), on \(ProcessInfo.processInfo.activeProcessorCount) cores with other jobs")
            let cliHosts = Double(interval) / cliSeconds
            print("  reference: `vmv-verifier attest` one process per attestation: \(Bench.format(cliSeconds * 1e3, 1)) ms each → \(Int(cliHosts)) hosts at \(interval) s in a loop")
            print("  ratio: the service sustains \(Bench.format(sustained / max(1, cliHosts), 1))x the hosts of the CLI loop")
            let met = sustained >= Double(hosts) * 0.99 && delays.count == victims.count && worst <= Double(2 * interval)
            print("target \(hosts) hosts at \(interval) s with detection within \(2 * interval) s: \(met ? "met" : "NOT met")")
        }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6
    }

    struct Sample {
        var attestations = 0.0, durationSum = 0.0, durationCount = 0.0, lagSum = 0.0, lagCount = 0.0
    }

    static func metrics(_ client: FleetClient) async throws -> Sample {
        let text = String(decoding: try await client.call(.GET, "/metrics"), as: UTF8.self)
        var s = Sample()
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let v = Double(parts[1]) else { continue }
            let name = String(parts[0])
            if name.hasPrefix("vmv_verifier_attestations_total{") { s.attestations += v }
            if name == "vmv_verifier_attestation_duration_seconds_sum" { s.durationSum = v }
            if name == "vmv_verifier_attestation_duration_seconds_count" { s.durationCount = v }
            if name == "vmv_verifier_schedule_lag_seconds_sum" { s.lagSum = v }
            if name == "vmv_verifier_schedule_lag_seconds_count" { s.lagCount = v }
        }
        return s
    }

    /// References learned from one simulated host's log (they all measure the same things).
    static func writeReferences(from host: SimulatedHost, to directory: String) throws {
        let facts = try host.facts()
        let (vmv, hypervisor) = ReferenceLearning.platform(learnedFrom: facts, evidence: ["source": "vmv-bench fleet"])
        var documents: [(String, ReferenceDocument)] = []
        if let vmv { documents.append(("vmv.json", .vmv(vmv))) }
        if let hypervisor { documents.append(("hypervisor.json", .hypervisor(hypervisor))) }
        for d in facts.domains.values {
            documents.append(("kernel-\(d.uuid).json", .kernel(try ReferenceLearning.kernel(learnedFrom: d, evidence: ["source": "vmv-bench fleet"], id: "bench-kernel"))))
        }
        for (name, document) in documents {
            try Data(document.json()).write(to: URL(fileURLWithPath: directory + "/" + name))
        }
    }
}

/// A child process left running (the verifier), its output in a file.
final class BackgroundProcess {
    let pid: pid_t
    let log: String

    init(_ path: String, _ arguments: [String], log: String) throws {
        self.log = log
        pid = try Bench.spawn(path, arguments, stdout: log, stderr: nil)
    }

    func waitForLine(containing text: String, timeout: Int) throws -> String? {
        for _ in 0..<(timeout * 10) {
            if let line = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").first(where: { $0.contains(text) }) {
                return String(line)
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { return nil }
            usleep(100_000)
        }
        return nil
    }

    func tail() -> String { String(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(2000)) }

    /// utime + stime of the process, from /proc.
    func cpuSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            usleep(100_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }
}

/// A CA, a server certificate for 127.0.0.1 (the simulated hosts and the verifier's API) and
/// a client certificate (the verifier towards hosts, and the operator towards the verifier).
struct BenchPKI {
    let ca: String, serverCertificate: String, serverKey: String, clientCertificate: String, clientKey: String

    init(directory: String) throws {
        ca = directory + "/ca.pem"
        serverCertificate = directory + "/server.pem"
        serverKey = directory + "/server.key"
        clientCertificate = directory + "/client.pem"
        clientKey = directory + "/client.key"
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("vmv-bench CA") }
        let now = Date()
        let caCert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey), notValidBefore: now - 3600, notValidAfter: now + 86400,
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(caKey))
        try Self.write(caCert, ca)
        for (name, server, cert, key) in [("127.0.0.1", true, serverCertificate, serverKey), ("bench operator", false, clientCertificate, clientKey)] {
            let k = P256.Signing.PrivateKey()
            let c = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(k.publicKey), notValidBefore: now - 3600, notValidAfter: now + 86400,
                issuer: caName, subject: try DistinguishedName { CommonName(name) }, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage(server ? [.serverAuth] : [.clientAuth])
                    if server { SubjectAlternativeNames([.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))]) }
                },
                issuerPrivateKey: .init(caKey))
            try Self.write(c, cert)
            try k.pemRepresentation.write(toFile: key, atomically: true, encoding: .utf8)
        }
    }

    static func write(_ c: Certificate, _ path: String) throws {
        var serializer = DER.Serializer()
        try serializer.serialize(c)
        try PEMDocument(type: "CERTIFICATE", derBytes: serializer.serializedBytes).pemString.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
