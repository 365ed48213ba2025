#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file mapped read-only into memory. Dumps are as large as the guest's memory, so they are
/// mapped, never read whole; pages are faulted in as the page walk and the hashing touch them.
///
/// The file must not shrink while it is mapped (a page beyond the new end would fault): dumps
/// are written once and then analysed.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    private let base: UnsafeRawPointer?
    /// True for `init(bytes:name:)`: the memory is an allocation, not a mapping.
    private let ownsCopy: Bool

    public init(path: String) throws(GuestMemoryError) {
        self.path = path
        ownsCopy = false
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw GuestMemoryError(.unavailable, "\(path): cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw GuestMemoryError(.unavailable, "\(path): cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw GuestMemoryError(.unavailable, "\(path): not a regular file")
        }
        size = Int(st.st_size)
        if size == 0 {
            base = nil
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw GuestMemoryError(.unavailable, "\(path): cannot map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    /// Bytes already in memory, read through the same interface (fuzzing, tests): copied into
    /// memory this object owns.
    public init(bytes: [UInt8], name: String) {
        path = name
        size = bytes.count
        ownsCopy = true
        if bytes.isEmpty {
            base = nil
            return
        }
        let p = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 4096)
        bytes.withUnsafeBytes { if let src = $0.baseAddress { p.copyMemory(from: src, byteCount: bytes.count) } }
        base = UnsafeRawPointer(p)
    }

    deinit {
        guard let base else { return }
        if ownsCopy { UnsafeMutableRawPointer(mutating: base).deallocate() }
        else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// The bytes `[offset, offset+count)`, or nil when any of them lies outside the file.
    public func bytes(at offset: UInt64, count: UInt64) -> UnsafeRawBufferPointer? {
        guard let base else { return count == 0 && offset == 0 ? UnsafeRawBufferPointer(start: nil, count: 0) : nil }
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= UInt64(size) else { return nil }
        return UnsafeRawBufferPointer(start: base + Int(offset), count: Int(count))
    }

    /// A copy of `[offset, offset+count)`, or nil when it lies outside the file.
    public func copy(at offset: UInt64, count: UInt64) -> [UInt8]? {
        bytes(at: offset, count: count).map { Array($0) }
    }

    /// Tells the kernel that `[offset, offset+count)` will be read soon and in order.
    func willRead(at offset: UInt64, count: UInt64) {
        guard let base, let region = bytes(at: offset, count: count), count > 0 else { return }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let length = Int(offset + count - start)
        _ = madvise(UnsafeMutableRawPointer(mutating: base + Int(start)), length, MADV_WILLNEED)
        _ = region
    }
}
