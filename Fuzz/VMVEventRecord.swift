import TPMWire

/// libFuzzer target for the VMV event record parser. Beyond "never traps", it checks the
/// format's promise of one encoding per record: whatever parses serialises back to the same
/// bytes, passes `validated()`, and its JSON form encodes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVMVEventRecord(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let record = try? VMVEventRecord(wireBytes: bytes) else { return 0 }
    precondition(record.wireBytes == bytes, "parse then serialise is not byte-exact")
    precondition((try? record.validated()) == bytes, "a parsed record does not validate")
    return 0
}
