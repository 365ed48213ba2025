import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import TPMWire
import Verifier

#if canImport(Glibc)
import Glibc
#endif

/// Quote throughput of one `vmv serve` on its embedded swtpm under many concurrent verifiers,
/// with nonce batching and without it (every request its own TPM quote: the reference). Each
/// answer is verified as a verifier would (signature, every quote rule, the binding of its own
/// nonce and the server's TLS key through the Merkle proof, the log's records verified and
/// replayed to the quoted PCR value); only verified quotes count.
struct QuoteLoadBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quote-load",
        abstract: "Verified quotes per second and latency for N concurrent verifiers, batched and unbatched."
    )

    @Option(help: "Concurrent verifiers (each one connection, one request at a time).")
    var clients = 64

    @Option(help: "Seconds each run lasts after a warm-up second.")
    var seconds = 10

    @Option(help: "Batch window in milliseconds for the batched run.")
    var windowMs = 10

    @Option(help: "The vmv binary (default: next to vmv-bench).")
    var vmv: String?

    func run() async throws {
        let vmvPath = vmv ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("vmv").path
        guard FileManager.default.isExecutableFile(atPath: vmvPath) else {
            throw ValidationError("no vmv binary at \(vmvPath) (swift build -c release --product vmv)")
        }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-bench-quotes-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let certs = work + "/certs"
        let made = try Bench.run(vmvPath, ["certs", "init", "--out", certs])
        guard made.status == 0 else { throw ValidationError("vmv certs init failed: \(made.stderr)") }

        print("quote load: \(clients) concurrent verifiers, \(seconds) s per run, one vmv serve on its embedded swtpm")
        let unbatched = try await measure(vmvPath, work: work, certs: certs, batching: false)
        print(unbatched.line("unbatched (reference)"))
        let batched = try await measure(vmvPath, work: work, certs: certs, batching: true)
        print(batched.line("batched, \(windowMs) ms window"))
        let ratio = batched.rate / max(unbatched.rate, 1e-9)
        print("ratio: batching serves \(Bench.format(ratio, 1))x the verified quotes per second of one TPM quote per request"
              + " (\(Bench.format(batched.requestsPerTPMQuote, 1)) requests per TPM quote)")
        let errors = batched.errors + unbatched.errors
        print("target ≥ 10x with no errors: \(ratio >= 10 && errors == 0 ? "met" : "NOT met") (errors: \(errors))")
        if errors > 0 { throw ExitCode(1) }
    }

    struct RunResult {
        var verified = 0
        var errors = 0
        var latencies: [Double] = []
        var elapsed = 0.0
        var tpmQuotes = 0.0
        /// Every request answered during the run, warm-up included, and the CPU seconds vmv
        /// serve, its swtpm and these verifiers used meanwhile.
        var answered = 0
        var cpu: (server: Double, swtpm: Double, verifiers: Double) = (0, 0, 0)
        var firstError: String?

        var rate: Double { Double(verified) / max(elapsed, 1e-9) }
        var requestsPerTPMQuote: Double { tpmQuotes > 0 ? Double(verified + errors) / tpmQuotes : 0 }

        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return .nan }
            let sorted = latencies.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
        }

        func line(_ label: String) -> String {
            let name = label.padding(toLength: 30, withPad: " ", startingAt: 0)
            var s = "  \(name) \(Bench.format(rate, 1)) verified quotes/s  p50 \(Bench.format(percentile(0.5) * 1e3, 1)) ms"
                + "  p99 \(Bench.format(percentile(0.99) * 1e3, 1)) ms  \(verified) verified, \(errors) errors, \(Int(tpmQuotes)) TPM quotes"
            let per = { (seconds: Double) in Bench.format(seconds * 1e3 / Double(max(answered, 1)), 2) }
            s += "\n    CPU per request: vmv serve \(per(cpu.server)) ms, swtpm \(per(cpu.swtpm)) ms, verifiers \(per(cpu.verifiers)) ms"
            if let firstError { s += "\n    first error: \(firstError)" }
            return s
        }
    }

    /// Starts `vmv serve`, loads it for `seconds`, stops it with SIGTERM.
    func measure(_ vmvPath: String, work: String, certs: String, batching: Bool) async throws -> RunResult {
        let config = work + "/vmv-\(batching ? "batched" : "unbatched").toml"
        try """
            [tpm]
            tcti = "simulator"
            [state]
            directory = "\(work)/state"
            [listen]
            address = "127.0.0.1"
            port = 0
            [tls]
            certificate = "\(certs)/server.pem"
            key = "\(certs)/server.key"
            client_ca = "\(certs)/ca.pem"
            [quote]
            batching = \(batching)
            batch_window_ms = \(windowMs)
            max_batch = \(max(clients, 1))
            [limits]
            rate_per_second = 100000
            rate_burst = 100000
            [measure]
            xen = "off"
            [logging]
            level = "notice"
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: vmvPath)
        server.arguments = ["serve", "--config", config]
        server.standardOutput = FileHandle.nullDevice
        let logURL = URL(fileURLWithPath: work + "/serve-\(batching ? "batched" : "unbatched").log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        server.standardError = try FileHandle(forWritingTo: logURL)
        try server.run()
        defer {
            if server.isRunning {
                kill(server.processIdentifier, SIGTERM)
                server.waitUntilExit()
            }
        }

        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certs + "/ca.pem"))
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certs + "/client.pem").map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: certs + "/client.key", format: .pem))
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: clients)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let result = try await load(client, server: server, certs: certs, logURL: logURL, swtpmPIDFile: work + "/state/swtpm/swtpm.pid")
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// Waits for the server, runs the clients, stops the server.
    func load(_ client: HTTPClient, server: Process, certs: String, logURL: URL, swtpmPIDFile: String) async throws -> RunResult {
        let tlsKeyHash = try QuoteBinding.tlsKeyHash(certificateDER: try NIOSSLCertificate.fromPEMFile(certs + "/server.pem")[0].toDERBytes())

        // Up: the port it bound is in its "serving" line (the first start provisions the
        // simulator: a few seconds), and /healthz answers.
        var base: String?
        for _ in 0..<600 where server.isRunning && base == nil {
            let log = (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
            if let line = log.split(separator: "\n").first(where: { $0.contains("serving the VMV API") }),
               let url = line.split(separator: " ").first(where: { $0.hasPrefix("url=https://") }),
               let port = url.split(separator: ":").last.flatMap({ Int($0) }) {
                base = "https://localhost:\(port)"
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        guard let base, (try? await Self.get(client, base + "/healthz")) == 200 else {
            let log = (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
            throw ValidationError("vmv serve did not come up: \(log.suffix(2000))")
        }
        let before = try await Self.tpmQuotes(client, base)
        let swtpm = (try? String(contentsOfFile: swtpmPIDFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let cpuBefore = (Self.cpuSeconds(server.processIdentifier), swtpm.map(Self.cpuSeconds) ?? 0, Self.ownCPUSeconds())

        let warmUp = ContinuousClock.now + .seconds(1)
        let deadline = warmUp + .seconds(seconds)
        var result = try await withThrowingTaskGroup(of: RunResult.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    var r = RunResult()
                    while ContinuousClock.now < deadline {
                        let start = ContinuousClock.now
                        let outcome = await Self.attest(client, base, tlsKeyHash: tlsKeyHash)
                        let end = ContinuousClock.now
                        r.answered += 1
                        guard start >= warmUp else { continue }
                        switch outcome {
                        case .success:
                            r.verified += 1
                            r.latencies.append(Self.seconds(end - start))
                        case .failure(let error):
                            r.errors += 1
                            if r.firstError == nil { r.firstError = "\(error)" }
                        }
                    }
                    return r
                }
            }
            var total = RunResult()
            for try await r in group {
                total.verified += r.verified
                total.errors += r.errors
                total.answered += r.answered
                total.latencies += r.latencies
                total.firstError = total.firstError ?? r.firstError
            }
            return total
        }
        result.elapsed = Self.seconds(ContinuousClock.now - warmUp)
        result.tpmQuotes = try await Self.tpmQuotes(client, base) - before
        result.cpu = (Self.cpuSeconds(server.processIdentifier) - cpuBefore.0, (swtpm.map(Self.cpuSeconds) ?? 0) - cpuBefore.1,
                      Self.ownCPUSeconds() - cpuBefore.2)

        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()
        guard server.terminationStatus == 0 else {
            throw ValidationError("vmv serve exited with status \(server.terminationStatus) on SIGTERM")
        }
        return result
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// One attestation: a fresh nonce, the quote, and its verification.
    static func attest(_ client: HTTPClient, _ base: String, tlsKeyHash: [UInt8]) async -> Result<Void, Failure> {
        do {
            let nonce = (0..<32).map { _ in UInt8.random(in: 0...255) }
            var request = HTTPClientRequest(url: base + "/v1/quote")
            request.method = .POST
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(ServiceAPI.QuoteRequest(nonce: Hex.encode(nonce)))))
            let response = try await client.execute(request, timeout: .seconds(60))
            let body = try await response.body.collect(upTo: 16 << 20)
            guard response.status == .ok else {
                return .failure(Failure(description: "HTTP \(response.status.code): \(String(buffer: body).prefix(200))"))
            }
            let answer = try JSONDecoder().decode(ServiceAPI.QuoteResponse.self, from: Data(body.readableBytesView))
            func bytes(_ b64: String) throws -> [UInt8] {
                guard let data = Data(base64Encoded: b64) else { throw Failure(description: "not base64") }
                return Array(data)
            }
            let ak = try AttestationKey(tpmPublic: try TPM2BPublic(wireBytes: try bytes(answer.ak.publicArea)).publicArea)
            let evidence = try QuoteEvidence(message: try bytes(answer.quote.message), signature: try bytes(answer.quote.signature),
                                             ak: ak, pcrs: try PCRFile(bytes: try bytes(answer.quote.pcrs), format: .serialized))
            let proof = BindingProof(leafIndex: answer.binding.leafIndex, leafCount: answer.binding.leafCount,
                                     path: try answer.binding.proof.map { try Hex.decode($0) })
            let verdict = QuoteVerifier.bound(nonce: nonce, tlsKeyHash: tlsKeyHash, proof: proof,
                                              selection: try PCRSelection(parsing: answer.quote.pcrSelection)).check(evidence)
            guard verdict.isValid else {
                return .failure(Failure(description: "rejected: \(verdict.failures.map(\.description).joined(separator: "; "))"))
            }
            guard let log = answer.log else { return .failure(Failure(description: "the answer has no log")) }
            let events = try TCGEventLog(bytes: try bytes(log.header) + bytes(log.records))
            switch MeasurementLogVerifier.verify(events, epoch: log.epoch, pcr: answer.host.pcr) {
            case .failure(let rejection):
                return .failure(Failure(description: "log rejected: \(rejection)"))
            case .success(let verified):
                if let problem = verified.check(against: evidence.pcrs.values) {
                    return .failure(Failure(description: "log does not replay to the quote: \(problem)"))
                }
            }
            return .success(())
        } catch let error as Failure {
            return .failure(error)
        } catch {
            return .failure(Failure(description: "\(error)"))
        }
    }

    static func get(_ client: HTTPClient, _ url: String) async throws -> Int {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
        _ = try await response.body.collect(upTo: 1 << 20)
        return Int(response.status.code)
    }

    /// vmv_tpm_quotes_total, both modes, from /metrics.
    static func tpmQuotes(_ client: HTTPClient, _ base: String) async throws -> Double {
        let response = try await client.execute(HTTPClientRequest(url: base + "/metrics"), timeout: .seconds(5))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 22))
        return text.split(separator: "\n").filter { $0.hasPrefix("vmv_tpm_quotes_total{") }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
    }

    /// User + system CPU seconds of process `pid` (/proc/PID/stat fields 14 and 15).
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
        return s(usage.ru_utime) + s(usage.ru_stime)
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}
