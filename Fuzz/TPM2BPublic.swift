import TPMWire

/// libFuzzer target for TPM2B_PUBLIC / TPMT_PUBLIC: never traps, byte-exact round trip, and
/// the Name is nameAlg ‖ H(the TPMT_PUBLIC bytes as received).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTPM2BPublic(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let pub = try? TPM2BPublic(wireBytes: bytes) {
        precondition(pub.wireBytes == bytes, "TPM2B_PUBLIC: parse then serialise is not byte-exact")
        let inner = Array(bytes.dropFirst(2))
        if let name = pub.publicArea.name, let digest = pub.publicArea.nameAlg.hash(inner) {
            precondition(Array(name.dropFirst(2)) == digest, "Name is not H(TPMT_PUBLIC)")
        }
    }
    return 0
}
