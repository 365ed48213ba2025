import Crypto
import Foundation
import Logging
import Testing
import TestSupport
import TPM
import TPMWire
import Introspection
@testable import VMV

/// libxl's records of two builds, as Xen 4.17 (Debian 4.17.x, xl toolstack) wrote them in dom0
/// under QEMU (scripts/xen/run.sh): `/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json` of the
/// PV and the PVH guest (libxl stores the text with its terminating NUL), and `xenstore-ls -f
/// /vm/<uuid>` of the PV one (PVH guests get no `image/` nodes).
enum Xen417Capture {
    static let pvJSON = """
        {
            "c_info": {
                "type": "pv",
                "name": "guest-pv",
                "domid": 4294967295,
                "uuid": "22124578-62b3-4435-afda-60203492de87",
                "run_hotplug_scripts": "True"
            },
            "b_info": {
                "max_vcpus": 1,
                "avail_vcpus": [
                    0
                ],
                "max_memkb": 163840,
                "target_memkb": 163840,
                "video_memkb": 0,
                "sched_params": {
                    "sched": "credit2",
                    "weight": 256,
                    "cap": 0
                },
                "claim_mode": "True",
                "kernel": "/guest/vmlinuz",
                "cmdline": "console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pv",
                "ramdisk": "/guest/guest.cpio.gz",
                "type.pv": {

                },
                "arch_arm": {

                },
                "arch_x86": {
                    "msr_relaxed": "False"
                }
            },
            "on_reboot": "restart",
            "on_crash": "preserve",
            "on_soft_reset": "soft_reset"
        }

        """
    static let pvhJSON = """
        {
            "c_info": {
                "type": "pvh",
                "name": "guest-pvh",
                "domid": 4294967295,
                "uuid": "4ce9746d-5a9a-4310-ab27-74428b78bcca",
                "run_hotplug_scripts": "True"
            },
            "b_info": {
                "max_vcpus": 1,
                "avail_vcpus": [
                    0
                ],
                "tsc_mode": "native",
                "max_memkb": 163840,
                "target_memkb": 163840,
                "video_memkb": 0,
                "sched_params": {

                },
                "claim_mode": "True",
                "kernel": "/guest/vmlinuz",
                "cmdline": "console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pvh",
                "ramdisk": "/guest/guest.cpio.gz",
                "type.pvh": {

                },
                "arch_arm": {

                },
                "arch_x86": {
                    "msr_relaxed": "False"
                }
            },
            "on_reboot": "restart",
            "on_crash": "preserve",
            "on_soft_reset": "soft_reset"
        }

        """
    static let pvVM = """
        /vm/22124578-62b3-4435-afda-60203492de87 = ""
        /vm/22124578-62b3-4435-afda-60203492de87/name = "guest-pv"
        /vm/22124578-62b3-4435-afda-60203492de87/uuid = "22124578-62b3-4435-afda-60203492de87"
        /vm/22124578-62b3-4435-afda-60203492de87/image = ""
        /vm/22124578-62b3-4435-afda-60203492de87/image/ostype = "linux"
        /vm/22124578-62b3-4435-afda-60203492de87/image/kernel = "/guest/vmlinuz"
        /vm/22124578-62b3-4435-afda-60203492de87/image/ramdisk = "/guest/guest.cpio.gz"
        /vm/22124578-62b3-4435-afda-60203492de87/image/cmdline = "console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pv"
        /vm/22124578-62b3-4435-afda-60203492de87/start_time = "1795827871.37"
        """

    /// As libxl stores it: the JSON text and its NUL.
    static func stored(_ json: String) -> [UInt8] { Array(json.utf8) + [0] }

    /// `xenstore-ls -f` lines under `prefix` as relative path → value.
    static func nodes(_ listing: String, under prefix: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in listing.split(separator: "\n") {
            guard let eq = line.range(of: " = \"") else { continue }
            let path = String(line[..<eq.lowerBound])
            guard path.hasPrefix(prefix + "/") else { continue }
            out[String(path.dropFirst(prefix.count + 1))] = String(line[eq.upperBound...].dropLast())
        }
        return out
    }
}

