import ArgumentParser
import Foundation
import TPM
import TPMWire

/// TPM quotes per second through the `TPM` actor (TPM2_Quote, then the PCR read-back that
/// matches the values to the quote's pcrDigest) against swtpm, beside `tpm2_quote` (a process
/// per quote, also reading the PCR values with -o) on the same swtpm and AK in the same run.
/// Both outputs are checked with tpm2_checkquote.
struct TPMQuoteBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tpm-quote",
        abstract: "TPM quotes per second through the TPM actor on swtpm, beside tpm2_quote."
    )

    @Option(help: "Quotes per timed run through the actor.")
    var quotes = 500

    @Option(help: "Timed runs through the actor; the fastest counts.")
    var runs = 5

    @Option(help: "Runs of tpm2_quote; the fastest counts.")
    var toolRuns = 20

    @Option(help: "The PCRs quoted, tpm2-tools syntax.")
    var pcrList = "sha1:0,16+sha256:0,1,2,3,16"

    @Option(help: "The AK: ecc (P-256, ECDSA) or rsa (2048, RSASSA).")
    var ak: TPM.AttestationKey.Kind = .eccP256

    func run() async throws {
        let quoteTool = try Bench.tool("tpm2_quote")
        let checkquote = try Bench.tool("tpm2_checkquote")
        let selection: PCRSelection
        do { selection = try PCRSelection(parsing: pcrList) } catch { throw ValidationError(error.reason) }
        let simulator = try TPMSimulator.ephemeral()
        let tpm = try await TPM.open(simulator: simulator)
        defer { Task { await tpm.close() } }
        let key = try await tpm.attestationKey(kind: ak)
        let handle = String(format: "0x%08x", key.handle)
        let nonce = Array("vmv-bench tpm-quote nonce".utf8)
        print("TPM quote: \(key.publicArea.type.name) AK at \(handle), \(selection.count) PCRs (\(pcrList)), swtpm \(simulator.tcti)")

        for _ in 0..<20 { _ = try await tpm.quote(selection, qualifyingData: nonce) }
        var best = Double.infinity
        var last: TPM.Quote?
        for _ in 0..<max(runs, 1) {
            let start = ContinuousClock.now
            for _ in 0..<quotes { last = try await tpm.quote(selection, qualifyingData: nonce) }
            let elapsed = ContinuousClock.now - start
            best = min(best, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-bench-tpm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let tcti = "\(simulator.tcti)"
        let toolArguments = ["-T", tcti, "-c", handle, "-l", pcrList, "-q", Hex.encode(nonce), "-g", "sha256",
                             "-m", path("tool.msg"), "-s", path("tool.sig"), "-o", path("tool.pcrs")]
        let tool = try Bench.best(of: toolRuns) { try Bench.run(quoteTool, toolArguments) }
        guard tool.result.status == 0 else { throw ValidationError("tpm2_quote failed: \(tool.result.stderr)") }

        // Both verify, with the same verifier, in this run.
        guard let last else { throw ValidationError("no quote was taken") }
        try Data(TPM2BPublic(key.publicArea).wireBytes).write(to: dir.appendingPathComponent("ak.pub"))
        try Data(last.attestBytes).write(to: dir.appendingPathComponent("vmv.msg"))
        try Data(last.signature.wireBytes).write(to: dir.appendingPathComponent("vmv.sig"))
        try Data(try PCRFile(selection: last.selection, values: last.pcrValues).bytes(format: .serialized))
            .write(to: dir.appendingPathComponent("vmv.pcrs"))
        for prefix in ["vmv", "tool"] {
            let check = try Bench.run(checkquote, ["-u", path("ak.pub"), "-m", path("\(prefix).msg"), "-s", path("\(prefix).sig"),
                                                   "-f", path("\(prefix).pcrs"), "-g", "sha256", "-q", Hex.encode(nonce)])
            guard check.status == 0 else { throw ValidationError("tpm2_checkquote rejected the \(prefix) quote: \(check.stderr)") }
        }
        let perSecond = Double(quotes) / best
        let toolPerSecond = 1 / tool.seconds
        print("  TPM actor (quote + PCR read-back)   \(Bench.si(perSecond))quotes/s  (\(Bench.format(1e3 / perSecond, 2)) ms each)")
        print("  tpm2_quote (process, -o PCRs)        \(Bench.si(toolPerSecond))quotes/s  (\(Bench.format(tool.seconds * 1e3, 2)) ms each)")
        print("  ratio: the actor is \(Bench.format(perSecond / toolPerSecond, 1))x tpm2_quote")
        print("check: tpm2_checkquote accepts both quotes: yes")
        await tpm.close()
    }
}

extension TPM.AttestationKey.Kind: ExpressibleByArgument {}
