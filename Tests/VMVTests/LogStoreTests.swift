import Foundation
import Testing
import TestSupport
import TPMWire
@testable import VMV

/// The log store on its own (no TPM): durability layout, torn tails, damage, rotation,
/// retention, the writer lock and readers beside a writer.
@Suite struct LogStoreTests {
    @Test func appendsAndReopensWithTheSameLogAndReplay() throws {
        let state = try StateDirectory()
        var store: LogStore? = try LogStore.open(state.layout)
        try Fixture.startEpoch(store!)
        for batch in [1, 5, 1, 20] { try Fixture.append(store!, batch) }
        let written = try #require(store?.openEpoch)
        #expect(written.count == 27)
        store?.close()
        store = nil

        let reopened = try LogStore.open(state.layout)
        let epoch = try #require(reopened.openEpoch)
        #expect(epoch.count == 27)
        #expect(epoch.chain == written.chain)
        #expect(reopened.repairs.isEmpty)
        // The files are one TCG log that replays to the same PCR value, independently computed.
        let log = try LogReader(stateDirectory: state.path).read(epoch: 0, tcg: true)
        #expect(log.count == 27)
        #expect(try Fixture.tcgReplay(log.tcgBytes) == epoch.chain.values)
        let parsed = try TCGEventLog(bytes: log.tcgBytes)
        #expect(parsed.events.count == 27)
        #expect(parsed.events.allSatisfy { $0.pcrIndex == 15 && $0.eventType == .eventTag })
        #expect(try parsed.events.enumerated().allSatisfy { try VMVEventRecord(verifying: $1).seq == UInt64($0) })
        reopened.close()
    }

    @Test func cutsATornTailAndKeepsEveryCompleteRecord() throws {
        let state = try StateDirectory()
        var store: LogStore? = try LogStore.open(state.layout)
        try Fixture.startEpoch(store!)
        try Fixture.append(store!, 5)
        // A crash in the middle of the next write: part of a record reached the file.
        let next = try Fixture.records(store!, 1).events[0].serialized()
        store?.close()
        store = nil
        let segment = state.layout.epochDirectory(0) + "/0000.tcg"
        let before = try #require(FileManager.default.contents(atPath: segment))
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data(next.prefix(next.count / 2)))
        try handle.close()

