import ArgumentParser

/// `vmv introspect …`: what the VMV sees of its guests, for operators.
struct IntrospectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "introspect",
        abstract: "Look at guests the way the VMV measures them (read-only).",
        subcommands: [IntrospectDomainsCommand.self, IntrospectVCPUCommand.self, IntrospectFrameCommand.self,
                      IntrospectKernel.self, IntrospectTranslate.self, IntrospectDiff.self, IntrospectXSMCommand.self]
    )
}
