import Crypto
import Foundation
import Introspection
import Testing
import TestSupport
import TPM
import TPMWire
@testable import VMV

/// The XSM records the VMV adds to its boot measurements: FLASK's mode, its label, and the launch
/// events dom0's builder extended into PCR 13 (docs/domp.md, "Attesting the policy").
@Suite struct XSMMeasurementsTests {
    static let policy = Array("a FLASK policy".utf8)
    static var launch: LaunchLog {
        get throws {
            let hex = Hex.encode(Array(SHA256.hash(data: policy)))
            return LaunchLog(pcr: 13, events: try [
                "vmv-launch/1 xsm-policy sha256=\(hex) size=\(policy.count) file=xenpolicy",
                "vmv-launch/1 domp-kernel sha256=\(String(repeating: "11", count: 32)) size=8247232 file=vmlinuz",
                "vmv-launch/1 handover tpm=vmv",
            ].map { try LaunchEvent(parsing: $0) })
        }
    }

    @Test func recordsTheModeTheLabelAndEveryLaunchEvent() throws {
        let launch = try Self.launch
        let m = XSMMeasurements.collect(status: XSMStatus(mode: .enforcing, label: "system_u:system_r:vmv_t"), launch: launch)
        #expect(m.map(\.subject) == ["xsm", "launch.xsm-policy", "launch.domp-kernel", "launch.handover"])
        #expect(m.allSatisfy { $0.kind == .platform })
        let xsm = try #require(m.first)
        #expect(xsm.attributes.map(\.key) == ["xsm.label", "xsm.mode"])
        #expect(xsm.attributes.first { $0.key == "xsm.mode" }?.value == "enforcing")
        // the policy record's content is the policy file's SHA-256, as the event states it
        #expect(m[1].contentDigest == TCGDigest(algorithm: .sha256, bytes: Array(SHA256.hash(data: Self.policy))))
        // the text the TPM hashed, byte for byte, so a verifier can replay PCR 13 from the records
        for (record, event) in zip(m.dropFirst(), launch.events) {
            #expect(record.attributes.first { $0.key == LaunchEvent.recordAttribute }?.value == String(decoding: event.text, as: UTF8.self))
            #expect(record.attributes.first { $0.key == LaunchEvent.pcrAttribute }?.value == "13")
        }
        // an event without a file is its own content
        #expect(m[3].contentDigest == TCGDigest(algorithm: .sha256, bytes: Array(SHA256.hash(data: Array("vmv-launch/1 handover tpm=vmv".utf8)))))
        for measurement in m { try measurement.validate() }
    }

    @Test func permissiveAndNoFlaskAreRecordedAsSuch() throws {
        let permissive = XSMMeasurements.collect(status: XSMStatus(mode: .permissive, label: nil), launch: nil)
        #expect(permissive.count == 1)
        #expect(permissive[0].attributes.map(\.key) == ["xsm.mode"])
        #expect(permissive[0].attributes[0].value == "permissive")
        let none = XSMMeasurements.collect(status: XSMStatus(mode: .none, label: nil), launch: nil)
        #expect(none[0].attributes[0].value == "none")
        // the facts digest differs, so a reference naming the digest tells them apart too
        #expect(permissive[0].contentDigest != none[0].contentDigest)
    }

    /// Through the real engine on a swtpm: logged, extended, and read back by the log's reader
    /// as records whose launch text parses to the same event.
    @Test func theRecordsGoThroughTheEngineAndReadBack() async throws {
        let simulator = try TPMSimulator.ephemeral()
        defer { simulator.stop() }
        let state = try StateDirectory()
        let tpm = try await TPM.open(simulator.tcti)
        let engine = try await MeasurementEngine.open(stateDirectory: state.path, tpm: tpm)
        let launch = try Self.launch
        var records: [LogRecord] = []
        for m in XSMMeasurements.collect(status: XSMStatus(mode: .enforcing, label: "system_u:system_r:vmv_t"), launch: launch) {
            records.append(try await engine.measure(m))
        }
        await engine.close()
        await tpm.close()
        let read = try LogReader(stateDirectory: state.path).read(epoch: 0).records
        #expect(read.suffix(4).map(\.record) == records.map(\.record))
        #expect(read.count == 5)  // the epochStart, then these four
        let texts = read.compactMap { $0.record.attribute(LaunchEvent.recordAttribute) }
        #expect(try texts.map { try LaunchEvent(parsing: $0) } == launch.events)
        #expect(read.last { $0.record.subject == "xsm" }?.record.attribute("xsm.mode") == "enforcing")
    }
}
