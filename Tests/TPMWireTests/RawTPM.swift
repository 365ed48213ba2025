import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import TPMWire

/// A swtpm driven with raw TPM 2.0 commands and its control channel, for what tpm2-tss cannot
/// do from outside: its swtpm TCTI sets locality 0 whenever it connects, so tpm2-tools can
/// neither start the TPM at locality 3 nor extend PCRs 17–22 (locality 2), and it has no way
/// to run an H-CRTM sequence. Here the control channel sets the locality (CMD_SET_LOCALITY) and
/// runs _TPM_Hash_Start/Data/End; TPM2_Startup, TPM2_PCR_Extend and TPM2_PCR_Read are written
/// by hand (TPM 2.0 Library Part 3).
final class RawTPM {
    struct Failure: Error, CustomStringConvertible { let description: String }

    private let port: Int
    private var data: Int32 = -1

    /// `port` is swtpm's server port; its control channel is on `port + 1`.
    init(port: Int) {
        self.port = port
    }

    deinit { disconnect() }

    // swtpm control channel commands (swtpm's ptm_*: big-endian command code, payload; result).
    private static let cmdInit: UInt32 = 0x02
    private static let cmdSetLocality: UInt32 = 0x05
    private static let cmdHashStart: UInt32 = 0x06
    private static let cmdHashData: UInt32 = 0x07
    private static let cmdHashEnd: UInt32 = 0x08

    /// _TPM_Init, then (optionally) an H-CRTM sequence over `hcrtmData`, then TPM2_Startup(CLEAR)
    /// at `locality`: what a platform does at power-on.
    func powerOn(startupLocality locality: UInt8, hcrtmData: [UInt8]? = nil) throws {
        disconnect()
        try control(Self.cmdInit, [0, 0, 0, 0])
        if let hcrtm = hcrtmData {
            try control(Self.cmdHashStart, [])
            var w = ByteWriter()
            w.write(UInt32(hcrtm.count))
            w.write(bytes: hcrtm)
            try control(Self.cmdHashData, w.bytes)
            try control(Self.cmdHashEnd, [])
        }
        try setLocality(locality)
        _ = try command(tag: 0x8001, code: 0x144, body: [0x00, 0x00])   // TPM2_Startup(TPM_SU_CLEAR)
    }

    func setLocality(_ locality: UInt8) throws {
        try control(Self.cmdSetLocality, [locality])
    }

    /// TPM2_PCR_Extend with a password session (empty auth), all digests at once.
    func extend(pcr: Int, digests: [TCGDigest]) throws {
        var w = ByteWriter()
        w.write(UInt32(pcr))
        w.write(UInt32(9))                                           // authorizationSize
        w.write(UInt32(0x4000_0009)); w.write(UInt16(0)); w.write(UInt8(0)); w.write(UInt16(0))
        w.write(UInt32(digests.count))
        for d in digests { w.write(d.algorithm.rawValue); w.write(bytes: d.bytes) }
        _ = try command(tag: 0x8002, code: 0x182, body: w.bytes)
    }

    /// TPM2_PCR_Read of one PCR in one bank.
    func read(pcr: Int, bank: TPMAlgorithm) throws -> [UInt8] {
        let selection = PCRSelection(banks: [.init(hash: bank, pcrs: [pcr])])
        var r = ByteReader(try command(tag: 0x8001, code: 0x17E, body: selection.wireBytes))
        _ = try r.readUInt32("pcrUpdateCounter")
        let returned = try PCRSelection(from: &r)
        guard returned.pcrsByBank == [bank: [pcr]] else {
            throw Failure(description: "TPM2_PCR_Read \(bank.name):\(pcr) returned \(returned); is the bank allocated?")
        }
        guard try r.readUInt32("TPML_DIGEST.count") == 1 else { throw Failure(description: "TPM2_PCR_Read: not one digest") }
        return try r.readSized("TPML_DIGEST.digests[0]")
    }

    // MARK: transport

    private func command(tag: UInt16, code: UInt32, body: [UInt8]) throws -> [UInt8] {
        if data < 0 { data = try Self.connect(port) }
        var w = ByteWriter()
        w.write(tag)
        w.write(UInt32(10 + body.count))
        w.write(code)
        w.write(bytes: body)
        try Self.send(data, w.bytes)
        var header = ByteReader(try Self.receive(data, 10))
        _ = try header.readUInt16("tag")
        let size = Int(try header.readUInt32("responseSize"))
        let rc = try header.readUInt32("responseCode")
        let rest = try Self.receive(data, max(size - 10, 0))
        guard rc == 0 else {
            throw Failure(description: "TPM command 0x\(String(code, radix: 16)) failed: rc 0x\(String(rc, radix: 16))")
        }
        return rest
    }

    private func control(_ code: UInt32, _ payload: [UInt8]) throws {
        let fd = try Self.connect(port + 1)
        defer { close(fd) }
        var w = ByteWriter()
        w.write(code)
        w.write(bytes: payload)
        try Self.send(fd, w.bytes)
        var r = ByteReader(try Self.receive(fd, 4))
        let result = try r.readUInt32("ptm result")
        guard result == 0 else {
            throw Failure(description: "swtpm control command \(code) failed: 0x\(String(result, radix: 16))")
        }
    }

    /// Closes the data connection (swtpm does not exit while a client holds one).
    func disconnect() {
        if data >= 0 { close(data) }
        data = -1
    }

    private static func connect(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard ok else {
            close(fd)
            throw Failure(description: "connect to 127.0.0.1:\(port): errno \(errno)")
        }
        return fd
    }

    private static func send(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            sent += n
        }
    }

    private static func receive(_ fd: Int32, _ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            guard n > 0 else { throw Failure(description: "recv: connection closed after \(got) of \(count) bytes") }
            got += n
        }
        return out
    }
}
