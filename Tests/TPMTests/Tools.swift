import Foundation
import TPM
import TPMWire

/// tpm2-tools, run against the same swtpm as the code under test: the independent peer.
enum Tools {
    struct Failure: Error, CustomStringConvertible {
        let command: String
        let status: Int32
        let output: String
        var description: String { "\(command) exited \(status): \(output)" }
    }

    /// Runs `tool` (from tpm2-tools or elsewhere on PATH) and returns its stdout; throws with
    /// its stderr when it fails.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String], tcti: TCTIConfiguration? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        var environment = ProcessInfo.processInfo.environment
        if let tcti { environment["TPM2TOOLS_TCTI"] = "\(tcti)" }
        environment["TSS2_LOG"] = "all+NONE"
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: stdout, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw Failure(command: ([tool] + arguments).joined(separator: " "), status: process.terminationStatus,
                          output: String(decoding: stderr, as: UTF8.self) + text)
        }
        return text
    }

    /// `tpm2_pcrread SPEC`, parsed: its YAML lists `bank:` then `  N : 0xHEX` lines.
    static func pcrRead(_ spec: String, tcti: TCTIConfiguration) throws -> PCRValues {
        let text = try run("tpm2_pcrread", [spec], tcti: tcti)
        var values = PCRValues()
        var bank: TPMAlgorithm?
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasSuffix(":"), let hash = TPMAlgorithm(name: String(trimmed.dropLast())) {
                bank = hash
            } else if let bank, let colon = trimmed.firstIndex(of: ":"),
                      let pcr = Int(trimmed[..<colon].trimmingCharacters(in: .whitespaces)) {
                let hex = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                values[bank, pcr] = try Hex.decode(hex)
            }
        }
        return values
    }
}
