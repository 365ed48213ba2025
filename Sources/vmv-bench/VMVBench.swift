import ArgumentParser

/// Release-built benchmarks, one subcommand each, run by `scripts/bench.sh NAME`. Each prints
/// its figure beside a reference tool run on the same input in the same run, and the ratio.
@main
struct VMVBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmv-bench",
        abstract: "vmv benchmarks, each beside its reference tool.",
        subcommands: [EventLogBench.self, QuoteBench.self, TPMQuoteBench.self, KernelMeasureBench.self, LogBench.self, QuoteLoadBench.self,
                      FleetBench.self]
    )
}