@Suite struct DomainBuildConfigTests {
    @Test func readsLibxlsRecordOfAPVAndAPVHBuild() throws {
        let pv = try DomainBuildConfig(libxlJSON: Xen417Capture.stored(Xen417Capture.pvJSON), origin: "pv.libxl-json")
        #expect(pv.type == "pv" && pv.name == "guest-pv" && pv.uuid == "22124578-62b3-4435-afda-60203492de87")
        #expect(pv.kernel == "/guest/vmlinuz" && pv.ramdisk == "/guest/guest.cpio.gz")
        #expect(pv.cmdline == "console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pv")
        #expect(pv.bootloader == nil && pv.source == .libxlJSON)
        #expect(pv.bytes == Xen417Capture.stored(Xen417Capture.pvJSON), "the domainConfig record hashes the file as stored")
        let pvh = try DomainBuildConfig(libxlJSON: Xen417Capture.stored(Xen417Capture.pvhJSON), origin: "pvh.libxl-json")
        #expect(pvh.type == "pvh" && pvh.cmdline == "console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pvh" && pvh.kernel == "/guest/vmlinuz")
    }

    @Test func readsWhatXlListLongPrints() throws {
        let listed = "[{\"domid\": 1, \"config\": " + Xen417Capture.pvJSON + "}]"
        // `xl list -l` prints an array; one element of it is what a caller hands over.
        let object = "{\"domid\": 1, \"config\": " + Xen417Capture.pvJSON + "}"
        #expect(throws: DomainConfigError.self) { try DomainBuildConfig(libxlJSON: Array(listed.utf8), origin: "xl list -l") }
        let c = try DomainBuildConfig(libxlJSON: Array(object.utf8), origin: "xl list -l")
        #expect(c.kernel == "/guest/vmlinuz" && c.name == "guest-pv")
    }

    @Test func readsTheKernelWhereXenBefore410KeptIt() throws {
        let old = #"{"c_info": {"type": "pv", "name": "old"}, "b_info": {"type.pv": {"kernel": "/boot/k", "ramdisk": "/boot/i", "cmdline": "ro"}}}"#
        let c = try DomainBuildConfig(libxlJSON: Array(old.utf8), origin: "old")
        #expect(c.kernel == "/boot/k" && c.ramdisk == "/boot/i" && c.cmdline == "ro")
    }

    @Test func readsLibxlsXenstoreNodesOfAPVGuest() {
        let vm = "/vm/22124578-62b3-4435-afda-60203492de87"
        let c = DomainBuildConfig(xenstoreVM: Xen417Capture.nodes(Xen417Capture.pvVM, under: vm), origin: vm)
        #expect(c.type == "pv" && c.kernel == "/guest/vmlinuz" && c.ramdisk == "/guest/guest.cpio.gz")
        #expect(c.cmdline == "console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pv" && c.bytes == nil && c.source == .xenstore)
    }

