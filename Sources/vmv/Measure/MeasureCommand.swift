import ArgumentParser
import Foundation
import Introspection
import TPM
import TPMWire
import VMV

/// `vmv measure …`: measurements into the log, run by hand (what `vmv serve` runs as a service).
struct MeasureCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "measure",
        abstract: "Measure into the measurement log (PCR extend through the TPM).",
        subcommands: [MeasureGuestsCommand.self]
    )
}

struct MeasureGuestsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guests",
        abstract: "Measure the running Xen guests' kernels into the log: load-time facts once per domain incarnation, kernel text and read-only data when first seen and whenever a Merkle root changes.",
        discussion: """
            Every guest but dom0 and the VMV's own domain, or only --domain. Prints one line per \
            guest and pass (--json: one JSON object per line) saying what was recorded; an \
            unchanged guest records nothing. Takes the state directory's lock, like `vmv serve`: \
            stop the service first. With --once, exits 1 if a guest could not be measured.
            """)

    @OptionGroup var host: StateOptions
    @OptionGroup var tpmOptions: TPMOptions
    @Flag(help: "One pass, then exit.") var once = false
    @Option(help: "Seconds between passes.") var interval: Double = 60
    @Option(help: ArgumentHelp("Only this domain (name or id).", valueName: "name|id")) var domain: String?
    @Flag(help: "Also record the VMV's own boot measurements first (as `vmv serve` does).") var boot = false
    @Flag(help: "Print JSON lines for machines.") var json = false

    func validate() throws {
        guard interval >= 1, interval <= 86_400 else { throw ValidationError("--interval must be 1…86400 seconds") }
    }

    func run() async throws {
        let configuration = try host.configuration()
        let xen = try await withXen { $0 }
        try await tpmOptions.withTPM { tpm in
            let engine = try await openEngine(host, tpm, configuration)
            if boot { _ = try await engine.measureBoot(configurationFile: host.configurationFile, configuration: configuration) }
            let measurer = GuestMeasurer(engine: engine, xen: xen, logger: vmvLogger)
            var failed = false
            while true {
                let reports: [GuestMeasurementReport]
                if let domain {
                    let id = try await withXen { x in try UInt32(domain) ?? x.domain(named: domain).id }
                    do throws(GuestMeasurementError) {
                        reports = [try await measurer.measure(domainID: id)]
                    } catch {
                        reports = [GuestMeasurementReport(domainID: id, time: 0, error: error)]
                    }
                } else {
                    reports = await measurer.measureAll()
                }
                for r in reports { try emit(r) }
                failed = reports.contains { $0.error != nil }
                if once { break }
                try await Task.sleep(nanoseconds: UInt64(interval * 1_000_000_000))
            }
            await engine.close()
            if failed { throw ExitCode(1) }
        }
    }

    func emit(_ r: GuestMeasurementReport) throws {
        let line: String
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            line = String(decoding: try encoder.encode(r), as: UTF8.self)
        } else {
            var parts = ["\(r.name ?? "-") d\(r.domainID)"]
            if let e = r.error {
                parts.append("error (\(e.code.rawValue)): \(e.reason)")
            } else {
                parts.append("\(r.incarnation ?? "-")\(r.newIncarnation ? " (new)" : "") Linux \(r.kernelRelease ?? "?") slide \(r.slide ?? "?")")
                for region in r.regions {
                    let what = region.seq.map { seq in
                        region.changedPages.isEmpty ? "recorded seq \(seq)" : "changed pages \(region.changedPages.prefix(8).map(String.init).joined(separator: ",")), recorded seq \(seq)"
                    } ?? "unchanged"
                    parts.append("\(region.subject) \(region.root.prefix(16))… \(what)")
                }
                let load = r.loadTime.map { f in "\(f.kind) \(f.seq.map { "seq \($0)" } ?? (f.note ?? "-"))" }
                if !load.isEmpty { parts.append("load-time: " + load.joined(separator: ", ")) }
            }
            line = parts.joined(separator: "; ")
        }
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
