import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Timing and reference-tool helpers shared by the benchmarks.
enum Bench {
    /// The fastest of `runs` timings of `body`, in seconds (the least disturbed by the other
    /// jobs on a shared machine), and the last result.
    static func best<R>(of runs: Int, _ body: () throws -> R) rethrows -> (seconds: Double, result: R) {
        var best = Double.infinity
        var last: R?
        for _ in 0..<max(runs, 1) {
            let start = ContinuousClock.now
            let r = try body()
            let elapsed = ContinuousClock.now - start
            best = min(best, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
            last = r
        }
        return (best, last!)
    }

    struct ToolRun {
        let status: Int32
        let stdout: String
        let stderr: String
        /// User + system CPU time of the child: unlike wall time, not inflated by other jobs.
        var cpuSeconds: Double = 0
    }

    /// CPU time this thread has used, in seconds.
    static func threadCPUTime() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Runs a program to completion with its output in temporary files (no pipe to fill).
    /// posix_spawn + wait4, not Foundation's Process: Process.waitUntilExit polls its run
    /// loop every 50 ms, which would round every tool run up to 50 ms and skew the ratios.
    static func run(_ path: String, _ arguments: [String]) throws -> ToolRun {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out"), err = dir.appendingPathComponent("err")
        let pid = try spawn(path, arguments, stdout: out.path, stderr: err.path)
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            guard errno == EINTR else { throw ValidationError("wait4 for \(path) failed") }
        }
        // WIFEXITED/WEXITSTATUS are macros Swift does not import
        let exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return ToolRun(status: exitStatus,
                       stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                       stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "",
                       cpuSeconds: Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                           + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6)
    }

    /// Starts a program with stdin from /dev/null and its output in files (the same file for
    /// both when `stderr` is nil); the child starts with no signal blocked, whatever thread
    /// spawns it.
    static func spawn(_ path: String, _ arguments: [String], stdout: String, stderr: String?) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if let stderr {
            posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard rc == 0 else { throw ValidationError("cannot start \(path): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// A program's absolute path, or an error saying it is missing.
    static func tool(_ name: String) throws -> String {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin"]
        guard let dir = dirs.first(where: { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }) else {
            throw ValidationError("\(name) is not installed (scripts/setup.sh installs it)")
        }
        return "\(dir)/\(name)"
    }

    static func format(_ value: Double, _ digits: Int = 2) -> String {
        String(format: "%.\(digits)f", value)
    }

    /// 1234567 → "1.23 M", 12345 → "12.3 k".
    static func si(_ value: Double) -> String {
        switch value {
        case 1e6...: format(value / 1e6) + " M"
        case 1e3...: format(value / 1e3, 1) + " k"
        default: format(value, 1) + " "
        }
    }
}
