import ArgumentParser

/// The VMV domain's daemon and operator commands.
@main
struct VMVCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmv",
        abstract: "Virtual Machine Verifier: measure Xen guests into a TPM-backed log and serve quotes.",
        subcommands: [ServeCommand.self, CertsCommand.self, TPMCommand.self, IntrospectCommand.self, LogCommand.self, MeasureCommand.self],
        helpNames: [.long, .short]
    )
}
