import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The POSIX calls the log store is built on, each failing with a `MeasurementLogError` that
/// names the file and the system's reason. Durability is spelled out: `sync` is fsync(2) of a
/// file, `syncDirectory` of the directory that holds a new or renamed name.
enum LogFiles {
    static func error(_ what: String, _ path: String, _ code: Int32 = errno) -> MeasurementLogError {
        MeasurementLogError(.io, "\(path): cannot \(what): \(String(cString: strerror(code)))")
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws(MeasurementLogError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw error("open", path)
        }
    }

    /// Writes all of `bytes` at `offset` (pwrite, repeated over short writes and EINTR).
    static func write(_ fd: Int32, _ bytes: [UInt8], at offset: Int, _ path: String) throws(MeasurementLogError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                pwrite(fd, raw.baseAddress.map { $0 + done }, raw.count - done, off_t(offset + done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw error("write", path)
            }
            guard n > 0 else { throw MeasurementLogError(.io, "\(path): cannot write: the write made no progress") }
            done += n
        }
    }

    static func sync(_ fd: Int32, _ path: String) throws(MeasurementLogError) {
        while fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw error("fsync", path)
        }
    }

    /// fsync of a directory: makes the names created, renamed or removed in it durable.
    static func syncDirectory(_ path: String) throws(MeasurementLogError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try sync(fd, path)
    }

    static func truncate(_ fd: Int32, to length: Int, _ path: String) throws(MeasurementLogError) {
        while ftruncate(fd, off_t(length)) != 0 {
            if errno == EINTR { continue }
            throw error("truncate", path)
        }
    }

    static func size(_ fd: Int32, _ path: String) throws(MeasurementLogError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw error("stat", path) }
        return Int(st.st_size)
    }

    /// The whole file; nil when it does not exist.
    static func read(_ path: String) throws(MeasurementLogError) -> [UInt8]? {
        var fd: Int32
        repeat { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw error("open", path)
        }
        defer { close(fd) }
        return try read(fd, path)
    }

    /// The file from `offset` to its end as it is now (a reader of a file being appended).
    static func read(_ fd: Int32, _ path: String, from offset: Int = 0) throws(MeasurementLogError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var at = offset
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(at)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw error("read", path)
            }
            if n == 0 { return out }
            out += chunk[0..<n]
            at += n
        }
    }

    /// Replaces `path` with `bytes` so that a crash leaves either the old or the new file:
    /// a temporary file written and synced, renamed over, the directory synced.
    static func replace(_ path: String, with bytes: [UInt8]) throws(MeasurementLogError) {
        let temporary = path + ".tmp"
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_TRUNC)
        do {
            try write(fd, bytes, at: 0, temporary)
            try sync(fd, temporary)
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        guard Glibc.rename(temporary, path) == 0 else { throw error("rename \(temporary) to", path) }
        try syncDirectory(directory(of: path))
    }

    static func makeDirectory(_ path: String) throws(MeasurementLogError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw MeasurementLogError(.io, "\(path): cannot create the directory: \(error.localizedDescription)")
        }
    }

    static func list(_ path: String) throws(MeasurementLogError) -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            if !FileManager.default.fileExists(atPath: path) { return [] }
            throw MeasurementLogError(.io, "\(path): cannot list: \(error.localizedDescription)")
        }
    }

    static func removeTree(_ path: String) throws(MeasurementLogError) {
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw MeasurementLogError(.io, "\(path): cannot remove: \(error.localizedDescription)")
        }
    }

    static func rename(_ from: String, _ to: String) throws(MeasurementLogError) {
        guard Glibc.rename(from, to) == 0 else { throw error("rename to \(to)", from) }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }
}

/// The state directory's writer lock: an open-file-description lock (F_OFD_SETLK) on
/// `<state>/lock`, held for as long as the store is open and dropped by the kernel when the
/// process dies, so a crash never leaves a stale lock. The file holds the holder's pid, for
/// messages only.
final class StateLock: @unchecked Sendable {
    private static let getLock: Int32 = 36   // F_OFD_GETLK
    private static let setLock: Int32 = 37   // F_OFD_SETLK

    let path: String
    private var fd: Int32

    init(_ path: String) throws(MeasurementLogError) {
        self.path = path
        fd = try LogFiles.open(path, O_RDWR | O_CREAT)
        var lock = Self.wholeFile(F_WRLCK)
        guard fcntl(fd, Self.setLock, &lock) == 0 else {
            let code = errno
            close(fd)
            if code == EAGAIN || code == EACCES {
                let holder = Self.holder(path).map { "pid \($0)" } ?? "another process"
                throw MeasurementLogError(.locked, "\(path): \(holder) is appending to this measurement log; one VMV per state directory")
            }
            throw LogFiles.error("lock", path, code)
        }
        let pid = Array("\(getpid())\n".utf8)
        try? LogFiles.truncate(fd, to: 0, path)
        try? LogFiles.write(fd, pid, at: 0, path)
    }

    deinit { release() }

    func release() {
        guard fd >= 0 else { return }
        close(fd)   // closing the only descriptor of the description releases the lock
        fd = -1
    }

    /// The pid written by the process that holds the lock, or nil when nobody holds it.
    static func holder(_ path: String) -> Int32? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var probe = wholeFile(F_WRLCK)
        guard fcntl(fd, getLock, &probe) == 0, probe.l_type != Int16(F_UNLCK) else { return nil }
        let text = (try? LogFiles.read(fd, path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return Int32(text.filter(\.isNumber)) ?? -1
    }

    private static func wholeFile(_ type: Int32) -> flock {
        var lock = flock()
        lock.l_type = Int16(type)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = 0
        lock.l_len = 0
        return lock
    }
}
