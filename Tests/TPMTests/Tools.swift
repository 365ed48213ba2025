import Foundation
import TestSupport
import TPM
import TPMWire

extension TPM2Tools {
    /// tpm2-tools against a simulator; relative file arguments are in `directory` (none by default).
    init(_ simulator: TPMSimulator, directory: URL = FileManager.default.temporaryDirectory) {
        self.init(tcti: "\(simulator.tcti)", directory: directory)
    }

    /// `tpm2_pcrread SPEC`, parsed: its YAML lists `bank:` then `  N : 0xHEX` lines.
    func pcrRead(_ spec: String) throws -> PCRValues {
        let text = try run("tpm2_pcrread", [spec])
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
