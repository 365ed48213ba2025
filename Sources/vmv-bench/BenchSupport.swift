import ArgumentParser
import Foundation

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
    }

    /// Runs a program to completion with its output in temporary files (no pipe to fill).
    static func run(_ path: String, _ arguments: [String]) throws -> ToolRun {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vmv-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out"), err = dir.appendingPathComponent("err")
        guard FileManager.default.createFile(atPath: out.path, contents: nil),
              FileManager.default.createFile(atPath: err.path, contents: nil) else {
            throw ValidationError("cannot create output files in \(dir.path)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        try p.run()
        p.waitUntilExit()
        return ToolRun(status: p.terminationStatus,
                       stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                       stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
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