    @Test(arguments: [
        ("", "not JSON"),
        ("[1]", "the top level is not an object"),
        (#"{"b_info": {}}"#, "c_info: missing or not an object"),
        (#"{"c_info": {}, "b_info": 3}"#, "b_info: missing or not an object"),
        (#"{"c_info": {"name": 7}, "b_info": {}}"#, "c_info.name: not a string"),
        (#"{"c_info": {}, "b_info": {"kernel": ["/a"]}}"#, "b_info.kernel: not a string"),
        (#"{"config": "x"}"#, "config: not an object"),
    ]) func refusesWhatIsNotALibxlConfigNamingTheField(json: String, reason: String) {
        let e = #expect(throws: DomainConfigError.self) { try DomainBuildConfig(libxlJSON: Array(json.utf8), origin: "f.libxl-json") }
        #expect(e?.description.hasPrefix("f.libxl-json: \(reason)") == true, "\(String(describing: e))")
    }

    @Test func loadTimeMeasurementsHashTheFilesTheCommandLineAndTheConfig() throws {
        var c = try DomainBuildConfig(libxlJSON: Xen417Capture.stored(Xen417Capture.pvJSON), origin: "/var/lib/xen/x.libxl-json")
        c.ramdisk = "/nonexistent/initrd"
        let domain = Measurement.Domain(uuid: Array(repeating: 7, count: 16), id: 3, name: "guest-pv")
        let (ms, notes) = c.loadTimeMeasurements(domain: domain, attributes: [("incarnation", "d3@1")]) { path in
            path == "/guest/vmlinuz" ? .success((Array(repeating: 0xab, count: 32), 1234))
                : .failure(MeasurementLogError(.notFound, "\(path): no such file"))
        }
        #expect(ms.map(\.kind) == [.kernelImage, .commandLine, .domainConfig])
        #expect(ms[0].subject == "/guest/vmlinuz" && ms[0].contentDigest?.bytes == Array(repeating: 0xab, count: 32))
        #expect(ms[1].contentDigest?.bytes == Array(SHA256.hash(data: Array("console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pv".utf8))))
        #expect(ms[1].attributes.contains(.init("cmdline", "console=hvc0 rdinit=/init loglevel=4 vmvname=guest-pv")))
        #expect(ms[2].contentDigest?.bytes == Array(SHA256.hash(data: Xen417Capture.stored(Xen417Capture.pvJSON))))
        #expect(notes.map(\.kind) == ["initrd"] && notes.first?.note == "not measured: /nonexistent/initrd: no such file")
        c.bootloader = "pygrub"
        let (withBootloader, bootNotes) = c.loadTimeMeasurements(domain: domain, attributes: []) { _ in .success(([], 0)) }
        #expect(withBootloader.map(\.kind) == [.commandLine, .domainConfig], "a bootloader's kernel is no dom0 file")
        #expect(bootNotes.map(\.kind) == ["kernelImage", "initrd"] && bootNotes.allSatisfy { $0.note?.hasPrefix("chosen by the bootloader pygrub") == true })
    }
}

/// The measurer's incarnation and change logic through the real engine, log and swtpm, with a
/// QEMU memory dump (the fuzz seed with a tiny kernel) as the guest's memory.
@Suite struct GuestMeasurerTests {
    static let seed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/Seeds/MemoryDumps/qemu-tiny-kernel.elf").path

    /// A copy of the seed dump, with `edit` applied to the guest-physical bytes at `physical`.
    static func dump(in dir: String, _ name: String, patch: (physical: UInt64, bytes: [UInt8])? = nil) throws -> any GuestMemorySource {
        var file = try #require(FileManager.default.contents(atPath: seed).map { Array($0) })
        if let patch {
            let offset = try #require(fileOffset(of: patch.physical, in: file), "no PT_LOAD holds 0x\(String(patch.physical, radix: 16))")
            file.replaceSubrange(offset..<(offset + patch.bytes.count), with: patch.bytes)
        }
        let path = dir + "/" + name
        #expect(FileManager.default.createFile(atPath: path, contents: Data(file)))
        return try MemoryDump.open(path: path)
    }

    /// The file offset of a guest-physical address in an ELF64 core (its PT_LOAD headers).
    static func fileOffset(of physical: UInt64, in f: [UInt8]) -> Int? {
        func le(_ o: Int, _ n: Int) -> UInt64 { (0..<n).reduce(0) { $0 | UInt64(f[o + $1]) << (8 * UInt64($1)) } }
        let phoff = Int(le(0x20, 8)), size = Int(le(0x36, 2)), count = Int(le(0x38, 2))
        for i in 0..<count {
            let h = phoff + i * size
            guard le(h, 4) == 1 else { continue }  // PT_LOAD
            let offset = le(h + 8, 8), paddr = le(h + 0x18, 8), filesz = le(h + 0x20, 8)
            if physical >= paddr && physical < paddr + filesz { return Int(offset + physical - paddr) }
        }
        return nil
    }

    static let textPhysical: UInt64 = 0x8000

    static func identity(startTime: String = "1795827871.37", domid: UInt32 = 5) throws -> GuestIdentity {
        GuestIdentity(domainID: domid, uuid: try Measurement.Domain.parse(uuid: "22124578-62b3-4435-afda-60203492de87"),
                      name: "guest-pv", type: "pv", startTime: startTime)
    }

    @Test func recordsAnIncarnationOnceAndThenOnlyWhatChanged() async throws {
        let rig = try await MeasurementEngineTests.Rig()
        let engine = try await rig.engine()
        let measurer = GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"))
        let dir = rig.state.path
        let kernelFile = dir + "/vmlinuz", initrdFile = dir + "/initrd"
        #expect(FileManager.default.createFile(atPath: kernelFile, contents: Data("a kernel image".utf8)))
        #expect(FileManager.default.createFile(atPath: initrdFile, contents: Data("an initrd".utf8)))
        var config = try DomainBuildConfig(libxlJSON: Xen417Capture.stored(Xen417Capture.pvJSON), origin: "/var/lib/xen/userdata-d.5.x.libxl-json")
        config.kernel = kernelFile
        config.ramdisk = initrdFile
        let id = try Self.identity()

        // First sight: the four load-time facts, then text and rodata.
        let first = try await measurer.measure(id, source: try Self.dump(in: dir, "a.elf"), config: .success(config))
        #expect(first.newIncarnation && first.error == nil && first.kernelRelease == "6.1.0-1-amd64")
        #expect(first.recorded == [1, 2, 3, 4, 5, 6], "epoch start is seq 0")
        #expect(first.loadTime.map(\.kind) == ["kernelImage", "initrd", "commandLine", "domainConfig"])
        #expect(first.loadTime.first?.sha256 == Hex.encode(Array(SHA256.hash(data: Array("a kernel image".utf8)))))
        #expect(first.regions.map(\.subject) == ["kernel.text", "kernel.rodata"] && first.regions.map(\.seq) == [5, 6])

        // Same memory, same incarnation: nothing new in the log.
        let second = try await measurer.measure(id, source: try Self.dump(in: dir, "b.elf"), config: nil)
        #expect(second.recorded.isEmpty && !second.newIncarnation)
        #expect(second.regions.map(\.root) == first.regions.map(\.root) && second.regions.allSatisfy { $0.seq == nil })

        // One byte of text changed: exactly one record, for text, naming page 0.
        let poked = try await measurer.measure(id, source: try Self.dump(in: dir, "c.elf", patch: (Self.textPhysical + 0x10, [0xcc])), config: nil)
        #expect(poked.recorded == [7])
        #expect(poked.regions[0].seq == 7 && poked.regions[0].changedPages == [0] && poked.regions[0].root != first.regions[0].root)
        #expect(poked.regions[1].seq == nil && poked.regions[1].root == first.regions[1].root)

        let status = await measurer.status()
        #expect(status.count == 1 && status.first?.records == 7 && status.first?.incarnation == "d5@1795827871.37")
        #expect(status.first?.roots == ["kernel.text": poked.regions[0].root, "kernel.rodata": first.regions[1].root])
        await engine.close()
        await rig.tpm.close()

        // The log holds exactly those records, and replays to the PCR.
        let log = try rig.reader.read(epoch: 0)
        #expect(log.records.map(\.record.kind) == [.epochStart, .kernelImage, .initrd, .commandLine, .domainConfig,
                                                   .memoryRegion, .memoryRegion, .memoryRegion])
        let last = try #require(log.records.last?.record)
        #expect(last.subject == "kernel.text" && last.domain?.uuidString == "22124578-62b3-4435-afda-60203492de87" && last.domain?.id == 5)
        #expect(last.attributes.contains(.init("pages.changed", "0")) && last.attributes.contains(.init("incarnation", "d5@1795827871.37")))
        #expect(Hex.encode(last.region?.merkleRoot.bytes ?? []) == poked.regions[0].root)
        #expect(log.replayed == (try await Fixture.readPCR(rig.simulator.tcti)))
        rig.simulator.stop()
    }

    @Test func aNewIncarnationIsRecordedAgainAndAForgottenDomainLeavesTheStatus() async throws {
        let rig = try await MeasurementEngineTests.Rig()
        let engine = try await rig.engine()
        let measurer = GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"))
        let dir = rig.state.path
        let a = try await measurer.measure(try Self.identity(), source: try Self.dump(in: dir, "a.elf"), config: nil)
        #expect(a.recorded == [1, 2] && a.loadTime.map(\.note) == ["no libxl record of the build readable here (not dom0, or not built by libxl)"])
        // `xl destroy` + `xl create` of a config with a fixed UUID: same memory, new start_time.
        let b = try await measurer.measure(try Self.identity(startTime: "1795827999.01"), source: try Self.dump(in: dir, "b.elf"), config: nil)
        #expect(b.newIncarnation && b.recorded == [3, 4] && b.regions.map(\.root) == a.regions.map(\.root))
        #expect(await measurer.status().map(\.incarnation) == ["d5@1795827999.01"])
        await measurer.forget(domainID: 5)
        #expect(await measurer.status().isEmpty)
        let c = try await measurer.measure(try Self.identity(startTime: "1795827999.01"), source: try Self.dump(in: dir, "c.elf"), config: nil)
        #expect(c.newIncarnation && c.recorded == [5, 6], "after forget, the same incarnation is new again")
        await engine.close()
        await rig.stop()
    }

    /// A guest that started less than the settle time ago gets its load-time facts at once and
    /// its kernel regions once it has settled (Linux patches its text while it boots).
    @Test func aKernelStillBootingIsMeasuredOnceItHasSettled() async throws {
        let rig = try await MeasurementEngineTests.Rig()
        let engine = try await rig.engine()
        let measurer = GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"), settleSeconds: 30)
        let dir = rig.state.path
        let now = Date().timeIntervalSince1970
        let young = try Self.identity(startTime: String(format: "%.2f", now - 5))
        let early = try await measurer.measure(young, source: try Self.dump(in: dir, "a.elf"), config: nil)
        let due = try #require(early.settlingUntil)
        #expect(abs(Double(due) / 1000 - (now + 25)) < 2, "due 30 s after the start")
        #expect(early.recorded.isEmpty && early.regions.isEmpty && early.error == nil)
        // One that started long ago is recorded when two passes agree.
        let old = try await measurer.measure(try Self.identity(domid: 6), source: try Self.dump(in: dir, "b.elf"), config: nil)
        #expect(old.settlingUntil != nil && old.recorded.isEmpty && old.kernelRelease == "6.1.0-1-amd64")
        let agreed = try await measurer.measure(try Self.identity(domid: 6), source: try Self.dump(in: dir, "b2.elf"), config: nil)
        #expect(agreed.settlingUntil == nil && agreed.recorded == [1, 2])
        // Text still changing between passes is not recorded until it stops.
        let patch = (Self.textPhysical + 0x40, [UInt8(0x90)])
        _ = try await measurer.measure(try Self.identity(domid: 8), source: try Self.dump(in: dir, "p1.elf"), config: nil)
        let moving = try await measurer.measure(try Self.identity(domid: 8), source: try Self.dump(in: dir, "p2.elf", patch: patch), config: nil)
        #expect(moving.settlingUntil != nil && moving.recorded.isEmpty)
        let still = try await measurer.measure(try Self.identity(domid: 8), source: try Self.dump(in: dir, "p3.elf", patch: patch), config: nil)
        #expect(still.recorded == [3, 4])
        let log = try rig.reader.read(epoch: 0)
        #expect(log.records.filter { $0.record.kind == .memoryRegion }.count == 4, "no root of a kernel still changing is in the log")
        // Without libxl's start_time, the settle time counts from when the VMV first saw it.
        var unknown = try Self.identity(domid: 7)
        unknown.startTime = nil
        let first = try await measurer.measure(unknown, source: try Self.dump(in: dir, "c.elf"), config: nil)
        #expect(first.settlingUntil.map { Double($0) / 1000 - now } .map { $0 > 28 && $0 < 32 } == true)
        await engine.close()
        await rig.stop()
    }

    /// A VMV domain may read a guest's xenstore name only once dom0 has granted it, after the
    /// first pass: the regions are then recorded again under the name, once.
    @Test func aNameReadableOnlyLaterIsRecordedOnce() async throws {
        let rig = try await MeasurementEngineTests.Rig()
        let engine = try await rig.engine()
        let measurer = GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"))
        let dir = rig.state.path
        var nameless = try Self.identity()
        nameless.name = nil
        let a = try await measurer.measure(nameless, source: try Self.dump(in: dir, "a.elf"), config: nil)
        #expect(a.recorded == [1, 2] && a.name == nil)
        let b = try await measurer.measure(nameless, source: try Self.dump(in: dir, "b.elf"), config: nil)
        #expect(b.recorded.isEmpty)
        let named = try await measurer.measure(try Self.identity(), source: try Self.dump(in: dir, "c.elf"), config: nil)
        #expect(named.recorded == [3, 4] && !named.newIncarnation && named.regions.map(\.root) == a.regions.map(\.root))
        #expect(await measurer.status().first?.name == "guest-pv")
        let again = try await measurer.measure(try Self.identity(), source: try Self.dump(in: dir, "d.elf"), config: nil)
        #expect(again.recorded.isEmpty, "the name is recorded once")
        await engine.close()
        let log = try rig.reader.read(epoch: 0)
        #expect(log.records.map { $0.record.domain?.name } == [nil, nil, nil, "guest-pv", "guest-pv"])
        await rig.stop()
    }

    @Test func aRestartedVMVRecordsOnlyWhatTheLogDoesNotHold() async throws {
        let rig = try await MeasurementEngineTests.Rig()
        let dir = rig.state.path
        var engine = try await rig.engine()
        let first = try await GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"))
            .measure(try Self.identity(), source: try Self.dump(in: dir, "a.elf"), config: nil)
        #expect(first.recorded == [1, 2])
        await engine.close()

        // Same epoch, a new process: the log says what this incarnation has; nothing new.
        engine = try await rig.engine()
        var measurer = GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"))
        let again = try await measurer.measure(try Self.identity(), source: try Self.dump(in: dir, "b.elf"), config: nil)
        #expect(again.recorded.isEmpty && !again.newIncarnation && again.regions.allSatisfy { $0.seq == nil })
        #expect(await measurer.status().first?.roots == ["kernel.text": first.regions[0].root, "kernel.rodata": first.regions[1].root])
        // A change is still one record (the log keeps roots, not pages: no page named).
        let poked = try await measurer.measure(try Self.identity(), source: try Self.dump(in: dir, "c.elf", patch: (Self.textPhysical, [0x90])), config: nil)
        #expect(poked.recorded == [3] && poked.regions[0].seq == 3 && poked.regions[0].changedPages.isEmpty)
        // Another incarnation on the same domid is not taken for the logged one.
        let other = try await measurer.measure(try Self.identity(startTime: "1795828000.00"), source: try Self.dump(in: dir, "d.elf"), config: nil)
        #expect(other.newIncarnation && other.recorded == [4, 5])
        await engine.close()

        // A new epoch (a TPM reset): its log holds nothing of any guest, so everything again.
        await rig.release()
        rig.simulator.kill()
        let restarted = try rig.simulator.restart()
        defer { restarted.stop() }
        rig.tpm = try await TPM.open(restarted.tcti)
        engine = try await rig.engine()
        measurer = GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"))
        let reset = try await measurer.measure(try Self.identity(startTime: "1795828000.00"), source: try Self.dump(in: dir, "e.elf"), config: nil)
        #expect(reset.epoch == 1 && reset.recorded == [1, 2])
        await engine.close()
        await rig.tpm.close()
    }

    @Test func aGuestWhoseKernelCannotBeFoundRecordsNothingAndSaysWhy() async throws {
        let rig = try await MeasurementEngineTests.Rig()
        let engine = try await rig.engine()
        let measurer = GuestMeasurer(engine: engine, xen: nil, logger: Logger(label: "test"))
        let clean = try Self.dump(in: rig.state.path, "a.elf")
        // Where the seed's banner is: overwrite "Linux version" there.
        let rodata = try clean.read(physical: 0x9000, count: 4096)
        let at = try #require((0..<(rodata.count - 13)).first { Array(rodata[$0..<($0 + 13)]) == Array("Linux version".utf8) })
        let broken = try Self.dump(in: rig.state.path, "b.elf", patch: (0x9000 + UInt64(at), Array("Xinux version".utf8)))
        let e = await #expect(throws: GuestMeasurementError.self) {
            try await measurer.measure(try Self.identity(), source: broken, config: nil)
        }
        #expect(e?.code == .kernelNotFound && e?.reason.contains("d5@1795827871.37 (guest-pv)") == true, "\(String(describing: e))")
        #expect(await measurer.status().first?.lastError?.code == .kernelNotFound)
        #expect(await engine.status().records == 1, "only the epoch start")
        await engine.close()
        await rig.stop()
    }
}
