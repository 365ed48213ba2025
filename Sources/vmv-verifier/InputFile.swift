import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the files named on the command line, with an error that says which file and why.
enum InputFile {
    struct Error: Swift.Error, CustomStringConvertible {
        let description: String
    }

    /// Refuses anything larger: no evidence file comes near it, and a mistaken path
    /// (a disk image, /dev/zero) should fail fast instead of filling memory.
    static let maxSize = 256 << 20

    static func bytes(_ path: String) throws(Error) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Error(description: "\(path): cannot open: \(errnoText())") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Error(description: "\(path): cannot read: \(errnoText())")
            }
            if n == 0 { return bytes }
            guard bytes.count + n <= maxSize else {
                throw Error(description: "\(path): larger than \(maxSize >> 20) MiB, not an evidence file")
            }
            bytes += chunk[0..<n]
        }
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

/// Ends a command for unreadable or malformed input: the message on stderr, exit status 2
/// (1 is kept for "judged and rejected").
func malformedInput(_ message: String) -> ExitCode {
    var line = "vmv-verifier: " + message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    return ExitCode(2)
}
