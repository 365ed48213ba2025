import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL cluster from Debian's packages: `initdb` in a temporary directory,
/// the postmaster on a free loopback port, trust authentication for one database. Run as the
/// `postgres` user when the tests run as root (initdb refuses root). Stopped by `stop()`.
final class PostgresCluster: @unchecked Sendable {
    /// `VMV_PG_BIN`, or the newest major version Debian installed under /usr/lib/postgresql.
    static let binaries = ProcessInfo.processInfo.environment["VMV_PG_BIN"] ?? {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).compactMap(Int.init)
        return "/usr/lib/postgresql/\(versions.max().map(String.init) ?? "15")/bin"
    }()
    let directory: URL
    let port: Int
    let url: String
    private let asUser: String?
    private let postmaster = Process()

    init() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binaries + "/initdb") else {
            throw HarnessError("\(Self.binaries)/initdb is missing: scripts/setup.sh --fleet installs postgresql")
        }
        directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vmv-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        asUser = getuid() == 0 ? "postgres" : nil
        if let user = asUser {
            _ = try Tools.run(try Tools.path("chown"), [user, directory.path])
        }
        let p = try Swtpm.freePort()
        port = p
        url = "postgresql://vmv@127.0.0.1:\(p)/fleet"
        let data = directory.appendingPathComponent("data").path
        try run("initdb", ["-D", data, "-U", "vmv", "--auth=trust", "-E", "UTF8", "--no-sync"])
        // The postmaster runs in the foreground as this test's child (like swtpm): `pg_ctl start`
        // would leave a daemon holding Foundation's process-watching socket, and waiting for
        // pg_ctl would then never end.
        let arguments = [Self.binaries + "/postgres", "-D", data, "-p", String(p), "-k", directory.path,
                         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]
        let log = directory.appendingPathComponent("log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        if let user = asUser {
            postmaster.executableURL = URL(fileURLWithPath: try Tools.path("runuser"))
            postmaster.arguments = ["-u", user, "--"] + arguments
        } else {
            postmaster.executableURL = URL(fileURLWithPath: arguments[0])
            postmaster.arguments = Array(arguments.dropFirst())
        }
        postmaster.standardOutput = handle
        postmaster.standardError = handle
        postmaster.standardInput = FileHandle.nullDevice
        try postmaster.run()
        var ready = false
        for _ in 0..<600 where postmaster.isRunning {
            if (try? Tools.run(Self.binaries + "/pg_isready", ["-q", "-h", "127.0.0.1", "-p", String(p)]))?.status == 0 { ready = true; break }
            usleep(100_000)
        }
        guard ready else {
            stop()
            throw HarnessError("PostgreSQL did not accept connections within 60 s: \((try? String(contentsOf: log, encoding: .utf8))?.suffix(2000) ?? "")")
        }
        try run("createdb", ["-h", "127.0.0.1", "-p", String(p), "-U", "vmv", "fleet"])
    }

    private func run(_ tool: String, _ arguments: [String]) throws {
        let path = Self.binaries + "/" + tool
        let result: Tools.Result
        if let user = asUser {
            result = try Tools.run(try Tools.path("runuser"), ["-u", user, "--", path] + arguments, directory: directory)
        } else {
            result = try Tools.run(path, arguments, directory: directory)
        }
        guard result.status == 0 else {
            let log = (try? String(contentsOf: directory.appendingPathComponent("log"), encoding: .utf8)) ?? ""
            throw HarnessError("\(tool) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr) \(result.stdout)\n\(log.suffix(2000))")
        }
    }

    /// Fast shutdown (SIGINT to the postmaster, as `pg_ctl -m fast` sends), then the directory.
    func stop() {
        if postmaster.isRunning {
            _ = try? run("pg_ctl", ["-D", directory.appendingPathComponent("data").path, "-m", "fast", "-w", "-t", "30", "stop"])
            for _ in 0..<300 where postmaster.isRunning { usleep(100_000) }
            if postmaster.isRunning { postmaster.terminate() }
            postmaster.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }
}
