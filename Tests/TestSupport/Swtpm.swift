import Foundation
import Synchronization
import TPM
#if canImport(Glibc)
import Glibc
#endif

/// Errors of the test harness, with enough text to see what went wrong in a test log.
public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A private swtpm for tests: a fresh temporary state directory, a free pair of loopback
/// ports, the PCR banks the test asks for. `stop()` (or deinit) kills it and removes the state.
///
/// There is no resource manager in front of it: tpm2-tools leave transient objects loaded, so
/// `TPM2Tools.run` flushes them after every tool.
public final class Swtpm: @unchecked Sendable {
    public let port: Int
    public let stateDirectory: URL
    private let process: Process
    private let lock = NSLock()
    private var stopped = false

    /// The TCTI string for tpm2-tools (`TPM2TOOLS_TCTI`) and tpm2-tss.
    public var tcti: String { "swtpm:host=127.0.0.1,port=\(port)" }

    /// Starts swtpm with the given PCR banks active (swtpm_setup allocates them first).
    public init(pcrBanks: [String] = ["sha1", "sha256"]) throws {
        let swtpm = try Tools.path("swtpm")
        let setup = try Tools.path("swtpm_setup")
        stateDirectory = try TemporaryDirectory.make(prefix: "swtpm")
        let result = try Tools.run(setup, ["--tpm2", "--tpmstate", stateDirectory.path,
                                           "--pcr-banks", pcrBanks.joined(separator: ","), "--overwrite"])
        guard result.status == 0 else {
            throw HarnessError("swtpm_setup failed (\(result.status)): \(result.stderr)\(result.stdout)")
        }
        var lastError = "no attempt"
        for _ in 0..<10 {
            let port = try Self.freePortPair()
            let p = Process()
            p.executableURL = URL(fileURLWithPath: swtpm)
            p.arguments = ["socket", "--tpm2",
                           "--tpmstate", "dir=\(stateDirectory.path)",
                           "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                           "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1",
                           "--flags", "not-need-init,startup-clear"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            for _ in 0..<100 where p.isRunning {
                if Self.canConnect(port) {
                    self.port = port
                    self.process = p
                    return
                }
                usleep(20_000)
            }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            lastError = "swtpm on port \(port) did not accept connections (exit \(p.terminationStatus))"
        }
        try? FileManager.default.removeItem(at: stateDirectory)
        throw HarnessError(lastError)
    }

    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        // SIGKILL: a child spawned from a Swift concurrency thread inherits its blocked signal
        // mask, SIGTERM included, so terminate() would never end it.
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: stateDirectory)
    }

    deinit { stop() }

    /// A port p such that p and p + 1 are free on loopback (swtpm's server and control ports).
    static func freePortPair() throws -> Int { try freePort(consecutive: 2) }

    /// A free loopback port (`LoopbackPorts`: below the ephemeral range) with `consecutive - 1`
    /// free ones after it, none in `avoiding`.
    public static func freePort(consecutive: Int = 1, avoiding: Set<Int> = []) throws -> Int {
        guard let port = LoopbackPorts.free(count: consecutive, avoiding: avoiding) else {
            throw HarnessError("no \(consecutive) free consecutive loopback port(s) below the ephemeral range")
        }
        return port
    }

    static func withSocket(_ port: Int, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    static func canConnect(_ port: Int) -> Bool { withSocket(port) { connect($0, $1, $2) } }
}

/// tpm2-tools against one swtpm. Every call flushes transient objects afterwards
/// (`tpm2_flushcontext -t`), since nothing else would.
public struct TPM2Tools: Sendable {
    public let tcti: String
    /// Where relative file arguments live.
    public let directory: URL

    public init(tpm: Swtpm, directory: URL) {
        self.init(tcti: tpm.tcti, directory: directory)
    }

    /// For any TPM a TCTI string reaches (a `TPMSimulator` of the TPM module, say).
    public init(tcti: String, directory: URL) {
        self.tcti = tcti
        self.directory = directory
    }

    /// Runs `tool` with `arguments` in `directory`; throws with the tool's stderr unless it exits 0.
    @discardableResult
    public func run(_ tool: String, _ arguments: [String]) throws -> String {
        let result = try attempt(tool, arguments)
        guard result.status == 0 else {
            throw HarnessError("\(tool) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    /// Runs `tool` and returns its exit status and output whatever they are.
    public func attempt(_ tool: String, _ arguments: [String]) throws -> Tools.Result {
        let result = try Tools.run(try Tools.path(tool), arguments, directory: directory,
                                   environment: ["TPM2TOOLS_TCTI": tcti])
        if tool != "tpm2_flushcontext" && tool != "tpm2_checkquote" && tool != "tpm2_print" {
            _ = try Tools.run(try Tools.path("tpm2_flushcontext"), ["-t"], directory: directory,
                              environment: ["TPM2TOOLS_TCTI": tcti])
        }
        return result
    }

    public func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    public func read(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: url(name))) }

    public func write(_ name: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: url(name)) }
}

/// Running external programs from tests.
public enum Tools {
    public struct Result: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// The absolute path of a program on PATH (or in /usr/bin, /usr/sbin); throws if absent,
    /// so a test that needs it fails instead of skipping.
    public static func path(_ name: String) throws -> String {
        if name.hasPrefix("/") { return name }
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
            + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        for d in dirs where FileManager.default.isExecutableFile(atPath: "\(d)/\(name)") {
            return "\(d)/\(name)"
        }
        throw HarnessError("\(name) is not installed (scripts/setup.sh installs it)")
    }

    /// Runs a program to completion; output goes through temporary files so a chatty
    /// program cannot block on a full pipe.
    public static func run(_ executable: String, _ arguments: [String], directory: URL? = nil,
                           environment: [String: String] = [:], stdin: [UInt8]? = nil) throws -> Result {
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
        if let directory { p.currentDirectoryURL = directory }
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let outHandle = try FileHandle(forWritingTo: out), errHandle = try FileHandle(forWritingTo: err)
        defer { try? outHandle.close(); try? errHandle.close() }
        p.standardOutput = outHandle
        p.standardError = errHandle
        if let stdin {
            let input = scratch.appendingPathComponent("in")
            try Data(stdin).write(to: input)
            p.standardInput = try FileHandle(forReadingFrom: input)
        } else {
            p.standardInput = FileHandle.nullDevice
        }
        try p.run()
        p.waitUntilExit()
        // Lossy UTF-8, never "": tools print raw data as text (tpm2_eventlog prints event data).
        return Result(status: p.terminationStatus,
                      stdout: String(decoding: (try? Data(contentsOf: out)) ?? Data(), as: UTF8.self),
                      stderr: String(decoding: (try? Data(contentsOf: err)) ?? Data(), as: UTF8.self))
    }
}

/// Temporary directories under the system's temp dir, unique per call.
public enum TemporaryDirectory {
    /// A directory that is removed when the test process exits (for files that tests share
    /// or write in large numbers).
    public static func makeRemovedAtExit(prefix: String) throws -> URL {
        let url = try make(prefix: prefix)
        removedAtExit.withLock { dirs in
            if dirs.isEmpty { atexit { TemporaryDirectory.removeAll() } }
            dirs.append(url.path)
        }
        return url
    }

    private static let removedAtExit = Mutex<[String]>([])

    private static func removeAll() {
        removedAtExit.withLock { dirs in
            for d in dirs { try? FileManager.default.removeItem(atPath: d) }
        }
    }

    public static func make(prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
