import ArgumentParser
import VMVServer

/// `vmv certs …`: the mutual-TLS PKI of a VMV host and its verifiers.
struct CertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Make the certificates for the VMV's mutual TLS (see certs/README.md for a production PKI).",
        subcommands: [CertsInitCommand.self])
}

struct CertsInitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Make a CA, a server certificate and a client certificate (ECDSA P-256).",
        discussion: """
            Writes ca.pem, ca.key, server.pem, server.key, client.pem and client.key to DIR. Keys are \
            written with mode 0600 and never printed. The server certificate names the host by the --san \
            values (IP addresses become IP SANs, anything else DNS names; default: localhost and 127.0.0.1); \
            the client certificate has the clientAuth extended key usage.
            """)

    @Option(name: .long, help: "The directory to write to (created if missing).")
    var out: String

    @Option(name: .customLong("san"), help: "A DNS name or IP address of the server (repeatable).")
    var sans: [String] = []

    @Option(name: .long, help: "Days the certificates are valid.")
    var days: Int = 825

    @Option(name: .customLong("client-name"), help: "The client certificate's common name.")
    var clientName: String = "vmv verifier"

    @Flag(name: .long, help: "Replace certificates and keys already in DIR.")
    var force = false

    func run() async throws {
        do {
            let written = try PKIFiles.initialise(directory: out, sans: sans.isEmpty ? ["localhost", "127.0.0.1"] : sans,
                                                  days: days, clientName: clientName, overwrite: force)
            for path in written { print(path) }
        } catch let error as PKIError {
            throw ValidationErrorLine(message: "vmv certs init: \(error)")
        }
    }
}
