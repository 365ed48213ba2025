import TPMWire

/// libFuzzer target for the launch event parser (the text dom0's builder extends into the launch
/// PCR, which the VMV copies into its log and the verifier replays). Beyond "never traps": what
/// parses keeps exactly the input bytes (they are what the TPM hashed), parses again to the same
/// event, and has the fields its kind requires.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLaunchEvent(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let event = try? LaunchEvent(parsing: bytes) else { return 0 }
    precondition(event.text == bytes, "the event does not keep the bytes the TPM hashed")
    precondition((try? LaunchEvent(parsing: event.text)) == event, "parsing is not stable")
    if event.kind != .handover && event.kind != .xsmPolicyLoadFailed {
        precondition(event.sha256?.count == 32 && event.size != nil && event.file != nil, "a file kind without its fields")
    }
    return 0
}
