import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Starting the swtpm tools: posix_spawn, so it is safe in a multithreaded process (no fork
/// followed by arbitrary Swift code), and FoundationEssentials' lack of `Process` is no loss.
enum Subprocess {
    /// glibc's POSIX_SPAWN_SETSID (glibc ≥ 2.26), which Swift does not see without _GNU_SOURCE.
    private static let spawnSetsid: Int16 = 0x80

    /// The executable `name` on PATH, else in the usual system directories.
    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin"]
        for directory in directories where !directory.isEmpty {
            let candidate = directory + "/" + name
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs `path` to completion; its stdout and stderr together, and its exit status.
    static func run(_ path: String, _ arguments: [String], operation: String) throws(TPMError) -> (status: Int32, output: String) {
        // A socket pair rather than a pipe: it can be made close-on-exec atomically (pipe2 is
        // not visible to Swift), so a process spawned meanwhile by another thread cannot
        // inherit the write end and hold our read open.
        var pipeFDs: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pipeFDs) == 0 else {
            throw TPMError(.simulator, operation: operation, reason: "socketpair: \(errnoText())")
        }
        let pid: pid_t
        do {
            pid = try spawn(path, arguments, mapping: [(pipeFDs[1], 1), (pipeFDs[1], 2)], outputFile: nil,
                            newSession: false, operation: operation)
        } catch {
            close(pipeFDs[0]); close(pipeFDs[1])
            throw error
        }
        close(pipeFDs[1])
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
            if n > 0 { output += buffer[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(pipeFDs[0])
        let status = waitForExit(pid)
        return (status, String(decoding: output, as: UTF8.self))
    }

    /// Starts `path` without waiting. `mapping` makes the child's fd `to` a copy of our fd
    /// `from` (for passing listening sockets); stdout and stderr go to `outputFile` (appended)
    /// unless mapped; a new session detaches the child from our terminal and process group.
    static func spawn(
        _ path: String, _ arguments: [String], mapping: [(from: Int32, to: Int32)],
        outputFile: String?, newSession: Bool, operation: String
    ) throws(TPMError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let devNull = "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 0, devNull, O_RDONLY, 0)
        if let outputFile {
            posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_APPEND, 0o640)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        for (from, to) in mapping {
            posix_spawn_file_actions_adddup2(&actions, from, to)
        }
        // Nothing else is inherited. tpm2-tss opens its TCTI sockets without close-on-exec: a
        // swtpm started while another thread has a command in flight would keep that socket,
        // and the other swtpm (which serves one connection at a time) would never accept the
        // next one.
        closeInheritedDescriptors(&actions, from: 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The spawning thread may block signals (Swift's and Dispatch's threads do), and the
        // child inherits that mask: without this, swtpm would ignore SIGTERM.
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newSession { flags |= spawnSetsid }
        posix_spawnattr_setflags(&attributes, flags)

        let argv = ([path] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv + [nil]
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, &cArgv, environ)
        guard rc == 0 else {
            throw TPMError(.simulator, operation: operation, reason: "cannot start \(path): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    /// glibc ≥ 2.34 has posix_spawn_file_actions_addclosefrom_np, which Swift does not see
    /// without _GNU_SOURCE; looked up at run time. Without it, the descriptors open now are
    /// listed from /proc/self/fd (glibc ignores a close action on one that closes meanwhile).
    private static let closeFrom: CloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            return nil
        }
        return unsafeBitCast(symbol, to: CloseFrom.self)
    }()

    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t, from lowest: Int32) {
        if let closeFrom {
            _ = closeFrom(&actions, lowest)
            return
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap({ Int32($0) }) where fd >= lowest {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
    }

    /// Waits for a child; its exit status, or 128 + signal.
    @discardableResult
    static func waitForExit(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 {
            if errno != EINTR { return -1 }
        }
        return exitCode(status)
    }

    /// The exit status if the child has exited (and reaps it), else nil.
    static func exitStatusIfExited(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        guard rc == pid else { return nil }
        return exitCode(status)
    }

    private static func exitCode(_ status: Int32) -> Int32 {
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
