import Foundation
import Testing
import TestSupport
import TPMWire

/// The event-log rules of `vmv-verifier quote check --eventlog`, with the real quotes: the
/// fixture extended PCR 15 once with sha1 = ab…ab and sha256 = cd…cd, so a log with that one
/// event explains the quote.
@Suite struct QuoteEventLogTests {
    static let sha1 = [UInt8](repeating: 0xab, count: 20)
    static let sha256 = [UInt8](repeating: 0xcd, count: 32)

    static func log(_ events: [TCGEvent], banks: [TPMAlgorithm] = [.sha1, .sha256]) throws -> String {
        let header = try #require(TCGSpecIDEvent(banks: banks))
        return try QuoteCheckInteropTests.write(TCGEventLog(header: header, events: events).serialized(), "log.bin")
    }

    static func event(_ pcr: Int, sha1: [UInt8] = sha1, sha256: [UInt8] = sha256, banks: [TPMAlgorithm] = [.sha1, .sha256]) -> TCGEvent {
        let digests = banks.map { TCGDigest(algorithm: $0, bytes: $0 == .sha1 ? sha1 : sha256) }
        return TCGEvent(pcrIndex: pcr, eventType: TCGEventType(0x0d), digests: digests, data: Array("vmv test".utf8))
    }

    static func rules(_ kind: AKKind, _ log: String) throws -> [String] {
        try QuoteCheckInteropTests.failedRules(try QuoteEvidenceFixture.evidence(kind), eventLog: log)
    }

    @Test(arguments: AKKind.allCases)
    func logThatExplainsTheQuoteIsAccepted(_ kind: AKKind) throws {
        #expect(try Self.rules(kind, try Self.log([Self.event(15)])) == [])
    }

    @Test func eachEventLogRuleFailsOnItsOwn() throws {
        let k = AKKind.eccP256ECDSA
        // an event for PCR 16, which the quote does not cover
        #expect(try Self.rules(k, try Self.log([Self.event(15), Self.event(16)])) == ["eventLogUnquoted"])
        // no event for PCR 15, which is not at its initial value
        #expect(try Self.rules(k, try Self.log([])) == ["eventLogCoverage"])
        // an event whose digest is not the one extended
        let wrong = [UInt8](repeating: 0xce, count: 32)
        #expect(try Self.rules(k, try Self.log([Self.event(15, sha256: wrong)])) == ["eventLogReplay"])
        // the log replays only sha256: the quoted sha1 PCR 15 goes unexplained
        #expect(try Self.rules(k, try Self.log([Self.event(15, banks: [.sha256])], banks: [.sha256])) == ["eventLogCoverage"])
        // PCR 0 quoted at its initial value needs no event; one extending it must match the quote
        #expect(try Self.rules(k, try Self.log([Self.event(15), Self.event(0)])) == ["eventLogReplay"])
    }

    @Test func malformedLogIsAUsageError() throws {
        let e = try QuoteEvidenceFixture.evidence(.eccP256ECDSA)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: try Self.log([Self.event(15)])))
        bytes.removeLast(3)
        let path = try QuoteCheckInteropTests.write(Array(bytes), "short.bin")
        let r = try QuoteCheckInteropTests.check(e, eventLog: path)
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("vmv-verifier: \(path): not a valid event log:"))
        #expect(r.stdout.isEmpty)
    }
}
