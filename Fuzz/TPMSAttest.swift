import TPMWire

/// libFuzzer target for TPMS_ATTEST (every attestation type): never traps, and whatever
/// parses serialises back to the same bytes (the signature covers them).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTPMSAttest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let attest = try? TPMSAttest(wireBytes: bytes) {
        precondition(attest.wireBytes == bytes, "TPMS_ATTEST: parse then serialise is not byte-exact")
    }
    return 0
}
