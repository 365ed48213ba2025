import TPMWire
import Verifier

/// libFuzzer target for the kernel files `refs add-kernel` reads: the bzImage setup header and
/// the ELF section/note walk never trap; a version found is printable and a build id is hex.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKernelArtifacts(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let version = try? KernelArtifacts.bzImageVersion(bytes) {
        precondition(!version.isEmpty && version.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7f }, "a version that is not printable")
    }
    if let id = try? KernelArtifacts.elfBuildID(bytes) ?? nil {
        precondition((try? Hex.decode(id)) != nil, "a build id that is not hex")
    }
    return 0
}
