import ArgumentParser
import Foundation
import VMV

/// Where a VMV keeps its state (the measurement log, its lock) and its configuration: the
/// options of the `vmv log …` commands beside `TPMOptions` (the TPM, as for `vmv tpm …`).
struct StateOptions: ParsableArguments {
    @Option(name: .customLong("state"),
            help: ArgumentHelp("The VMV state directory: the measurement log and its lock. Default: $VMV_STATE, else .vmv/state.",
                               valueName: "dir"))
    var stateOption: String?

    @Option(name: .customLong("config"),
            help: ArgumentHelp("The VMV configuration file (`key = value`). Default: <state>/vmv.conf if it exists, else the built-in defaults.",
                               valueName: "file"))
    var configOption: String?

    var stateDirectory: String {
        stateOption ?? ProcessInfo.processInfo.environment["VMV_STATE"].flatMap { $0.isEmpty ? nil : $0 } ?? ".vmv/state"
    }

    /// The configuration file in use, if any.
    var configurationFile: String? {
        if let configOption { return configOption }
        let implicit = stateDirectory + "/vmv.conf"
        return FileManager.default.fileExists(atPath: implicit) ? implicit : nil
    }

    func configuration() throws -> VMVConfiguration {
        guard let path = configurationFile else { return VMVConfiguration() }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationErrorLine(message: "\(path): cannot read the configuration file")
        }
        do {
            return try VMVConfiguration(parsing: String(decoding: data, as: UTF8.self), source: path)
        } catch {
            throw ValidationErrorLine(message: error.description)
        }
    }
}
