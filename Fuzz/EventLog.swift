import TPMWire

/// libFuzzer target for the TCG event-log parser and replay. Beyond "never traps", it checks
/// the parser's promises: the one-pass replay accepts exactly what parsing then replaying
/// accepts, with the same values (or the same error when the parse succeeds; when it fails,
/// the one pass may stop earlier, at a replay rule broken before the framing error), and
/// whatever parses serialises back to the same bytes.
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
        guard case .failure(let first) = streamed else { preconditionFailure("replay(bytes:) accepts what TCGEventLog(bytes:) rejects: \(error)") }
        precondition(first == error || first.reason.hasPrefix("event ") && !first.reason.contains("TCG_PCR_EVENT2 at byte"),
                     "replay(bytes:) fails differently: \(first) / \(error)")
    }
    return 0
}
