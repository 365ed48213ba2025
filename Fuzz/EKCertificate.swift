import TPMWire
import Verifier

/// libFuzzer target for what the verifier does with EK certificate bytes from a TPM's NV:
/// padding removal and X.509 parsing never trap, trimming only ever removes trailing 00/FF
/// padding, and is idempotent.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEKCertificate(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let trimmed = NVCertificate.trimmingPadding(bytes)
    precondition(bytes.starts(with: trimmed), "trimming changed more than the tail")
    precondition(bytes[trimmed.count...].allSatisfy { $0 == 0 } || bytes[trimmed.count...].allSatisfy { $0 == 0xFF },
                 "trimming removed something that is not padding")
    precondition(NVCertificate.trimmingPadding(trimmed) == trimmed, "trimming is not idempotent")
    _ = try? EKCertificateValidator.parse(bytes)
    return 0
}
