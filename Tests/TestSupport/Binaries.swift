import Foundation

/// The package's own executables, built beside the test bundle (`swift build --build-tests`
/// builds them).
public enum Binaries {
    public static func path(_ product: String) throws -> String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // the test bundle may be a directory (.xctest) holding the executable
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent(product).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        throw HarnessError("\(product) is not built next to the tests (run swift build --build-tests)")
    }

    /// Runs one of the package's executables.
    public static func run(_ product: String, _ arguments: [String]) throws -> Tools.Result {
        try Tools.run(try path(product), arguments)
    }
}
