import ArgumentParser

/// The remote verifier: pure Swift, runs without libtss2 or libxen.
@main
struct VMVVerifierCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmv-verifier",
        abstract: "Verify TPM quotes and measurement logs from VMV hosts.",
        subcommands: [EventLogCommand.self],
        helpNames: [.long, .short]
    )
}
