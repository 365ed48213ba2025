import ArgumentParser
import ConfigFile
import Logging
import VMVServer

#if canImport(Glibc)
import Glibc
#endif

/// `vmv serve --config FILE`: the VMV domain's daemon.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Measure the platform and the guests into the TPM-backed log and serve quotes over mutual TLS.",
        discussion: """
            Every option is in the configuration file (TOML; docs/configuration.md, vmv.example.toml). \
            A configuration that cannot be used is reported with its file, line and reason, and vmv exits with status 2. \
            SIGTERM or SIGINT stops it gracefully.
            """)

    @Option(name: .long, help: "The configuration file (TOML).")
    var config: String

    @Flag(name: .long, help: "Check the configuration, print the effective settings and exit.")
    var check = false

    func run() async throws {
        let configuration: ServerConfiguration
        do {
            configuration = try ServerConfiguration.load(file: config)
        } catch {
            FileHandleStderr.write("vmv: \(error)\n")
            throw ExitCode(2)
        }
        if check {
            print(configuration.summary)
            return
        }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "vmv.serve")
        logger.logLevel = level
        do {
            try await VMVDaemon.run(configuration: configuration, logger: logger)
        } catch let error as ConfigurationError {
            logger.critical("cannot start: \(error)")
            throw ExitCode(2)
        } catch {
            logger.critical("vmv serve failed: \(error)")
            throw ExitCode(1)
        }
    }
}

enum FileHandleStderr {
    static func write(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
