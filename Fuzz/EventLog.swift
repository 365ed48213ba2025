import TPMWire

/// libFuzzer target for the TCG event-log parser and replay. Beyond "never traps", it checks
/// the parser's promises: the one-pass replay and the parsed log accept and reject the same
/// inputs with the same error and replay to the same values, and whatever parses serialises
/// back to the same bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEventLog(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let streamed = Result { () throws(WireError) in try TCGEventLog.replay(bytes: bytes) }
    switch Result(catching: { () throws(WireError) in try TCGEventLog(bytes: bytes) }) {
    case .success(let log):
        precondition(log.serialized() == bytes, "parse then serialise is not byte-exact")
        let replayed = Result { () throws(WireError) in try log.replay() }
        precondition(replayed == streamed, "replay() and replay(bytes:) disagree")
    case .failure(let error):
        precondition(streamed == .failure(error), "TCGEventLog(bytes:) and replay(bytes:) disagree: \(error)")
    }
    return 0
}
