import Crypto
import Foundation
import Testing
import TestSupport
import TPMWire
import Verifier
import VMV
import VMVServer

/// Quote answers carry the log from the real store: exactly the records the quoted PCR values
/// account for, while the engine keeps measuring; the boot measurements come first.
@Suite struct QuoteLogTests {
    @Test func answersCarryTheRecordsTheirQuoteCovers() async throws {
        try await TestServer.with({
            $0.batchWindowMilliseconds = 20
            $0.ratePerSecond = 1000
            $0.rateBurst = 1000
        }) { server in
        let client = try server.verifierClient(connections: 16)
        let tlsKeyHash = try server.expectedTLSKeyHash()

        // The first answer: the whole epoch, starting with the VMV's own measurements.
        let nonce = randomNonce()
        let (first, answer) = try await client.quote(server.url, nonce: nonce)
        let response = try #require(answer, "\(first.status) \(first.text)")
        #expect(try verify(response, nonce: nonce, tlsKeyHash: tlsKeyHash) == .valid)
        let log = try #require(response.log)
        let status = await server.engine.status()
        #expect(log.epoch == status.epoch)
        #expect(log.since == 0)
        #expect(log.nextSeq == status.records)
        let verified = try replay(log, response)
        #expect(verified.entries.map(\.record.kind).prefix(3) == [.epochStart, .vmvBinary, .vmvConfig])
        #expect(verified.entries.contains { $0.record.kind == .platform && $0.record.subject == "vmv-domain.kernel" })
        #expect(server.runtime.bootRecords.map(\.seq) == Array(1..<UInt64(1 + server.runtime.bootRecords.count)))

        // Measurements while quotes are answered: every answer's records replay to its own
        // quoted PCR values, whatever the engine extended meanwhile.
        let domain = Measurement.Domain(uuid: Array(SHA256.hash(data: Array("guest".utf8)).prefix(16)), id: 7, name: "guest")
        let engine = server.engine
        let measuring = Task {
            for i in 0..<40 {
                _ = try await engine.measure(.memoryRegion(domain: domain, subject: "kernel.text", virtualStart: 0xffff_ffff_8100_0000,
                                                           pageSize: 4096, pageCount: 16,
                                                           merkleRoot: Array(SHA256.hash(data: Array("root \(i)".utf8)))))
            }
        }
        var seen = Set<UInt64>()
        for _ in 0..<4 {
            try await withThrowingTaskGroup(of: (ServiceAPI.QuoteResponse, [UInt8]).self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let nonce = randomNonce()
                        let (result, answer) = try await client.quote(server.url, nonce: nonce)
                        guard let answer else { throw HarnessError("quote: \(result.status) \(result.text)") }
                        return (answer, nonce)
                    }
                }
                for try await (answer, nonce) in group {
                    #expect(try verify(answer, nonce: nonce, tlsKeyHash: tlsKeyHash) == .valid)
                    let served = try #require(answer.log)
                    _ = try replay(served, answer)
                    seen.insert(served.nextSeq)
                }
            }
        }
        try await measuring.value
        #expect(seen.count > 1, "the log did not grow while quotes were answered")

        // Incremental: from the verifier's position, only the records after it.
        let after = await server.engine.status().records
        let cursor = ServiceAPI.LogCursor(epoch: log.epoch, since: log.nextSeq)
        let nonce2 = randomNonce()
        let incremental = try await client.call(server.url + "/v1/quote", method: .POST,
                                                json: ServiceAPI.QuoteRequest(nonce: Hex.encode(nonce2), log: cursor))
        let part = try #require(try incremental.decode(ServiceAPI.QuoteResponse.self).log)
        #expect(part.since == log.nextSeq)
        #expect(part.nextSeq == after)
        let records = TCGEventLog.parsePrefix(records: try bytes(part.records), header: try header(part))
        #expect(records.events.count == Int(after - log.nextSeq))
        #expect(records.events.compactMap { try? VMVEventRecord(wireBytes: $0.data).seq } == Array(log.nextSeq..<after))

        // Cursors no answer can serve.
        for (bad, code) in [(ServiceAPI.LogCursor(epoch: log.epoch, since: after + 5), "bad_log_cursor"),
                            (ServiceAPI.LogCursor(epoch: log.epoch + 1, since: 0), "bad_log_cursor")] {
            let refused = try await client.call(server.url + "/v1/quote", method: .POST,
                                                json: ServiceAPI.QuoteRequest(nonce: Hex.encode(randomNonce()), log: bad))
            #expect(refused.status == 400, "\(bad): \(refused.text)")
            #expect(refused.errorCode == code)
        }

        // A selection without the VMV PCR quotes nothing about the log.
        let (_, pcr0) = try await client.quote(server.url, nonce: randomNonce(), selection: "sha256:0")
        #expect(pcr0 != nil && pcr0?.log == nil)

        // GET /v1/log: the same object, as far as extended.
        let whole = try await client.call(server.url + "/v1/log").decode(ServiceAPI.Log.self)
        #expect(whole.epoch == log.epoch && whole.since == 0 && whole.nextSeq == after)
        #expect(whole.epochInfo.state == "open")
        let tail = try await client.call(server.url + "/v1/log?since=\(after - 1)").decode(ServiceAPI.Log.self)
        #expect(TCGEventLog.parsePrefix(records: try bytes(tail.records), header: try header(tail)).events.count == 1)
        let metrics = try await client.call(server.url + "/metrics").text
        #expect((metric(metrics, "vmv_measurements_total") ?? 0) >= Double(server.runtime.bootRecords.count))
        }
    }

    func bytes(_ b64: String) throws -> [UInt8] {
        guard let data = Data(base64Encoded: b64) else { throw HarnessError("not base64") }
        return Array(data)
    }

    func header(_ log: ServiceAPI.Log) throws -> TCGSpecIDEvent {
        try TCGEventLog(bytes: try bytes(log.header)).header
    }

    /// The whole-epoch log of an answer, verified, replayed to the PCR values the quote holds.
    @discardableResult
    func replay(_ log: ServiceAPI.Log, _ answer: ServiceAPI.QuoteResponse) throws -> VerifiedMeasurementLog {
        #expect(log.since == 0)
        let events = try TCGEventLog(bytes: try bytes(log.header) + bytes(log.records))
        #expect(events.events.count == Int(log.nextSeq))
        let verified = try MeasurementLogVerifier.verify(events, epoch: log.epoch, pcr: answer.host.pcr).get()
        let quoted = try PCRFile(bytes: try bytes(answer.quote.pcrs), format: .serialized)
        #expect(verified.check(against: quoted.values) == nil, "seq <\(log.nextSeq): the replay is not the quoted PCR value")
        return verified
    }
}
