import TPMWire

/// libFuzzer target for TPMT_SIGNATURE: never traps, byte-exact round trip.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTPMTSignature(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let signature = try? TPMTSignature(wireBytes: bytes) {
        precondition(signature.wireBytes == bytes, "TPMT_SIGNATURE: parse then serialise is not byte-exact")
    }
    return 0
}
