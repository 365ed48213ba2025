import Foundation
import Testing
import TestSupport
import TPM
import TPMWire
import Verifier
@testable import VMV

#if canImport(Glibc)
import Glibc
#endif

/// Kills a real VMV process (`vmv log stress`: the real engine, store and a swtpm that outlives
/// it) with SIGKILL at random points while it appends, then looks at what it left:
///
/// - the newest epoch's log replays to the PCR, or the PCR stopped a few records short of it
///   (killed between fsync and extend), or — only after the test itself extended the PCR
///   behind the VMV's back — the log does not explain it;
/// - the next start does exactly what that state calls for: goes on, extends the missing
///   records once, or closes the epoch as broken and starts a new one;
/// - no record that was in a file after a kill is ever missing or changed later, and every
///   measurement the VMV acknowledged is in the log and extended.
///
/// 200 kills by default; `VMV_CRASH_ITERATIONS=1000` for the long run (scripts/test-crash.sh).
@Suite struct CrashFaultTests {
    /// What the files and the PCR say right after a kill.
    enum State: Equatable, CustomStringConvertible {
        case equal
        /// The PCR holds the value before the last `count` records.
        case behind(Int)
        /// The PCR is not explained by the open epoch (after an injected extend).
        case unexplained
        /// No epoch is open (killed between ending one and starting the next).
        case noOpenEpoch

        var description: String {
            switch self {
            case .equal: "equal"
            case .behind(let k): "behind by \(k)"
            case .unexplained: "unexplained"
            case .noOpenEpoch: "no open epoch"
            }
        }
    }

    struct Tally: CustomStringConvertible {
        var kills = 0
        var states: [String: Int] = [:]
        var recoveries: [String: Int] = [:]
        var killedBeforeRecoveryEnded = 0
        var extendsFinished = 0
        var injected = 0
        var brokenEpochs = 0
        var acked = 0
        var maxRecords: UInt64 = 0
        var description: String {
            "\(kills) kills; states after a kill \(states.sorted { $0.key < $1.key }); recoveries seen \(recoveries.sorted { $0.key < $1.key }); "
                + "killed before recovery ended \(killedBeforeRecoveryEnded); extends finished by recovery \(extendsFinished); "
                + "foreign extends injected \(injected); epochs closed as broken \(brokenEpochs); measurements acknowledged \(acked)"
        }
    }

    /// The `vmv` built beside this test bundle.
    static func vmvExecutable() throws -> String {
        let me = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var directory = (me as NSString).deletingLastPathComponent
        while !directory.isEmpty, directory != "/" {
            let candidate = directory + "/vmv"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = (directory as NSString).deletingLastPathComponent
        }
        throw HarnessError("no vmv executable beside \(me): swift build --build-tests builds it")
    }