        let reopened = try LogStore.open(state.layout)
        #expect(reopened.openEpoch?.count == 5)
        #expect(reopened.repairs.count == 1)
        #expect(reopened.repairs.first?.contains("cut a torn tail of \(next.count / 2) bytes") == true, "\(reopened.repairs)")
        #expect(FileManager.default.contents(atPath: segment) == before)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: state.layout.epochDirectory(0))).contains { $0.contains("torn") })
        // Appending goes on right after the last good record.
        try Fixture.append(reopened, 2)
        #expect(reopened.openEpoch?.count == 7)
        reopened.close()
    }

    @Test func aCompleteButBadTailIsSavedAsideBeforeItIsCut() throws {
        let state = try StateDirectory()
        var store: LogStore? = try LogStore.open(state.layout)
        try Fixture.startEpoch(store!)
        try Fixture.append(store!, 3)
        var bad = try Fixture.records(store!, 1).events[0]
        store?.close()
        store = nil
        bad.data[bad.data.count - 1] ^= 0xFF   // the digests no longer match the data
        let segment = state.layout.epochDirectory(0) + "/0000.tcg"
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data(bad.serialized()))
        try handle.close()

        let reopened = try LogStore.open(state.layout)
        #expect(reopened.openEpoch?.count == 3)
        let aside = try FileManager.default.contentsOfDirectory(atPath: state.layout.epochDirectory(0)).filter { $0.contains(".torn-") }
        #expect(aside.count == 1)
        #expect(FileManager.default.contents(atPath: state.layout.epochDirectory(0) + "/" + (aside.first ?? "")) == Data(bad.serialized()))
        #expect(reopened.repairs.first?.contains("is not the hash of the event data") == true, "\(reopened.repairs)")
        reopened.close()
    }

    @Test func damageBeforeTheLastSegmentIsReportedAndNotCut() throws {
        let state = try StateDirectory()
        var store: LogStore? = try LogStore.open(state.layout, configuration: .init(segmentSize: 600))
        try Fixture.startEpoch(store!)
        for _ in 0..<12 { try Fixture.append(store!, 1) }
        store?.close()
        store = nil
        let segments = try state.layout.segments(0)
        #expect(segments.count >= 3)
        let victim = segments[1].path
        var bytes = try #require(FileManager.default.contents(atPath: victim))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: victim))

        let reopened = try LogStore.open(state.layout)
        let damage = try #require(reopened.openEpoch?.damage)
        #expect(damage.hasPrefix(victim))
        #expect(FileManager.default.contents(atPath: victim) == bytes, "damage is never cut")
        #expect(throws: MeasurementLogError.self) { try Fixture.append(reopened, 1) }
        reopened.close()
    }

    @Test func rotatesSegmentsWhoseConcatenationIsTheLog() throws {
        let state = try StateDirectory()
        let store = try LogStore.open(state.layout, configuration: .init(segmentSize: 700))
        try Fixture.startEpoch(store)
        for batch in [1, 2, 3, 4, 5, 6, 7] { try Fixture.append(store, batch) }
        let manifest = try EpochManifest.load(state.layout, 0)
        let files = try state.layout.segments(0)
        #expect(files.count > 3)
        #expect(manifest.segments.map(\.file) == files.map { ($0.path as NSString).lastPathComponent })
        // A segment starts at a batch boundary, after the previous one passed the size.
        #expect(manifest.segments.map(\.firstSeq) == [0, 3, 6, 10, 15, 21].prefix(manifest.segments.count).map { $0 })
        var concatenated: [UInt8] = []
        for f in files { concatenated += Array(try #require(FileManager.default.contents(atPath: f.path))) }
        let log = try LogReader(stateDirectory: state.path).read(epoch: 0, since: 10, tcg: true)
        #expect(log.tcgBytes == concatenated)
        #expect(log.count == 28)
        #expect(log.records.map(\.seq) == Array(10..<28))
        #expect(try TCGEventLog(bytes: concatenated).events.count == 28)
        store.close()
    }

    @Test func aSegmentCreatedJustBeforeACrashIsAdoptedAndListed() throws {
        let state = try StateDirectory()
        var store: LogStore? = try LogStore.open(state.layout)
        try Fixture.startEpoch(store!)
        try Fixture.append(store!, 3)
        store?.close()
        store = nil
        // The crash came after the new segment was created and synced, before epoch.json said so.
        let next = state.layout.epochDirectory(0) + "/0001.tcg"
        #expect(FileManager.default.createFile(atPath: next, contents: nil))
        let reopened = try LogStore.open(state.layout)
        #expect(reopened.repairs == ["epoch 0: epoch.json now lists segments 0000.tcg, 0001.tcg"])
        #expect(try EpochManifest.load(state.layout, 0).segments.map(\.firstSeq) == [0, 3])
        try Fixture.append(reopened, 2)
        #expect(FileManager.default.contents(atPath: next)?.count ?? 0 > 0, "appending goes on in the adopted segment")
        #expect(try LogReader(stateDirectory: state.path).read(epoch: 0).count == 5)
        reopened.close()
    }

    @Test func retentionKeepsTheNewestEndedEpochsAndTheOpenOne() throws {
        let state = try StateDirectory()
        let store = try LogStore.open(state.layout, configuration: .init(retainEpochs: 2))
        for _ in 0..<6 {
            try Fixture.startEpoch(store)
            try Fixture.append(store, 2)
            try store.endEpoch(.broken, reason: "test")
        }
        try Fixture.startEpoch(store)
        #expect(try state.layout.epochNumbers() == [4, 5, 6])
        let reader = LogReader(stateDirectory: state.path)
        #expect(try reader.epochs().map(\.state) == [.broken, .broken, .open])
        #expect(try reader.read(epoch: 5).count == 2)
        #expect(throws: MeasurementLogError.self) { try reader.read(epoch: 1) }
        store.close()
    }

    @Test func aSecondWriterIsRefusedWithTheHoldersPid() throws {
        let state = try StateDirectory()
        let first = try LogStore.open(state.layout)
        let refused = #expect(throws: MeasurementLogError.self) { try LogStore.open(state.layout) }
        #expect(refused?.code == .locked)
        #expect(refused?.reason.contains("pid \(getpid()) is appending") == true, "\(String(describing: refused))")
        #expect(StateLock.holder(state.layout.lockPath) == getpid())
        first.close()
        #expect(StateLock.holder(state.layout.lockPath) == nil)
        let second = try LogStore.open(state.layout)
        second.close()
    }

    /// A reader beside a writer sees whole records only, never more than the writer
    /// committed, and a count that only grows.
    @Test func readersSeeOnlyCommittedRecordsWhileTheWriterAppends() async throws {
        let state = try StateDirectory()
        let store = try LogStore.open(state.layout, configuration: .init(segmentSize: 4096))
        try Fixture.startEpoch(store)
        store.publish(committed: 0)
        let committed = ManagedCommitted()
        let writer = Task.detached {
            var rng = SystemRandomNumberGenerator()
            while (store.openEpoch?.count ?? 0) < 1500 {
                try Fixture.append(store, Int.random(in: 1...40, using: &rng))
                let count = store.openEpoch?.count ?? 0
                committed.set(count)
                store.publish(committed: count)
            }
        }
        let reader = LogReader(stateDirectory: state.path)
        var last: UInt64 = 0
        var reads = 0
        while !writer.isCancelled {
            let ceiling = committed.get()
            let log = try reader.read(epoch: 0, since: last)
            #expect(log.trailing == nil, "\(log.trailing ?? "")")
            #expect(log.count >= last)
            #expect(log.count <= committed.get() && log.count >= min(ceiling, last))
            #expect(log.records.map(\.seq) == Array(last..<log.count))
            #expect(log.writer == getpid())
            last = log.count
            reads += 1
            if last >= 1500 { break }
        }
        try await writer.value
        #expect(reads > 3)
        store.close()
        // Without a writer, a reader sees every complete record.
        #expect(try reader.read(epoch: 0).count == store.openEpoch?.count)
    }
}

final class ManagedCommitted: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64 = 0
    func set(_ v: UInt64) { lock.lock(); value = v; lock.unlock() }
    func get() -> UInt64 { lock.lock(); defer { lock.unlock() }; return value }
}
