import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Until the shared test harness (Tests/TestSupport) is on main: running programs and a private
// swtpm, in the same shape, so that switching to it is a matter of deleting this file.

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Tools {
    struct Result: Sendable {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// The absolute path of a program; throws if absent, so a test needing it fails, not skips.
    static func path(_ name: String) throws -> String {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
            + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        for d in dirs where FileManager.default.isExecutableFile(atPath: "\(d)/\(name)") { return "\(d)/\(name)" }
        throw HarnessError("\(name) is not installed (scripts/setup.sh installs it)")
    }

    /// Runs a program to completion, output through temporary files (no pipe to fill).
    static func run(_ executable: String, _ arguments: [String]) throws -> Result {
        let scratch = try TemporaryDirectory.make(prefix: "run")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let out = scratch.appendingPathComponent("out"), err = scratch.appendingPathComponent("err")
        guard FileManager.default.createFile(atPath: out.path, contents: nil),
              FileManager.default.createFile(atPath: err.path, contents: nil) else {
            throw HarnessError("cannot create output files in \(scratch.path)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let outHandle = try FileHandle(forWritingTo: out), errHandle = try FileHandle(forWritingTo: err)
        defer { try? outHandle.close(); try? errHandle.close() }
        p.standardOutput = outHandle
        p.standardError = errHandle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        // Lossy UTF-8: tpm2_eventlog prints event data as strings, valid UTF-8 or not.
        return Result(status: p.terminationStatus,
                      stdout: String(decoding: try Data(contentsOf: out), as: UTF8.self),
                      stderr: String(decoding: try Data(contentsOf: err), as: UTF8.self))
    }
}

enum TemporaryDirectory {
    static func make(prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A private swtpm on a free loopback port pair with a fresh state directory (all four banks
/// of a new libtpms TPM active); `stop()` or deinit kills it and removes the state.
final class Swtpm: @unchecked Sendable {
    let port: Int
    let stateDirectory: URL
    private let process: Process

    init() throws {
        let swtpm = try Tools.path("swtpm")
        stateDirectory = try TemporaryDirectory.make(prefix: "swtpm")
        var lastError = "no attempt"
        for _ in 0..<10 {
            let port = try Self.freePortPair()
            let p = Process()
            p.executableURL = URL(fileURLWithPath: swtpm)
            p.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(stateDirectory.path)",
                           "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                           "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1",
                           "--flags", "not-need-init,startup-clear"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            // Connected only once our own process listens: a port taken meanwhile makes it exit.
            for _ in 0..<100 where p.isRunning {
                if Self.canConnect(port), Self.canConnect(port + 1), p.isRunning {
                    self.port = port
                    self.process = p
                    return
                }
                usleep(20_000)
            }
            if p.isRunning { p.terminate() }
            p.waitUntilExit()
            lastError = "swtpm on port \(port) did not accept connections (exit \(p.terminationStatus))"
        }
        try? FileManager.default.removeItem(at: stateDirectory)
        throw HarnessError(lastError)
    }

    /// SIGTERM, then SIGKILL if swtpm is still there after two seconds (it waits for a client
    /// that keeps its connection open).
    func stop() {
        if process.isRunning {
            process.terminate()
            for _ in 0..<100 where process.isRunning { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: stateDirectory)
    }

    deinit { stop() }

    static func freePortPair() throws -> Int {
        for _ in 0..<100 {
            let p = Int.random(in: 20000..<60000)
            if canBind(p) && canBind(p + 1) { return p }
        }
        throw HarnessError("no free loopback port pair found")
    }

    private static func withSocket(_ port: Int, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    static func canBind(_ port: Int) -> Bool { withSocket(port) { bind($0, $1, $2) } }
    static func canConnect(_ port: Int) -> Bool { withSocket(port) { connect($0, $1, $2) } }
}