    static func milliseconds(_ d: Duration) -> Double { Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) * 1e-15 }

    @Test func killedAtRandomPointsTheLogReplaysOrTheEpochIsVisiblyBroken() async throws {
        let iterations = ProcessInfo.processInfo.environment["VMV_CRASH_ITERATIONS"].flatMap(Int.init) ?? 200
        let vmv = try Self.vmvExecutable()
        let simulator = try TPMSimulator.ephemeral()
        defer { simulator.stop() }
        let state = try StateDirectory()
        // Keep every epoch (the durability check covers them all); small segments, so rotation happens.
        try "retain_epochs = 1000000\nsegment_size = 65536\nmax_batch = 16\n".write(toFile: state.path + "/vmv.conf", atomically: true, encoding: .utf8)
        let reader = LogReader(stateDirectory: state.path)
        var durable: [UInt32: [[UInt8]]] = [:]   // epoch → every record's bytes seen so far, by seq
        var expected: State? = nil
        var pendingInjection = false
        var tally = Tally()
        var rng = SystemRandomNumberGenerator()
        var recoveryMilliseconds = 300   // how long the last start took to recover, measured

        for i in 0..<iterations {
            // Now and then, something else extends the VMV PCR while the VMV is down.
            if i % 10 == 9, expected != nil {
                let tpm = try await TPM.open(simulator.tcti)
                try await tpm.extend(pcr: 15, hashing: Array("foreign extend \(i)".utf8))
                await tpm.close()
                pendingInjection = true
                tally.injected += 1
                if expected != .noOpenEpoch { expected = .unexplained }
            }

            let out = state.path + "/run.out", err = state.path + "/run.err"
            let spawned = ContinuousClock.now
            let child = try Child.spawn(vmv, ["log", "stress", "--state", state.path, "--tcti", "\(simulator.tcti)",
                                              "--concurrency", String(Int.random(in: 1...8, using: &rng)),
                                              "--rate", String(Int.random(in: 200...3000, using: &rng))],
                                        stdout: out, stderr: err, environment: ["TSS2_LOG": "all+NONE"])
            // One kill in four lands anywhere in the start (recovery included); the others in the
            // stream of measurements, a random time after recovery said it was done.
            if Int.random(in: 0..<4, using: &rng) == 0 {
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...max(1, recoveryMilliseconds), using: &rng)))
            } else {
                while ContinuousClock.now - spawned < .seconds(60), !child.hasExited(),
                      !(FileManager.default.contents(atPath: out).map { $0.first == UInt8(ascii: "{") && $0.contains(0x0a) } ?? false) {
                    try await Task.sleep(for: .milliseconds(2))
                }
                recoveryMilliseconds = Int(Self.milliseconds(ContinuousClock.now - spawned))
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...400, using: &rng)))
            }
            child.kill()
            let ended = child.wait()
            tally.kills += 1
            #expect(ended.signal == SIGKILL, "iteration \(i): vmv ended by itself (status \(ended.status), signal \(ended.signal ?? 0)): \(String(decoding: FileManager.default.contents(atPath: err) ?? Data(), as: UTF8.self).suffix(2000))")

            // What the killed run said: its recovery, and the measurements it acknowledged.
            let lines = String(decoding: FileManager.default.contents(atPath: out) ?? Data(), as: UTF8.self).split(separator: "\n")
            var acked: [(UInt32, UInt64)] = []
            var recovered: [String: Any]?
            for line in lines {
                if line.hasPrefix("{") {
                    recovered = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                } else if line.hasPrefix("acked ") {
                    let parts = line.split(separator: " ")
                    if parts.count == 3, let e = UInt32(parts[1]), let s = UInt64(parts[2]) { acked.append((e, s)) }
                }
            }
            tally.acked += acked.count
            if let recovered {
                let outcome = recovered["outcome"] as? String ?? "?"
                let ended = recovered["ended"] as? [String: Any]
                tally.recoveries[outcome, default: 0] += 1
                // The start did what the state left by the previous kill called for.
                switch expected {
                case .equal?:
                    #expect(outcome == "continued", "iteration \(i): expected to go on, recovery said \(recovered)")
                case .behind(let k)?:
                    #expect(outcome == "finishedExtends" && recovered["finished"] as? Int == k, "iteration \(i): expected \(k) extends finished, recovery said \(recovered)")
                    tally.extendsFinished += k
                case .unexplained?:
                    #expect(outcome == "newEpoch" && ended?["state"] as? String == "broken", "iteration \(i): expected a broken epoch, recovery said \(recovered)")
                case .noOpenEpoch?:
                    #expect(outcome == "newEpoch" && ended == nil, "iteration \(i): expected a new epoch, recovery said \(recovered)")
                case nil:
                    #expect(outcome == "newEpoch", "iteration \(i): first start, recovery said \(recovered)")
                }
                if outcome == "newEpoch", ended?["state"] as? String == "broken" { pendingInjection = false }
            } else {
                tally.killedBeforeRecoveryEnded += 1
            }

            // What the files and the PCR say now.
            let epochs = try reader.epochs()
            let pcr = try await Fixture.readPCR(simulator.tcti)
            let now: State
            if let latest = epochs.last, latest.state == .open {
                let log = try reader.read(epoch: latest.epoch, tail: 64)
                tally.maxRecords = max(tally.maxRecords, log.count)
                if log.replayed == pcr {
                    now = .equal
                } else if let j = log.tail.firstIndex(where: { $0.before == pcr }) {
                    now = .behind(log.tail.count - j)
                } else {
                    now = .unexplained
                }
                // Acknowledged measurements of this epoch are in the log and extended.
                let extendedCount: UInt64 = {
                    if case .behind(let k) = now { return log.count - UInt64(k) }
                    return log.count
                }()
                for (e, s) in acked where e == latest.epoch {
                    #expect(s < extendedCount, "iteration \(i): acknowledged seq \(s) is not extended (\(now), \(log.count) records)")
                }
            } else {
                now = epochs.isEmpty ? .equal : .noOpenEpoch
            }
            if now == .unexplained || now == .noOpenEpoch {
                // Only a foreign extend the VMV has not yet dealt with may leave this.
                #expect(pendingInjection, "iteration \(i): the log does not explain the PCR, and nothing else extended it: \(now)")
            }
            if case .equal = now { pendingInjection = false }
            if case .behind = now { pendingInjection = false }
            tally.states[now.description.components(separatedBy: " by ").first ?? "", default: 0] += 1
            expected = epochs.isEmpty ? nil : now

            // No record that was in a file is ever lost or changed; acknowledged ones are there.
            for m in epochs where m.state == .open || durable[m.epoch] == nil || m.epoch == epochs.last?.epoch || m.epoch + 1 == epochs.last?.epoch {
                let log = try reader.read(epoch: m.epoch, tcg: true)
                let events = try TCGEventLog(bytes: log.tcgBytes).events.map { $0.serialized() }
                let before = durable[m.epoch] ?? []
                #expect(events.count >= before.count, "iteration \(i): epoch \(m.epoch) lost records: \(before.count) → \(events.count)")
                #expect(Array(events.prefix(before.count)) == before, "iteration \(i): epoch \(m.epoch) changed a durable record")
                durable[m.epoch] = events
            }
            for (e, s) in acked {
                #expect(UInt64(durable[e]?.count ?? 0) > s, "iteration \(i): acknowledged epoch \(e) seq \(s) is not in the log")
            }
        }

        // A last, clean start: recovery completes, and then log and PCR agree exactly.
        let final = try Tools.run(vmv, ["log", "recover", "--state", state.path, "--tcti", "\(simulator.tcti)"],
                                  environment: ["TSS2_LOG": "all+NONE"])
        #expect(final.status == 0, "\(final.stderr)")
        let epochs = try reader.epochs()
        let latest = try #require(epochs.last)
        #expect(latest.state == .open)
        #expect(try reader.read(epoch: latest.epoch).replayed == (try await Fixture.readPCR(simulator.tcti)))
        let verify = try Tools.run(vmv, ["log", "verify", "--state", state.path, "--tcti", "\(simulator.tcti)"], environment: ["TSS2_LOG": "all+NONE"])
        #expect(verify.status == 0 && verify.stdout.hasPrefix("log and PCR 15 agree in sha1, sha256"), "\(verify.stdout)\(verify.stderr)")

        // Every epoch verifies on the verifier side; every ended one says why it ended.
        tally.brokenEpochs = epochs.filter { $0.state == .broken }.count
        for m in epochs {
            let log = try TCGEventLog(bytes: try reader.read(epoch: m.epoch, tcg: true).tcgBytes)
            if case .failure(let rejection) = MeasurementLogVerifier.verify(log, epoch: m.epoch, pcr: 15) {
                Issue.record("epoch \(m.epoch) does not verify: \(rejection)")
            }
            if m.state == .broken { #expect(m.endReason?.contains("PCR 15 does not match") == true, "\(m.endReason ?? "")") }
        }
        print("crash test: \(tally)")
        #expect(tally.kills == iterations)
        #expect(tally.brokenEpochs > 0 && tally.brokenEpochs <= tally.injected, "foreign extends closed epochs as broken: \(tally)")
        #expect(tally.acked > 0 && tally.killedBeforeRecoveryEnded > 0, "kills landed both before and after recovery: \(tally)")
        // Most kills land in the stream of measurements: a start too slow to recover before
        // its kill would leave the test checking the same state over and over.
        #expect(tally.killedBeforeRecoveryEnded < iterations / 2, "most kills came before recovery ended: \(tally)")
    }
}
