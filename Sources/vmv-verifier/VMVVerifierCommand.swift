import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// The remote verifier: pure Swift, runs without libtss2 or libxen.
@main
struct VMVVerifierCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmv-verifier",
        abstract: "Verify TPM quotes and measurement logs from VMV hosts.",
        subcommands: [AttestCommand.self, EnrollCommand.self, ServeCommand.self, HostsCommand.self, StatusCommand.self, HistoryCommand.self,
                      RefsCommand.self, QuoteCommand.self, EventLogCommand.self, LogCommand.self],
        helpNames: [.long, .short]
    )

    /// ArgumentParser's own entry point, with one change to its exit statuses: a usage error
    /// exits 2 (not 64), and so does any error a command did not turn into an exit code, since
    /// 1 means "judged and rejected" and nothing else.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            let status = exitCode(for: error)
            let message = fullMessage(for: error)
            if status == .success {
                print(message)
                Glibc.exit(0)
            }
            if !message.isEmpty {
                var line = message + "\n"
                line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
            }
            Glibc.exit(2)
        }
    }
}
